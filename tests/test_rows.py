"""Raw rows on PostgreSQL: UUID columns stay text only where the message wants exactly that text."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework import serializers

from grpc_ext.wire.rows import RawRows
from posts.models import Post
from posts.serializers import PostProtoSerializer

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg2's UUID typecaster")


class HexIdPostSerializer(PostProtoSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)


def raw_rows(serializer_class) -> RawRows:
    builder = serializer_class.get_codec().builder
    return RawRows(builder, Post.objects.values_list(*builder.columns))


def test_uuid_columns_come_as_the_text_of_str_uuid(post):
    raw = raw_rows(PostProtoSerializer)
    assert raw.uuid_as_text
    row = next(raw.rows())
    assert str(post.id) in row and str(post.owner_id) in row


def test_a_uuid_shown_in_another_format_is_parsed_as_usual(post):
    assert not raw_rows(HexIdPostSerializer).uuid_as_text
