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
from operator import attrgetter
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
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


#: The COPY text of a value, by its exact type (``\\N`` is NULL; another type makes the insert a ``bulk_create``).
_FORMATTERS: dict[type, Callable[[Any], str]] = {
    str: lambda value: value.translate(_ESCAPES),
    bool: lambda value: "t" if value else "f",
    datetime.datetime: _datetime_text,
    uuid.UUID: attrgetter("hex"),  # PostgreSQL reads 32 hex digits as a uuid, a cheaper form than str()
    int: str,
    float: repr,
    decimal.Decimal: str,
    datetime.date: str,
}


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


class ItemValidationError(ValidationError):
    """The ``ValidationError`` of one item of a batch, with its position, so a transport can name the item."""

    def __init__(self, index: int, error: ValidationError):
        super().__init__(error)
        self.index = index


def validate_each(instances: list[ModelT], validate: Callable[[ModelT], Any]) -> None:
    """Call ``validate`` on every instance; the first ``ValidationError`` is raised as an ``ItemValidationError``."""
    for index, instance in enumerate(instances):
        try:
            validate(instance)
        except ValidationError as exc:
            raise ItemValidationError(index, exc) from exc


def has_model_rules(model: type[models.Model]) -> bool:
    """Tell whether ``full_clean`` checks more than each field's own value.

    That is a ``clean()`` (or another validation method) of the model's own, a
    unique field other than the primary key, ``unique_together``, a
    ``unique_for_date`` or any ``Meta.constraints``: rules no serializer field runs.
    """
    fields: list[Any] = list(model._meta.fields)  # parents' fields included, as full_clean checks them
    metas = [model._meta, *(parent._meta for parent in model._meta.get_parent_list())]
    validation = ("full_clean", "clean_fields", "clean", "validate_unique", "validate_constraints")
    return (
        any(getattr(model, name) is not getattr(models.Model, name) for name in validation)
        or any(meta.constraints or meta.unique_together for meta in metas)
        or any(
            (field.unique and not field.primary_key)
            or field.unique_for_date
            or field.unique_for_month
            or field.unique_for_year
            for field in fields
        )
    )


def new_instances(model: type[ModelT], items: list[dict[str, Any]]) -> list[ModelT]:
    """Return unsaved instances of ``model`` with the given field values, as ``model(**item)`` would.

    The values are passed positionally (Django's fast path, the one ``from_db``
    uses): keyword arguments cost a default lookup and a pop per field, more
    than the insert itself in a batch. An item with a key that is not a
    concrete field's name falls back to ``model(**item)``.
    """
    fields: list[Any] = list(model._meta.concrete_fields)
    names = {field.name for field in fields}
    relations: list[Any] = [field for field in fields if field.is_relation]
    instances = []
    for item in items:
        # A related object of another model is refused by ``model(**item)``'s descriptor, as it should be.
        plain = names.issuperset(item) and all(
            isinstance(item[field.name], field.related_model) for field in relations if field.name in item
        )
        if not plain:
            instances.append(model(**item))
            continue
        values = []
        for field in fields:
            if field.name not in item:
                values.append(field.get_default())
            elif field.is_relation:
                values.append(getattr(item[field.name], field.target_field.attname))
            else:
                values.append(item[field.name])
        instance = model(*values)
        for field in relations:
            if field.name in item:
                field.set_cached_value(instance, item[field.name])
        instances.append(instance)
    return instances


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
    # auto_now(_add) values are set on each instance, as ``save()`` and ``bulk_create`` set them.
    stamped = [field for field in fields if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)]
    get_values = attrgetter(*(field.attname for field in fields))
    values_of = get_values if len(fields) > 1 else lambda obj: (get_values(obj),)
    formatters = _FORMATTERS
    try:
        lines = []
        for obj in instances:
            for field in stamped:
                field.pre_save(obj, True)
            values = values_of(obj)
            lines.append("\t".join(["\\N" if value is None else formatters[type(value)](value) for value in values]))
    except (KeyError, ValueError):  # a type without a COPY text form here, or a naive datetime
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
