"""The prepared key lookup returns what ``queryset.get`` returns, and only where the queryset is the same."""

from __future__ import annotations

import uuid

import pytest
from django.forms.models import model_to_dict

from grpc_ext.wire.lookups import PreparedLookups, plain_shape
from posts.models import Post
from tests.support.factories import make_post, make_user
from users.models import User


def values(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


@pytest.mark.django_db
def test_prepared_lookup_builds_the_same_instance_as_get(django_assert_num_queries):
    lookups = PreparedLookups()
    first, second = make_post(description="first"), make_post(description="")
    lookups.get(Post.objects.all(), "id", first.id)  # compiles

    with django_assert_num_queries(1):
        found = lookups.get(Post.objects.all(), "id", second.id)

    assert values(found) == values(Post.objects.get(id=second.id))
    assert not found._state.adding and found._state.db == "default"
    user = lookups.get(User.objects.all(), "id", second.owner_id)
    assert model_to_dict(user) == model_to_dict(User.objects.get(id=second.owner_id))


@pytest.mark.django_db
def test_prepared_lookup_of_a_missing_key_raises_does_not_exist():
    lookups = PreparedLookups()
    lookups.get(Post.objects.all(), "id", make_post().id)

    with pytest.raises(Post.DoesNotExist):
        lookups.get(Post.objects.all(), "id", uuid.uuid4())


@pytest.mark.django_db
def test_a_queryset_with_another_filter_is_not_served_by_the_prepared_sql():
    """A get_queryset that depends on the request (here: the owner) still narrows the lookup."""
    lookups = PreparedLookups()
    post, other_owner = make_post(), make_user()
    assert lookups.get(Post.objects.all(), "id", post.id) == post

    with pytest.raises(Post.DoesNotExist):
        lookups.get(Post.objects.filter(owner=other_owner), "id", post.id)
    assert lookups.get(Post.objects.filter(owner=post.owner), "id", post.id) == post


def test_only_plain_querysets_are_prepared():
    assert plain_shape(Post.objects.all()) is not None
    assert plain_shape(Post.objects.filter(title="x")) is not None
    assert plain_shape(Post.objects.select_related("owner")) is None
    assert plain_shape(Post.objects.filter(owner__email="a@example.com")) is None
    assert plain_shape(Post.objects.only("title")) is None
    assert plain_shape(Post.objects.values("id")) is None
