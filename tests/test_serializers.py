"""``ModelProtoSerializer``'s fields: built once per class, cloned per serializer with DRF's copy semantics."""

from __future__ import annotations

import copy

import pytest
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from grpc_ext.wire.serializers import FieldPrototype, ModelProtoSerializer, skip_surrogate_checks
from posts.models import Post
from posts.serializers import PostProtoSerializer
from users.serializers import UserProtoSerializer


def state(field) -> dict:
    """Return what a field holds, but its creation counter (DRF's copy runs ``__init__``, which takes a new one)."""
    return {name: value for name, value in vars(field).items() if name not in ("_creation_counter", "_validators")}


@pytest.mark.parametrize("serializer_class", [PostProtoSerializer, UserProtoSerializer])
def test_a_cloned_field_holds_what_drfs_deep_copy_holds(serializer_class):
    assert serializer_class().fields  # builds the prototypes
    for name, prototype in serializer_class._prototype_fields.items():
        clone, drf_copy = prototype.clone(), copy.deepcopy(prototype.field)
        assert type(clone) is type(drf_copy) and state(clone) == state(drf_copy), name
        assert [type(v) for v in clone.validators] == [type(v) for v in drf_copy.validators], name


def test_two_serializers_get_independent_fields():
    """``bind()`` and changes to one serializer's fields (as ``skip_surrogate_checks`` makes) reach no other."""
    first, second = PostProtoSerializer(), PostProtoSerializer()
    title, other_title = first.fields["title"], second.fields["title"]
    validators = list(title.validators)
    assert title is not other_title
    assert title.parent is first and other_title.parent is second
    title.required = False
    title.error_messages["blank"] = "changed"
    title.style["input_type"] = "changed"
    title.validators.append(lambda value: None)
    skip_surrogate_checks(first)
    for untouched in (other_title, PostProtoSerializer().fields["title"]):
        assert untouched.required
        assert untouched.error_messages["blank"] != "changed"
        assert "input_type" not in untouched.style
        assert untouched.validators == validators  # the same validators, shared as DRF shares them
        assert any(isinstance(v, ProhibitSurrogateCharactersValidator) for v in untouched.validators)
    assert not any(isinstance(v, ProhibitSurrogateCharactersValidator) for v in title.validators)


class Tagged(ModelProtoSerializer):
    tags = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        model = Post
        fields = ["id", "title", "tags"]


def test_a_field_with_a_child_is_deep_copied_as_drf_copies_it():
    assert FieldPrototype(Tagged._declared_fields["tags"]).containers is None
    first, second = Tagged().fields["tags"], Tagged().fields["tags"]
    assert first.child is not second.child
    assert first.child.parent is first and second.child.parent is second


def test_a_serializer_whose_fields_vary_keeps_drfs_validators_per_serializer():
    """``get_fields`` overridden (the user's password is required on Create only): validators are not cached."""
    assert UserProtoSerializer().validators == []
    assert "_default_validators" not in UserProtoSerializer.__dict__
    assert PostProtoSerializer().validators == []
    assert PostProtoSerializer.__dict__["_default_validators"] == ()
