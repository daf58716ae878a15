"""What the write RPCs keep in the database: entity tags (AIP-154) and remembered request ids (AIP-155).

Models with entity tags also insert new rows with a statement compiled once
(``CompiledInsertModel``), the largest cost of a Create after the round trip.
"""

from __future__ import annotations

import operator
import random
import types
from collections.abc import Sequence
from typing import Any

from django.db import connections, models
from django.db.models import QuerySet, sql

#: Name of the concurrency-token column of an ``ETagModel`` and of the ``etag`` message field.
ETAG_FIELD = "etag"


def new_etag() -> str:
    """Return a fresh random entity tag: unlike a timestamp it differs even for two writes in one clock tick.

    64 random bits from the process's generator (reseeded in every forked
    process): a tag must not repeat, not be secret, and ``os.urandom`` would
    cost a system call per row of a batch.
    """
    return f"{random.getrandbits(64):016x}"


def has_etag(model: type[models.Model]) -> bool:
    """Tell whether ``model`` keeps an entity tag (inherits ``ETagModel``)."""
    return issubclass(model, ETagModel)


#: The INSERT of each (model, database alias) and the fields it was compiled for (``compiled_insert``).
_compiled_inserts: dict[tuple[type[models.Model], str, str], tuple[tuple, str | None]] = {}


def compile_insert(model: type[models.Model], using: str, fields: Sequence) -> str | None:
    """Return the SQL Django compiles to insert one row of ``fields`` of ``model``.

    ``None`` if the statement is not a plain ``%s`` per field: a field with a
    placeholder of its own (a geometry) or a backend that changes insert
    parameters; ``save()`` then compiles each insert, as Django does.
    """
    if not fields or any(hasattr(field, "get_placeholder") for field in fields):
        return None
    query = sql.InsertQuery(model)
    row: Any = types.SimpleNamespace(**{field.attname: None for field in fields})  # raw: values read as they are
    query.insert_values(fields, [row], raw=True)
    try:
        [(statement, params)] = query.get_compiler(using=using).as_sql()
    except Exception:
        return None
    return statement if len(params) == len(fields) == statement.count("%s") else None


def compiled_insert(model: type[models.Model], connection, fields: Sequence) -> str | None:
    """Return ``compile_insert`` for the connection's database, compiled once (for the fields ``save()`` inserts)."""
    key = (model, connection.alias, connection.vendor)
    compiled = _compiled_inserts.get(key)
    if compiled is None:
        compiled = _compiled_inserts[key] = (tuple(fields), compile_insert(model, connection.alias, fields))
    compiled_fields, statement = compiled
    if len(compiled_fields) != len(fields) or not all(map(operator.is_, compiled_fields, fields)):
        return None  # other fields than the first save's
    return statement


class CompiledInsertModel(models.Model):
    """A model whose ``save()`` of a new row reuses the INSERT that Django compiled for it once per database.

    Django's ``SQLInsertCompiler`` builds the same statement on every
    ``save()``, a fifth of a Create's CPU. Only the statement is reused: each
    value is still the field's ``pre_save`` (``auto_now``, ``auto_now_add``)
    made ready by its ``get_db_prep_save`` for the connection, and the statement
    runs on Django's cursor, so signals, ``save()`` overrides, query logging,
    execute wrappers and database errors are Django's. Any other insert (raw,
    with returned columns such as an auto-increment key, an expression as a
    value, other fields than its first insert's, a custom manager's insert) is Django's own.
    """

    class Meta:
        abstract = True

    def _do_insert(self, manager, using, fields, returning_fields, raw):
        connection = connections[using]
        statement = None
        if (
            not raw
            and not returning_fields
            and getattr(manager, "_queryset_class", None) is not None
            and manager._queryset_class._insert is QuerySet._insert  # type: ignore[attr-defined]
            # An expression as a value (``F()``, a database function) is compiled by Django.
            and not any(hasattr(getattr(self, field.attname), "resolve_expression") for field in fields)
        ):
            statement = compiled_insert(type(self), connection, fields)
        if statement is None:
            return super()._do_insert(manager, using, fields, returning_fields, raw)  # type: ignore[misc]
        values = [field.pre_save(self, True) for field in fields]
        if any(hasattr(value, "resolve_expression") for value in values):
            # A field whose pre_save() makes an expression of a plain value: Django compiles it (pre_save runs again).
            return super()._do_insert(manager, using, fields, returning_fields, raw)  # type: ignore[misc]
        params = [
            field.get_db_prep_save(value, connection=connection) for field, value in zip(fields, values, strict=True)
        ]
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
        return []


class ETagModel(CompiledInsertModel):
    """A model whose rows carry an entity tag that changes with every ``save()``.

    A random token rather than a counter: two concurrent writes that do not
    check the tag each write their own token, so a tag a client holds always
    names exactly one state of the row. ``QuerySet.update()`` does not call
    ``save()``; set ``etag=new_etag()`` there too. ``bulk_create`` gets a fresh
    tag per row from the default.
    """

    etag = models.CharField(max_length=32, default=new_etag, editable=False)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self.etag = new_etag()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and ETAG_FIELD not in update_fields:
            kwargs["update_fields"] = [*update_fields, ETAG_FIELD]
        super().save(*args, **kwargs)


class IdempotencyRecord(models.Model):
    """The response of a write made with a client's request id, so that a retry returns it instead of writing again.

    ``caller`` scopes ids per caller (``user:<pk>``; ``anonymous`` for calls
    without credentials), ``fingerprint`` is a keyed hash (HMAC with
    ``SECRET_KEY``) of the method and the request, so that a password in a
    signup request is never stored in a form open to an offline guess. The
    unique constraint makes concurrent duplicates write once: the record is
    inserted in the write's own transaction, and the loser of the race fails on
    it, rolls back its write and answers with the winner's response.
    """

    caller = models.CharField(max_length=64)
    request_id = models.CharField(max_length=160)  # a UUID, or "rest:" and an Idempotency-Key
    fingerprint = models.CharField(max_length=64)
    response = models.BinaryField()
    created = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "request_id"], name="idempotency_caller_request_id_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.request_id}"
