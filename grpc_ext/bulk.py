"""Insert many new rows in one statement: ``COPY`` on PostgreSQL, ``bulk_create`` elsewhere.

``bulk_create`` on PostgreSQL compiles one multi-row ``INSERT`` with a
parameter per value: for 1,000 rows of seven columns the parameter handling
on both sides costs more than the rows themselves. ``COPY ... FROM STDIN``
streams the rows as text and is several times faster. It is used when the
keys are made in Python (a UUID default, not a sequence, since COPY returns
nothing) and every column has a type whose text form is plain; otherwise, and
on other databases, this is ``bulk_create``. Like ``bulk_create`` it sends no
signals and calls no ``save()``.
"""

from __future__ import annotations

import datetime
import decimal
import io
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, models, router

#: Field types whose values have a plain text form in COPY (relations take their target's type).
COPYABLE_TYPES = {
    "CharField",
    "TextField",
    "EmailField",
    "SlugField",
    "URLField",
    "UUIDField",
    "DateTimeField",
    "DateField",
    "BooleanField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
    "FloatField",
    "DecimalField",
}

# COPY's text format: backslash, newline, carriage return and tab are escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _datetime_text(value: datetime.datetime) -> str:
    if value.tzinfo is None and settings.USE_TZ:
        raise ValueError("naive datetime")  # let bulk_create apply Django's rules and warning
    return value.isoformat()


#: The COPY text of a value, by its exact type.
_FORMATTERS: dict[type, Callable[[Any], str]] = {
    str: lambda value: value.translate(_ESCAPES),
    bool: lambda value: "t" if value else "f",
    datetime.datetime: _datetime_text,
    uuid.UUID: str,
    int: str,
    float: repr,
    decimal.Decimal: str,
    datetime.date: str,
}


def copy_text(value) -> str:
    """Return ``value`` in COPY's text format (``\\N`` is NULL); ``ValueError`` for a type it has no form for."""
    if value is None:
        return "\\N"
    formatter = _FORMATTERS.get(type(value))
    if formatter is None:
        raise ValueError(f"no COPY text form for {type(value).__name__}")
    return formatter(value)


def _copyable(model: type[models.Model]) -> bool:
    pk = model._meta.pk
    if isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField) or not pk.has_default():
        return False
    for field in model._meta.concrete_fields:
        target: Any = getattr(field, "target_field", field) if field.is_relation else field
        if target.get_internal_type() not in COPYABLE_TYPES or field.db_returning:
            return False
    return True


ModelT = TypeVar("ModelT", bound=models.Model)


def insert_many(instances: list[ModelT], *, using: str | None = None) -> list[ModelT]:
    """Insert new ``instances`` of one model in one statement; return them, saved."""
    if not instances:
        return instances
    model = type(instances[0])
    alias = using or router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql" or not _copyable(model):
        return model._default_manager.using(alias).bulk_create(instances)
    fields = model._meta.concrete_fields
    try:
        lines = []
        for obj in instances:
            values = []
            for field in fields:
                if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                    value = field.pre_save(obj, True)
                else:
                    value = getattr(obj, field.attname)
                values.append(copy_text(value))
            lines.append("\t".join(values))
    except ValueError:
        return model._default_manager.using(alias).bulk_create(instances)
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    sql = f"COPY {connection.ops.quote_name(str(model._meta.db_table))} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw = cursor.cursor
        if not hasattr(raw, "copy_expert"):  # psycopg 3: cursor.copy()
            return model._default_manager.using(alias).bulk_create(instances)
        raw.copy_expert(sql, io.StringIO("\n".join(lines) + "\n"))
    for obj in instances:
        obj._state.adding = False
        obj._state.db = alias
    return instances
