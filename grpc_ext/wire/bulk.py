"""Insert many new rows in one statement: ``COPY`` on PostgreSQL, ``bulk_create`` elsewhere.

``bulk_create`` on PostgreSQL compiles one multi-row ``INSERT`` with a
parameter per value: for 1,000 rows of seven columns the parameter handling
on both sides costs more than the rows themselves. ``COPY ... FROM STDIN``
streams the rows as text and is several times faster. It is used when the
keys are made in Python (a UUID default, not a sequence, since COPY returns
nothing) and every column has a type whose text form is plain; otherwise, and
on other databases, this is ``bulk_create``. Like ``bulk_create`` it sends no
signals and calls no ``save()``; unlike it, it reads the clock once for the
``auto_now``/``auto_now_add`` fields of all the rows (``pre_save_columns``).
"""

from __future__ import annotations

import datetime
import decimal
import io
import uuid
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import attrgetter, contains, is_, itemgetter
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models, router
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.utils import timezone

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

    The values are gathered a field at a time: a default that is not callable
    (Django's own ``get_default`` then returns the same object on every call)
    and a related object given to every item are read once per batch, a
    callable default (a key, an etag) is called for each row. Each instance is
    then made as ``Model.__init__`` makes it from positional values (Django's
    fast path, the one ``from_db`` uses), directly when that is all it would do
    (``direct_init``). If an item has a key that is not a concrete field's name,
    or a relation's value is not an instance of its model, every item goes
    through ``model(**item)``, which accepts or refuses it as Django does.
    """
    if not items:
        return []
    fields: list[Any] = list(model._meta.concrete_fields)
    names = {field.name for field in fields}
    if not all(map(names.issuperset, items)):
        return [model(**item) for item in items]
    columns: list[list[Any]] = []
    related: list[tuple[Any, list[Any]]] = []
    for field in fields:
        values = _field_values(field, items)
        if field.is_relation and any(map(contains, items, repeat(field.name))):
            if not _all_instances(values, field.related_model):
                return [model(**item) for item in items]
            related.append((field, values))
            values = _shared_map(attrgetter(field.target_field.attname), values)
        columns.append(values)
    if direct_init(model):
        keys = [field.attname for field in fields]
        new = model.__new__
        instances = []
        for row in zip(*columns, strict=True):
            instance = new(model)
            instance._state = ModelState()
            instance.__dict__.update(zip(keys, row, strict=True))
            instances.append(instance)
    else:
        instances = [model(*row) for row in zip(*columns, strict=True)]
    for field, values in related:
        for instance, value in zip(instances, values, strict=True):
            field.set_cached_value(instance, value)
    return instances


def _field_values(field: Any, items: list[dict[str, Any]]) -> list[Any]:
    """Return the value of ``field`` for each item: the item's, else the field's default."""
    name = field.name
    given = sum(map(contains, items, repeat(name)))
    if given == len(items):
        return list(map(itemgetter(name), items))
    if given:
        return [item[name] if name in item else field.get_default() for item in items]
    if _fixed_default(field):
        return [field.get_default()] * len(items)
    get_default = field.get_default
    return [get_default() for _ in items]


def _fixed_default(field: Any) -> bool:
    """Tell whether ``field.get_default()`` returns one object on every call: a default not callable, None or ""."""
    if field.has_default():
        return not callable(field.default)
    return not field.has_db_default()


def same_object(values: list[Any]) -> bool:
    """Tell whether every value is the first one (the same object, not an equal one): a value a batch shares."""
    return not values or all(map(is_, values, repeat(values[0])))


def _all_instances(values: list[Any], model: Any) -> bool:
    if same_object(values):
        return isinstance(values[0], model)
    return all(map(isinstance, values, repeat(model)))


def _shared_map(function: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """Return ``function`` of each value, called once if every value is the same object."""
    if same_object(values):
        return [function(values[0])] * len(values)
    return list(map(function, values))


def direct_init(model: type[models.Model]) -> bool:
    """Tell whether ``model(*values)`` only sets ``_state`` and each field's attribute, so both can be set directly.

    That is: no class of the model defines ``__init__`` or ``__setattr__`` but
    ``Model``, no receiver listens to its ``pre_init`` or ``post_init``, and
    no field's attribute has a descriptor that acts on assignment, except a
    foreign key's (it only drops a cached related object, which a new
    instance does not have).
    """
    classes = [cls for cls in model.__mro__ if cls is not models.Model and cls is not object]
    if any("__init__" in vars(cls) or "__setattr__" in vars(cls) for cls in classes):
        return False
    if signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model):
        return False
    for field in model._meta.concrete_fields:
        descriptor = getattr(model, field.attname, None)
        if hasattr(descriptor, "__set__") and type(descriptor) is not ForeignKeyDeferredAttribute:
            return False
    return True


def pre_save_columns(instances: list[ModelT], fields: list[Any]) -> list[list[Any]]:
    """Return the value each field inserts for each instance: its ``pre_save``, as an ``INSERT`` does.

    ``auto_now`` and ``auto_now_add`` fields take one time for the whole
    batch (``timezone.now()`` read once; ``save()`` and ``bulk_create`` read
    it for each row and field), set on every instance: the rows of one
    statement, in one transaction, are written at one moment. A field's own
    ``pre_save`` runs for each instance.
    """
    columns = []
    now = None
    for field in fields:
        pre_save = type(field).pre_save
        stamps = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        if pre_save is models.Field.pre_save:  # the attribute as it is
            columns.append(list(map(attrgetter(field.attname), instances)))
        elif stamps and pre_save in (models.DateTimeField.pre_save, models.DateField.pre_save):
            if pre_save is models.DateTimeField.pre_save:
                now = stamp = now or timezone.now()
            else:
                stamp = field.pre_save(instances[0], True)  # the date, as Django takes it
            for instance in instances:
                setattr(instance, field.attname, stamp)
            columns.append([stamp] * len(instances))
        else:
            columns.append([field.pre_save(instance, True) for instance in instances])
    return columns


def _value_text(value: Any) -> str:
    return "\\N" if value is None else _FORMATTERS[type(value)](value)


def _str_texts(values: list[str]) -> list[str]:
    """Return the COPY text of strings: themselves unless one holds a character COPY escapes (checked at once)."""
    joined = "\n".join(values)
    if joined.count("\n") == len(values) - 1 and "\\" not in joined and "\t" not in joined and "\r" not in joined:
        return values
    return [value.translate(_ESCAPES) for value in values]


def _uuid_texts(values: list[uuid.UUID]) -> list[str]:
    return list(map("%032x".__mod__, map(attrgetter("int"), values)))


def _datetime_texts(values: list[datetime.datetime]) -> list[str]:
    if settings.USE_TZ and any(map(is_, map(attrgetter("tzinfo"), values), repeat(None))):
        raise ValueError("naive datetime")
    return list(map(datetime.datetime.isoformat, values))


#: The COPY text of a column of values of one type, where that is cheaper than a call per value.
_COLUMN_FORMATTERS: dict[type, Callable[[list[Any]], list[str]]] = {
    str: _str_texts,
    uuid.UUID: _uuid_texts,
    datetime.datetime: _datetime_texts,
}


def column_texts(values: list[Any]) -> Iterable[str]:
    """Return the COPY text of each value of a column; one value shared by every row is formatted once."""
    if same_object(values):
        return repeat(_value_text(values[0]), len(values))
    kinds = set(map(type, values))
    if len(kinds) == 1:
        (kind,) = kinds
        format_column = _COLUMN_FORMATTERS.get(kind)
        if format_column is not None:
            return format_column(values)
        return list(map(_FORMATTERS[kind], values))
    return list(map(_value_text, values))


def insert_many(instances: list[ModelT], *, using: str | None = None) -> list[ModelT]:
    """Insert new ``instances`` of one model in one statement; return them, saved.

    On the ``COPY`` path the text is made a column at a time, each column's
    values formatted by their type (``pre_save_columns``: one time stamp per batch).
    """
    if not instances:
        return instances
    model = type(instances[0])
    alias = using or router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql" or not _copyable(model):
        return model._default_manager.using(alias).bulk_create(instances)
    fields = list(model._meta.concrete_fields)
    try:
        texts = [column_texts(values) for values in pre_save_columns(instances, fields)]
    except (KeyError, ValueError):  # a type without a COPY text form here, or a naive datetime
        return model._default_manager.using(alias).bulk_create(instances)
    data = "\n".join(map("\t".join, zip(*texts, strict=True))) + "\n"
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    sql = f"COPY {connection.ops.quote_name(str(model._meta.db_table))} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw = cursor.cursor
        if not hasattr(raw, "copy_expert"):  # psycopg 3: cursor.copy()
            return model._default_manager.using(alias).bulk_create(instances)
        raw.copy_expert(sql, io.StringIO(data), size=len(data) + 1)
    for obj in instances:
        obj._state.adding = False
        obj._state.db = alias
    return instances
