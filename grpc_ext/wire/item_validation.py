"""A batch's items validated without DRF's walk of the fields when they are plainly valid (BatchCreate).

``compile_item_validation`` compiles, once per list serializer, a check that
returns what DRF's validation would for an item whose writable fields are
plain ``CharField`` values within their limits; any other item goes through
DRF's own validation, whose errors are the only ones a client sees
(``grpc_ext.wire.serializers.ListProtoSerializer.run_child_validation``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.validators import MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator
from rest_framework import fields as drf_fields
from rest_framework import serializers

#: A plain string field's checks: (key, source, trim_whitespace, allow_blank, shortest, longest, refuses NUL).
StringCheck = tuple[str, str, bool, bool, int, float, bool]


def string_check(serializer: serializers.Serializer, field: drf_fields.Field) -> StringCheck | None:
    """Return what DRF checks of a valid value of a plain ``CharField``, or ``None`` if it checks anything else.

    Plain: a ``CharField`` itself (no subclass), with a one-attribute source,
    no ``validate_<field>`` method, and only the validators ``CharField``
    makes: the maximum and minimum length and the NUL check (the
    lone-surrogate check is dropped for protobuf requests).
    """
    name = str(field.field_name)
    if type(field) is not drf_fields.CharField or len(field.source_attrs) != 1:
        return None
    if getattr(serializer, f"validate_{name}", None) is not None:
        return None
    shortest, longest, refuses_nul = 0, float("inf"), False
    for validator in field.validators:
        limit = getattr(validator, "limit_value", None)
        if type(validator) is MaxLengthValidator and type(limit) is int:
            longest = min(longest, limit)
        elif type(validator) is MinLengthValidator and type(limit) is int:
            shortest = max(shortest, limit)
        elif type(validator) is ProhibitNullCharactersValidator:
            refuses_nul = True
        else:
            return None
    return name, field.source_attrs[0], field.trim_whitespace, field.allow_blank, shortest, longest, refuses_nul


def compile_item_validation(
    serializer: serializers.Serializer, quiet_run_validators: Iterable[Callable] = ()
) -> Callable[[Any], dict | None] | None:
    """Compile ``accept(data)``: the value ``serializer.run_validation(data)`` returns for a valid item, else ``None``.

    For a serializer whose validation is DRF's own walk of its writable
    fields, each a plain ``CharField`` (``string_check``), and with no
    serializer-level validator or ``validate()`` (``quiet_run_validators``:
    ``run_validators`` overrides that do nothing without validators). ``accept`` only accepts: an
    item it does not find valid (a missing, null or non-string value, a blank,
    too long or too short one, a NUL) gets ``None``, and the caller runs DRF's
    own validation on it, whose errors (messages, codes, fields) are the only
    ones a client sees. A valid item is what DRF returns: its strings,
    whitespace trimmed as the field says, under their sources.
    """
    cls = type(serializer)
    base = serializers.Serializer
    if (
        cls.run_validation is not base.run_validation
        or cls.to_internal_value is not base.to_internal_value
        or cls.validate is not base.validate
        or serializer.validators
        or (cls.run_validators is not base.run_validators and cls.run_validators not in quiet_run_validators)
    ):
        return None
    checks = []
    for field in serializer._writable_fields:
        check = string_check(serializer, field)
        if check is None:
            return None
        checks.append(check)

    def accept(data: Any) -> dict | None:
        if type(data) is not dict:
            return None
        validated = {}
        for name, source, trim, allow_blank, shortest, longest, refuses_nul in checks:
            value = data.get(name)
            if type(value) is not str:
                return None  # missing (a default, or required), null, or another type: DRF decides
            if trim:
                value = value.strip()
            if not value:
                if not allow_blank:
                    return None
            elif not shortest <= len(value) <= longest or (refuses_nul and "\x00" in value):
                return None
            validated[source] = value
        return validated

    return accept
