"""Rows of a ``values_list`` queryset as the driver returns them, converted once, straight into messages.

``values_list`` runs each value through the backend's converters (on SQLite a
datetime is parsed from text and made aware, a UUID is parsed from hex), and
the builder then converts it again for the message. For the converters known
here, ``RawRows`` fuses both steps into one function per column, with the same
result; a column with a converter not known here makes the whole query go
through ``values_list`` as usual. On PostgreSQL, UUID columns come as the text
the server sends: psycopg2 would parse each into a ``uuid.UUID`` that the
message then turns back into the same text (half the time of a Stream).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE, MULTI
from django.utils.dateparse import parse_datetime

from grpc_ext.wire.builders import MessageBuilder, compile_fill


def uuid_text(raw: str) -> str:
    """Return ``str(uuid.UUID(raw))``, without building the UUID for 32 hex digits (what Django stores)."""
    if len(raw) == 32:
        digits = f"{int(raw, 16):032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    return str(uuid.UUID(raw))


def sqlite_datetime(tz) -> Callable[[Any], Any]:
    """Return SQLite's ``convert_datetimefield_value`` (with time zone support on) for non-null values."""

    def convert(value):
        if isinstance(value, str):
            value = parse_datetime(value)
        return value.replace(tzinfo=tz) if value.tzinfo is None else value

    return convert


_fused: dict[tuple, Callable] = {}

#: PostgreSQL's type OID of ``uuid``.
UUID_OID = 2950


def UUID_AS_TEXT():  # noqa: N802  (a psycopg2 type object, named as psycopg2 names them)
    """Return a psycopg2 typecaster that leaves ``uuid`` values as the server's text."""
    import psycopg2.extensions

    return psycopg2.extensions.new_type((UUID_OID,), "UUID_AS_TEXT", lambda value, cursor: value)


def compose(first: Callable, then: Callable) -> Callable:
    return lambda value: then(first(value))


def fused_converter(converters: list, convert: Callable, connection) -> Callable | None:
    """Return one function doing the backend's ``converters`` then ``convert``, or None if one is unknown.

    The same function is returned for the same inputs, so compiled fill
    functions can be cached by their columns' functions.
    """
    if not converters:
        return convert
    if connection.vendor != "sqlite" or len(converters) != 1:
        return None
    from django.db.backends.sqlite3.operations import DatabaseOperations

    function = getattr(converters[0], "__func__", None)
    if function is DatabaseOperations.convert_uuidfield_value:
        key: tuple = ("uuid", convert)
        if key not in _fused:
            _fused[key] = uuid_text if convert is str else compose(uuid.UUID, convert)
        return _fused[key]
    if function is DatabaseOperations.convert_datetimefield_value and settings.USE_TZ:
        key = ("datetime", convert, connection.timezone)
        if key not in _fused:
            _fused[key] = compose(sqlite_datetime(connection.timezone), convert)
        return _fused[key]
    return None


class RawRows:
    """Execute a ``values_list(*builder.columns, *more)`` queryset; build messages from the raw rows.

    ``fill`` is ``None`` when a column has a converter not known here: use
    the queryset as usual then. ``python_row`` converts one row as
    ``values_list`` would (for page tokens).
    """

    def __init__(self, builder: MessageBuilder, queryset: QuerySet, *, chunk_size: int | None = None):
        query = queryset.query
        self.fill = None
        if query.annotation_select or query.extra_select:
            return  # values_list may reorder its columns
        self.connection = connections[queryset.db]
        self.compiler = query.get_compiler(queryset.db)
        self.chunk_size = chunk_size
        # Setting up the query fills compiler.select without running it.
        self.compiler.setup_query()
        fields = [column[0] for column in self.compiler.select[: self.compiler.col_count]]
        self.converters = self.compiler.get_converters(fields)
        column_functions = []
        for index, (name, convert) in enumerate(builder.named_converters):
            functions, _ = self.converters.get(index, ([], None))
            fused = fused_converter(functions, convert, self.connection)
            if fused is None:
                return
            column_functions.append((name, fused))
        key = tuple(column_functions)
        if key not in builder.fill_cache:
            builder.fill_cache[key] = compile_fill(column_functions)
        self.fill = builder.fill_cache[key]
        # UUIDs as text only where the message wants exactly that text.
        self.uuid_as_text = self.connection.vendor == "postgresql" and all(
            convert is str
            for field, (_, convert) in zip(fields, builder.named_converters, strict=False)
            if self.is_uuid_column(field)
        )

    def is_uuid_column(self, column) -> bool:
        output_field = getattr(column, "output_field", None)
        return output_field is not None and output_field.db_type(self.connection) == "uuid"

    def rows(self) -> Iterator[tuple]:
        """Run the query; return its rows as the driver gives them."""
        if self.uuid_as_text:
            return self._rows_with_uuid_text()
        results = self.compiler.execute_sql(
            MULTI, chunked_fetch=self.chunk_size is not None, chunk_size=self.chunk_size or GET_ITERATOR_CHUNK_SIZE
        )
        return chain.from_iterable(results)

    def _rows_with_uuid_text(self) -> Iterator[tuple]:
        """Run the query on a cursor of its own whose UUID columns stay text; close it when done or abandoned."""
        import psycopg2.extensions

        sql, params = self.compiler.as_sql()
        cursor = self.connection.chunked_cursor() if self.chunk_size is not None else self.connection.cursor()
        try:
            psycopg2.extensions.register_type(UUID_AS_TEXT(), cursor.cursor)
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(self.chunk_size or GET_ITERATOR_CHUNK_SIZE):
                yield from batch
        finally:
            cursor.close()

    def python_row(self, row: Iterable) -> list:
        """Return ``row`` converted as ``values_list`` converts it."""
        return convert_row(row, self.converters, self.connection)


def convert_row(row: Iterable, converters: dict[int, tuple[list, Any]], connection) -> list:
    """Return a raw database row with the backend's converters applied, as Django's iterables apply them.

    ``converters`` is ``compiler.get_converters(...)``: position -> (functions, expression).
    """
    values = list(row)
    for position, (functions, expression) in converters.items():
        value = values[position]
        for convert in functions:
            value = convert(value, expression, connection)
        values[position] = value
    return values
