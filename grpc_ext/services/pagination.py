"""Keyset pagination behind opaque page tokens (AIP-132 ``page_size``/``page_token``).

A token holds the ordering values of the last row served, so the next page
starts strictly after it: rows inserted or deleted while a client pages never
make it repeat or skip a row, and every page costs one indexed range query
however deep the client goes. Tokens are signed with the project's secret, so
a client cannot forge one that makes the server compare against values it
never served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.core import signing
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Field, Model, Q, QuerySet

from grpc_ext.exceptions import InvalidArgument
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.codec import MessageCodec

TOKEN_SALT = "grpc_ext.pagination.page_token"


def model_field(model: type[Model], term: str) -> Field:
    """Return the model field an ordering term names (``-created``: ``created``)."""
    field = model._meta.get_field(term.lstrip("-"))
    if not isinstance(field, Field):
        raise FieldDoesNotExist(f"{model.__name__}.{term.lstrip('-')} is a relation's reverse side, not a field.")
    return field


@dataclass(frozen=True)
class RowTokens:
    """Make the page token that starts after a given row of one listing (its ordering and filters)."""

    model: type[Model]
    ordering: list[str]
    filters: dict[str, str]
    #: For rows of a codec: where each ordering column is in the row, and how to read the row as Python values.
    positions: dict[str, int] | None = None
    to_python: Callable[[Any], list] | None = None

    def token_for(self, row: Any) -> str:
        """Return the token of the page that starts right after ``row`` (an instance or a codec row)."""
        if self.positions is not None and self.to_python is not None:
            values = self.to_python(row)
            # value_to_string reads the attname, as from an instance.
            row = SimpleNamespace(**{attname: values[index] for attname, index in self.positions.items()})
        values = [model_field(self.model, term).value_to_string(row) for term in self.ordering]
        return signing.dumps({"o": self.ordering, "f": self.filters, "v": values}, salt=TOKEN_SALT, compress=True)


@dataclass(frozen=True)
class Page:
    #: Model instances, or rows for ``fill`` when ``paginate`` was given a codec with columns.
    rows: list
    next_page_token: str
    #: ``token_for(row)``: the token of the page that starts after ``row``, one of ``rows``.
    token_for: Callable[[Any], str]
    #: ``fill(rows, make)`` builds the rows' messages (see ``MessageCodec.fetch``); None for instances.
    fill: Callable | None = None


class KeysetPagination:
    """Slice a queryset into pages ordered by ``ordering`` plus the primary key."""

    def __init__(self, ordering: list[str] | tuple[str, ...]):
        self.ordering = list(ordering)

    def get_ordering(self, queryset: QuerySet) -> list[str]:
        """Return the ordering, ending with the primary key so that it is total."""
        pk_name = queryset.model._meta.pk.name
        names = [name.lstrip("-") for name in self.ordering]
        if pk_name in names:
            return self.ordering
        return [*self.ordering, pk_name]

    def get_page_size(self, requested: int) -> int:
        if requested < 0:
            raise InvalidArgument(
                "page_size must not be negative.", field_errors={"page_size": ["Must not be negative."]}
            )
        if requested == 0:
            return grpc_ext_settings.PAGE_SIZE
        return min(requested, grpc_ext_settings.MAX_PAGE_SIZE)

    def paginate(
        self,
        queryset: QuerySet,
        *,
        page_size: int,
        page_token: str,
        filters: dict[str, str] | None = None,
        codec: MessageCodec | None = None,
    ) -> Page:
        """Return the page after ``page_token`` (the first page for an empty token).

        A token is bound to the ordering and to ``filters`` (the request's
        filter values): used with others it is refused, since its position
        means nothing in another listing. With a ``codec`` that has
        ``columns``, no model instance is created: the rows are tuples of
        those columns (then the ordering's, if missing), for ``page.fill``.
        """
        ordering = self.get_ordering(queryset)
        filters = filters or {}
        size = self.get_page_size(page_size)
        queryset = queryset.order_by(*ordering)
        if page_token:
            values = self._decode(queryset.model, ordering, filters, page_token)
            queryset = queryset.filter(self._after(ordering, values))
        tokens = RowTokens(queryset.model, ordering, filters)
        fill = None
        columns = codec.columns if codec is not None else None
        if codec is None or columns is None:
            rows = list(queryset[: size + 1])
        else:
            # The ordering's columns the rows lack are selected after them.
            attnames = [model_field(queryset.model, term).attname for term in ordering]
            extra = [attname for attname in dict.fromkeys(attnames) if attname not in columns]
            selected = [*columns, *extra]
            fetched = codec.fetch(queryset[: size + 1], extra_columns=extra)
            rows, fill = list(fetched.rows), fetched.fill
            positions = {attname: selected.index(attname) for attname in attnames}
            tokens = RowTokens(queryset.model, ordering, filters, positions, fetched.to_python)
        more = len(rows) > size
        rows = rows[:size]
        return Page(rows, tokens.token_for(rows[-1]) if more else "", tokens.token_for, fill)

    @staticmethod
    def _after(ordering: list[str], values: list) -> Q:
        """Build ``(a, b, c) > (va, vb, vc)`` in the ordering's directions.

        The redundant ``a >= va`` in front lets the database start an index
        scan on ``a`` at the token's position instead of filtering every row
        before it (each page would cost more than the one before).
        """
        first = ordering[0].lstrip("-")
        bound = Q(**{f"{first}__{'lte' if ordering[0].startswith('-') else 'gte'}": values[0]})
        condition = Q()
        for index, term in enumerate(ordering):
            name = term.lstrip("-")
            lookup = "lt" if term.startswith("-") else "gt"
            step = Q(**{f"{name}__{lookup}": values[index]})
            for previous, value in zip(ordering[:index], values[:index], strict=True):
                step &= Q(**{previous.lstrip("-"): value})
            condition |= step
        return bound & condition

    @staticmethod
    def _decode(model: type[Model], ordering: list[str], filters: dict[str, str], token: str) -> list:
        invalid = InvalidArgument(
            "page_token is not valid for this request.",
            field_errors={"page_token": ["Not a token this List returned."]},
        )
        try:
            payload = signing.loads(token, salt=TOKEN_SALT)
            if payload["o"] != ordering or payload["f"] != filters:
                raise InvalidArgument(
                    "page_token was returned for other filters or another order_by; "
                    "send the same filters and order_by as the first page.",
                    field_errors={"page_token": ["Not a token of this listing."]},
                )
            if len(payload["v"]) != len(ordering):
                raise invalid
            return [model_field(model, term).to_python(raw) for term, raw in zip(ordering, payload["v"], strict=True)]
        except (signing.BadSignature, ValueError, KeyError, TypeError, ValidationError, FieldDoesNotExist):
            raise invalid from None
