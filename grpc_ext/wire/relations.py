"""Related fields of the proto serializers, in a module of their own so that serializers and builders both import it."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import relations


class StringPrimaryKeyRelatedField(relations.PrimaryKeyRelatedField):
    """A related object as the string of its key (a UUID is a proto ``string``)."""

    def to_representation(self, value) -> str:
        return str(value.pk)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except DjangoValidationError:
            self.fail("does_not_exist", pk_value=data)
