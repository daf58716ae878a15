"""A lookup by key whose SQL is compiled once, then executed with each call's key.

``queryset.get(pk=value)`` builds the filter and compiles the SQL on every
call, which costs more than running the query. ``PreparedLookup`` compiles
``queryset.filter(pk=value)`` once, finds the key among the query's
parameters, and afterwards only swaps the key, executes the SQL and builds the
instance, as ``ModelIterable`` does.

It applies only to plain querysets (no joins, annotations, select_related,
prefetching, deferred fields, slicing, distinct or locking), and it is used
for a call only when that call's queryset has the same filter as the one the
SQL was compiled from, so a ``get_queryset`` that depends on the request
(``filter(owner=self.user)``) still gets the right rows: it falls back to
``get()``.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import ModelIterable
from django.db.models.sql import Query

from grpc_ext.wire.rows import convert_row


def plain_shape(queryset: QuerySet) -> tuple | None:
    """Return what identifies the SQL of a plain queryset (its model, database and filter), else ``None``."""
    query = queryset.query
    plain = (
        type(query) is Query
        and queryset._iterable_class is ModelIterable
        and query.default_cols
        and not query.select_related
        and not query.annotations
        and not query.extra
        and not query.distinct
        and not query.combinator
        and not query.is_sliced
        and not query.select_for_update
        and query.group_by is None
        and query.deferred_loading == (frozenset(), True)
        and not queryset._prefetch_related_lookups  # type: ignore[attr-defined]  # Django internals
        and not queryset._known_related_objects  # type: ignore[attr-defined]
        and len(query.alias_map) <= 1
    )
    return (queryset.model, queryset.db, query.where) if plain else None


class PreparedLookup:
    """The compiled SQL of ``queryset.filter(<field>=<key>)`` and how to run it for another key."""

    def __init__(self, queryset: QuerySet, field_name: str, value: Any):
        """Compile the lookup of ``value``; raise ``ValueError`` if the key cannot be told apart in the SQL."""
        self.shape = plain_shape(queryset)
        if self.shape is None:
            raise ValueError("not a plain queryset")
        self.model: type[Model] = queryset.model
        self.db = queryset.db
        self.field = self.model._meta.get_field(field_name)
        if self.field.is_relation or not self.field.concrete:
            raise ValueError("the lookup field is not a plain column")
        connection = connections[self.db]
        compiler = queryset.filter(**{field_name: value}).order_by()[:2].query.get_compiler(using=self.db)
        self.sql, params = compiler.as_sql()
        key = self.field.get_db_prep_value(value, connection, prepared=False)
        positions = [index for index, param in enumerate(params) if param == key]
        if len(positions) != 1 or compiler.klass_info is None or compiler.annotation_col_map:
            raise ValueError("the key is not one parameter of the SQL")
        self.params, self.position = list(params), positions[0]
        select = compiler.select
        select_fields = compiler.klass_info["select_fields"]
        self.start, self.end = select_fields[0], select_fields[-1] + 1
        self.init_list = [column[0].target.attname for column in select[self.start : self.end]]
        self.converters = compiler.get_converters([column[0] for column in select[self.start : self.end]])

    def matches(self, queryset: QuerySet) -> bool:
        """Tell whether ``queryset`` compiles to the same SQL (same model, database and filter)."""
        return plain_shape(queryset) == self.shape

    def get(self, value: Any) -> Model:
        """Return the row whose key is ``value``; raise ``DoesNotExist``/``MultipleObjectsReturned`` as ``get`` does."""
        connection = connections[self.db]
        params = self.params.copy()
        params[self.position] = self.field.get_db_prep_value(value, connection, prepared=False)
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchmany(2)
        # Every concrete model has DoesNotExist and MultipleObjectsReturned; type[Model] does not say so.
        model: Any = self.model
        if not rows:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        if len(rows) > 1:
            raise model.MultipleObjectsReturned(
                f"get() returned more than one {model._meta.object_name} -- it returned 2 or more!"
            )
        values = convert_row(rows[0][self.start : self.end], self.converters, connection)
        return self.model.from_db(self.db, self.init_list, values)


class PreparedLookups:
    """The prepared lookups of one service class, by model, database and field."""

    def __init__(self) -> None:
        self._lookups: dict[tuple, PreparedLookup | None] = {}
        self._lock = threading.Lock()

    def get(self, queryset: QuerySet, field_name: str, value: Any) -> Model:
        """Return ``queryset.get(<field_name>=value)``, from the prepared SQL when it applies."""
        key = (queryset.model, queryset.db, field_name)
        if key not in self._lookups:
            prepared: PreparedLookup | None
            try:
                prepared = PreparedLookup(queryset, field_name, value)
            except ValueError:
                prepared = None
            with self._lock:
                self._lookups.setdefault(key, prepared)
        lookup = self._lookups[key]
        if lookup is not None and lookup.matches(queryset):
            return lookup.get(value)
        return queryset.get(**{field_name: value})
