"""``CompiledInsertModel``: a new row's INSERT is compiled once, and the row is the one Django's own insert writes."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.db.models import Value
from django.db.models.functions import Upper
from django.db.models.signals import post_save, pre_save
from django.test.utils import CaptureQueriesContext

from grpc_ext.models import compile_insert, compiled_insert
from posts.models import Post
from tests.support.factories import make_post, make_user

pytestmark = pytest.mark.django_db


def row(post: Post) -> dict:
    return Post.objects.filter(pk=post.pk).values().get()


def test_a_saved_row_is_what_the_instance_holds_with_timestamps_and_etag_set_by_save():
    owner = make_user()
    seen = []

    def record(sender, instance, **kwargs):
        seen.append((kwargs.get("created"), instance.created is not None))

    pre_save.connect(record, sender=Post)
    post_save.connect(record, sender=Post)
    try:
        post = Post(owner=owner, title="Compiled", description="text")
        post.save(force_insert=True)
    finally:
        pre_save.disconnect(record, sender=Post)
        post_save.disconnect(record, sender=Post)
    assert seen == [(None, False), (True, True)]  # pre_save before auto_now_add, post_save after, created=True
    assert post.created is not None and post.updated is not None and len(post.etag) == 16
    assert row(post) == {field.attname: getattr(post, field.attname) for field in Post._meta.concrete_fields}


def test_the_statement_is_djangos_and_runs_on_djangos_cursor():
    """Query logging and execute wrappers see the INSERT Django's compiler makes."""
    fields = [field for field in Post._meta.local_concrete_fields if not field.generated]
    statement = compile_insert(Post, connection.alias, fields)
    assert statement is not None and statement.startswith("INSERT INTO")
    owner = make_user()
    with CaptureQueriesContext(connection) as queries:
        make_post(owner=owner)
    [insert] = [query["sql"] for query in queries]
    assert compiled_insert(Post, connection, fields) == statement  # compiled by the first save, reused since
    assert insert.split(" VALUES ")[0] == statement.split(" VALUES ")[0]


def test_an_expression_as_a_value_is_inserted_by_django():
    post = Post(owner=make_user(), title=Upper(Value("shout")))
    post.save(force_insert=True)
    assert row(post)["title"] == "SHOUT"


def test_a_database_error_is_djangos():
    post = make_post(owner=make_user())
    duplicate = Post(id=post.id, owner=post.owner, title="Same key")
    with pytest.raises(IntegrityError):
        duplicate.save(force_insert=True)
