"""List filters and ``order_by``, declared once on the serializer's ``Meta``.

::

    class Meta:
        list_filters = {"owner": "exact", "title": "icontains"}
        ordering_fields = ["created", "title"]

``generateproto`` adds one ``<Model>ListRequest`` field per filter (``owner``,
``title_contains``) and an ``order_by`` string when orderings are declared;
``ListModelMixin`` applies them. ``order_by`` follows AIP-132:
``"created desc, title"``. An empty filter field filters nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import QuerySet

from grpc_ext.exceptions import InvalidArgument, excerpt
from grpc_ext.settings import grpc_ext_settings

#: Lookup -> suffix of the request field that carries it.
LOOKUP_SUFFIXES = {
    "exact": "",
    "iexact": "",
    "contains": "_contains",
    "icontains": "_contains",
    "startswith": "_starts_with",
    "istartswith": "_starts_with",
}
TEXT_LOOKUPS = {"contains", "icontains", "startswith", "istartswith"}


@dataclass(frozen=True)
class ListFilter:
    """One filter: model field ``name`` compared with ``lookup`` to the request field ``request_field``."""

    name: str
    lookup: str

    @property
    def request_field(self) -> str:
        return f"{self.name}{LOOKUP_SUFFIXES[self.lookup]}"

    @property
    def is_text(self) -> bool:
        return self.lookup in TEXT_LOOKUPS

    def max_length(self, model: type[models.Model]) -> int:
        """Return the longest value accepted: ``MAX_FILTER_LENGTH``, or the field's shorter ``max_length``."""
        field_max = getattr(model._meta.get_field(self.name), "max_length", None)
        return min(field_max or grpc_ext_settings.MAX_FILTER_LENGTH, grpc_ext_settings.MAX_FILTER_LENGTH)

    def check(self, model: type[models.Model], raw: str) -> None:
        """Refuse a value no query should see: a NUL (PostgreSQL cannot store one) or one too long."""
        if "\x00" in raw:
            raise InvalidArgument(
                f"{self.request_field}: null characters are not allowed.",
                field_errors={self.request_field: ["Null characters are not allowed."]},
            )
        limit = self.max_length(model)
        if len(raw) > limit:
            raise InvalidArgument(
                f"{self.request_field}: at most {limit} characters ({len(raw):,} given).",
                field_errors={self.request_field: [f"Ensure this value has at most {limit} characters."]},
            )

    def apply(self, queryset: QuerySet, raw: str) -> QuerySet:
        """Return ``queryset`` narrowed by the raw request value; INVALID_ARGUMENT if it is not a valid value."""
        value = raw
        if not self.is_text:
            try:
                value = queryset.model._meta.get_field(self.name).to_python(raw)
            except ValidationError:
                raise InvalidArgument(
                    f"{self.request_field}: {excerpt(raw)} is not a valid value.",
                    field_errors={self.request_field: [f"{excerpt(raw)} is not a valid value."]},
                ) from None
        return queryset.filter(**{f"{self.name}__{self.lookup}": value})


def get_list_filters(serializer_class) -> list[ListFilter]:
    """Return the filters of ``Meta.list_filters``, checked against the model."""
    meta = serializer_class.Meta
    filters = [ListFilter(name, lookup) for name, lookup in getattr(meta, "list_filters", {}).items()]
    for list_filter in filters:
        if list_filter.lookup not in LOOKUP_SUFFIXES:
            raise ImproperlyConfigured(
                f"{serializer_class.__name__}.Meta.list_filters[{list_filter.name!r}]: lookup "
                f"{list_filter.lookup!r} is not one of {', '.join(LOOKUP_SUFFIXES)}."
            )
        _model_field(serializer_class, list_filter.name, "list_filters")
    return filters


def get_ordering_fields(serializer_class) -> list[str]:
    """Return the fields of ``Meta.ordering_fields`` a client may name in ``order_by``."""
    names = list(getattr(serializer_class.Meta, "ordering_fields", []))
    for name in names:
        _model_field(serializer_class, name, "ordering_fields")
    return names


def _model_field(serializer_class, name: str, option: str) -> models.Field:
    try:
        return serializer_class.Meta.model._meta.get_field(name)
    except Exception:
        raise ImproperlyConfigured(
            f"{serializer_class.__name__}.Meta.{option} names {name!r}, which is not a field of "
            f"{serializer_class.Meta.model.__name__}."
        ) from None


def parse_order_by(order_by: str, allowed: list[str]) -> list[str]:
    """Turn AIP-132 ``"created desc, title"`` into Django's ``["-created", "title"]``.

    Each field may appear once: the keyset condition of a page token grows
    with the square of the number of terms, so a repeated field would let a
    client make one query arbitrarily expensive.
    """
    ordering, seen = [], set()
    for term in (part.strip() for part in order_by.split(",")):
        if not term:
            continue
        name, *direction = term.split()
        if name in seen:
            raise InvalidArgument(
                f"order_by: {excerpt(name)} appears more than once.",
                field_errors={"order_by": [f"{excerpt(name)} appears more than once."]},
            )
        seen.add(name)
        if name not in allowed or direction not in ([], ["asc"], ["desc"]):
            choices = ", ".join(allowed) or "none"
            raise InvalidArgument(
                f"order_by: {excerpt(term)} is not a field to order by, optionally followed by asc or desc "
                f"(fields: {choices}).",
                field_errors={"order_by": [f"Cannot order by {excerpt(term)}."]},
            )
        ordering.append(f"-{name}" if direction == ["desc"] else name)
    return ordering


def filter_list_request(queryset: QuerySet, request, filters: list[ListFilter]) -> tuple[QuerySet, dict[str, str]]:
    """Apply every filter the request sets; return the queryset and the values applied."""
    applied = {}
    for list_filter in filters:
        raw = getattr(request, list_filter.request_field)
        list_filter.check(queryset.model, raw)
        if raw:
            queryset = list_filter.apply(queryset, raw)
            applied[list_filter.request_field] = raw
    return queryset, applied
