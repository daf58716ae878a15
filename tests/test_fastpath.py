"""The fast path builds the same bytes as the reference path (DRF ``.data`` + json_format).

Every field type the proto generator knows is covered by a test-only model
(never migrated: its instances stay in memory) whose proto is generated and
compiled by ``grpc_ext.contract.protogen`` for this module.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core import signing
from django.db import models
from google.protobuf import json_format
from rest_framework import serializers

from grpc_ext.contract.protogen import ProtoContract, compile_protos
from grpc_ext.wire.readers import message_to_dict, read_message
from grpc_ext.wire.rows import uuid_text
from grpc_ext.wire.serializers import ModelProtoSerializer, skip_surrogate_checks
from posts.models import Post
from posts.serializers import PostProtoSerializer
from protos import posts_pb2, users_pb2
from tests.support.factories import make_post, make_user
from users.serializers import UserProtoSerializer


class Everything(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey("users.User", null=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=50)
    body = models.TextField(blank=True)
    email = models.EmailField(blank=True)
    flag = models.BooleanField(default=False)
    count = models.IntegerField(default=0)
    big = models.BigIntegerField(default=0)
    ratio = models.FloatField(default=0.0)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    at = models.DateTimeField()
    day = models.DateField()
    data = models.JSONField(default=dict)
    maybe_count = models.IntegerField(null=True)
    maybe_name = models.CharField(max_length=20, null=True)
    maybe_flag = models.BooleanField(null=True)
    maybe_at = models.DateTimeField(null=True)
    maybe_data = models.JSONField(null=True)

    class Meta:
        app_label = "fastpath_tests"


class EverythingSerializer(ModelProtoSerializer):
    class Meta:
        model = Everything
        proto_class = None  # set by the fixture once the proto is compiled
        fields = "__all__"


class WithMethodField(EverythingSerializer):
    """A field the fast path cannot compile: the whole class keeps the reference path."""

    name = serializers.SerializerMethodField()

    class Meta(EverythingSerializer.Meta):
        pass

    def get_name(self, obj) -> str:
        return obj.name.upper()


@pytest.fixture(scope="module")
def everything_pb2(tmp_path_factory):
    """Generate and compile the proto of ``EverythingSerializer``; point the serializers at it."""
    directory = tmp_path_factory.mktemp("fastpath_proto")
    proto = directory / "fastpath_everything.proto"
    proto.write_text(ProtoContract(package="fastpath_tests", serializer_class=EverythingSerializer).render())
    compile_protos([proto], directory, directory)
    sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module("fastpath_everything_pb2")
    finally:
        sys.path.remove(str(directory))
    EverythingSerializer.Meta.proto_class = module.Everything
    return module


def everything(**fields) -> Everything:
    values = {
        "name": "Zoë — ✓",
        "at": datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        "day": date(2024, 2, 29),
    }
    return Everything(**{**values, **fields})


INSTANCES = {
    "defaults": lambda: everything(),
    "every field set": lambda: everything(
        owner_id=uuid.uuid4(),
        body="line\nbreak",
        email="a@example.com",
        flag=True,
        count=-7,
        big=2**53 + 1,
        ratio=-1.5e-7,
        price=Decimal("123456.70"),
        data={"a": [1, 2.5, None, True, "x"], "b": {}},
        maybe_count=0,
        maybe_name="",
        maybe_flag=False,
        maybe_data={"nested": {"deep": [[]]}},
        maybe_at=datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ),
    "non-UTC zones": lambda: everything(
        at=datetime(2024, 3, 31, 2, 30, 0, 123000, tzinfo=ZoneInfo("Europe/Paris")),
        maybe_at=datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ),
    "naive datetime": lambda: everything(at=datetime(2020, 1, 1, 12, 0, 0, 5)),
    "extremes": lambda: everything(
        count=2**31 - 1,
        big=-(2**63),
        ratio=1e308,
        price=Decimal("-0.01"),
        maybe_count=-(2**31),
        name="",
        at=datetime(1, 1, 1, tzinfo=UTC),
        day=date(9999, 12, 31),
    ),
}


def wire(message) -> bytes:
    return message.SerializeToString(deterministic=True)


@pytest.mark.parametrize("case", INSTANCES)
def test_every_field_type_encodes_to_the_reference_bytes(everything_pb2, case):
    instance = INSTANCES[case]()
    serializer = EverythingSerializer(instance)

    assert EverythingSerializer.get_codec().builder is not None, "the fast path must be compiled here"
    assert wire(serializer.message) == wire(EverythingSerializer(instance).reference_message)


def test_list_encodes_every_row_to_the_reference_bytes(everything_pb2):
    instances = [make() for make in INSTANCES.values()]

    fast = EverythingSerializer(instances, many=True).message
    reference = EverythingSerializer(instances, many=True)
    reference = reference.data_to_message(reference.data)

    assert [wire(message) for message in fast] == [wire(message) for message in reference]


def test_rows_of_every_field_type_encode_to_the_reference_bytes(everything_pb2):
    """``values_list`` tuples (the columns' values, as on an instance) build the reference bytes."""
    instances = [make() for make in INSTANCES.values()]
    builder = EverythingSerializer.get_codec().builder
    assert builder is not None, "every field of Everything is a column: the row path must be compiled"
    rows = [
        (*(getattr(instance, column) for column in builder.columns), "extra ordering value") for instance in instances
    ]

    fast = builder.build_rows(rows)

    reference = [EverythingSerializer(instance).reference_message for instance in instances]
    assert [wire(message) for message in fast] == [wire(message) for message in reference]


def test_a_field_that_is_no_column_keeps_instances_for_lists(everything_pb2):
    """A field read from a property has no column to select: lists build from instances."""

    class WithProperty(EverythingSerializer):
        name = serializers.CharField(source="upper_name", read_only=True)

        class Meta(EverythingSerializer.Meta):
            pass

    Everything.upper_name = property(lambda self: self.name.upper())
    try:
        assert WithProperty.get_codec().builder is not None
        assert WithProperty.get_codec().columns is None
        assert WithProperty([everything(name="a")], many=True).message[0].name == "A"
    finally:
        del Everything.upper_name


def test_unset_nullable_fields_stay_unset_and_set_ones_are_present(everything_pb2):
    unset = EverythingSerializer(everything()).message
    zero = EverythingSerializer(everything(maybe_count=0, maybe_name="", maybe_flag=False)).message

    assert not any(unset.HasField(name) for name in ("maybe_count", "maybe_name", "maybe_flag", "maybe_at"))
    assert all(zero.HasField(name) for name in ("maybe_count", "maybe_name", "maybe_flag"))


def test_a_field_the_fast_path_cannot_compile_keeps_the_reference_path(everything_pb2):
    WithMethodField.Meta.proto_class = everything_pb2.Everything
    instance = everything(name="shout")

    assert WithMethodField.get_codec().builder is None
    assert WithMethodField(instance).message.name == "SHOUT"


def test_fast_path_off_in_settings_uses_the_reference_path(everything_pb2, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "FAST_PATH": False}

    instance = everything()

    assert EverythingSerializer.get_codec().builder is None
    assert wire(EverythingSerializer(instance).message) == wire(EverythingSerializer(instance).reference_message)


@pytest.mark.django_db
def test_project_serializers_encode_saved_rows_to_the_reference_bytes():
    post = make_post(title="Hello", description="")
    user = post.owner
    post.refresh_from_db()
    user.refresh_from_db()

    assert PostProtoSerializer.get_codec().builder is not None
    assert UserProtoSerializer.get_codec().builder is not None
    assert wire(PostProtoSerializer(post).message) == wire(PostProtoSerializer(post).reference_message)
    assert wire(UserProtoSerializer(user).message) == wire(UserProtoSerializer(user).reference_message)
    assert "password" not in UserProtoSerializer(user).message.DESCRIPTOR.fields_by_name


def test_fields_are_built_once_per_class_but_bound_to_each_serializer(everything_pb2):
    first, second = EverythingSerializer(), EverythingSerializer()

    assert list(first.fields) == list(second.fields)
    assert first.fields["name"] is not second.fields["name"]
    assert first.fields["name"].parent is first and second.fields["name"].parent is second


REQUESTS = {
    "post create, empty": lambda pb2: posts_pb2.PostCreateRequest(),
    "post update": lambda pb2: posts_pb2.PostUpdateRequest(id=str(uuid.uuid4()), title="t✓", description=""),
    "post partial update": lambda pb2: posts_pb2.PostPartialUpdateRequest(
        id="x", title="t", update_mask={"paths": ["title", "description"]}
    ),
    "user create": lambda pb2: users_pb2.UserCreateRequest(email="a@example.com", password="p"),
    "everything, unset": lambda pb2: pb2.EverythingCreateRequest(),
    "everything, set": lambda pb2: json_format.ParseDict(
        {
            "owner": "o",
            "name": "n",
            "flag": True,
            "count": -3,
            "big": str(2**62),
            "ratio": "NaN",
            "price": "1.50",
            "at": "2024-01-02T03:04:05.678901Z",
            "day": "2024-01-02",
            "data": {"k": [1, "v", None]},
            "maybe_count": 0,
            "maybe_name": "",
            "maybe_flag": False,
            "maybe_at": "1970-01-01T00:00:00Z",
        },
        pb2.EverythingCreateRequest(),
    ),
    "everything, infinities": lambda pb2: pb2.EverythingCreateRequest(ratio=float("-inf"), big=-1),
}


@pytest.mark.parametrize("case", REQUESTS)
def test_requests_read_into_the_same_dict_as_message_to_dict(everything_pb2, case):
    message = REQUESTS[case](everything_pb2)

    assert read_message(message) == message_to_dict(message)


#: Batch items and whether the compiled check accepts them (otherwise DRF validates them, errors and all).
BATCH_ITEMS = [
    ({"title": "Fine", "description": "x"}, True),
    ({"title": "  padded\t", "description": " \n "}, True),
    ({"title": "x" * 100, "description": "y" * 10_000}, True),
    ({"title": "ok", "description": "", "unknown": 1}, True),
    ({"title": "", "description": ""}, False),
    ({"title": "   ", "description": "d"}, False),
    ({"title": "x" * 101, "description": ""}, False),
    ({"title": "ok", "description": "y" * 10_001}, False),
    ({"title": "nul\x00", "description": ""}, False),
    ({"title": "ok", "description": "nul\x00"}, False),
    ({"title": "ok"}, False),  # the default: DRF's
    ({"description": "no title"}, False),
    ({"title": None, "description": ""}, False),
    ({"title": 5, "description": ""}, False),
    ("not a dict", False),
]


def test_batch_items_validate_as_drf_validates_them():
    """The compiled check accepts plain valid items; every item validates to DRF's value or DRF's errors."""
    items = [item for item, _ in BATCH_ITEMS]
    fast = PostProtoSerializer(data=items, many=True)
    reference = serializers.ListSerializer(child=PostProtoSerializer(), data=items)
    for serializer in (fast, reference):
        skip_surrogate_checks(serializer.child)
    accept = fast._accept_item

    assert accept is not None
    assert [accept(item) is not None for item in items] == [accepted for _, accepted in BATCH_ITEMS]
    assert not fast.is_valid() and not reference.is_valid()
    assert fast.errors == reference.errors
    valid = [item for item, accepted in BATCH_ITEMS if accepted] + [{"title": "ok"}]
    fast, reference = (
        PostProtoSerializer(data=valid, many=True),
        serializers.ListSerializer(child=PostProtoSerializer(), data=valid),
    )
    assert fast.is_valid() and reference.is_valid()
    assert fast.validated_data == reference.validated_data


def test_a_field_method_keeps_drf_validation_for_batch_items():
    class ShoutedTitles(PostProtoSerializer):
        def validate_title(self, value):
            return value.upper()

    serializer = ShoutedTitles(data=[{"title": "quiet", "description": ""}], many=True)

    assert serializer._accept_item is None
    assert serializer.is_valid() and serializer.validated_data[0]["title"] == "QUIET"


def stream_and_pages(stub, request_class, list_request_class) -> tuple[list[bytes], list[bytes]]:
    """Return every List page (page_size 2, following the tokens) and every Stream batch, as bytes."""
    pages, token = [], ""
    while True:
        page = stub.List(list_request_class(page_size=2, page_token=token))
        pages.append(wire(page))
        token = page.next_page_token
        if not token:
            break
    batches = [wire(batch) for batch in stub.Stream(request_class(batch_size=2))]
    return pages, batches


def test_list_and_stream_rows_match_the_reference_path_over_the_wire(
    posts_stub, users_stub, user, settings, monkeypatch
):
    """List pages (tokens included) and Stream batches are the same bytes with the row path and without it."""
    # A page token is signed with the time in seconds: the two runs must not straddle a second.
    frozen = signing.b62_encode(int(time.time()))
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda signer: frozen)
    posts = [
        make_post(owner=user, title=f"Post {index}", description="" if index % 2 else "text ✓") for index in range(5)
    ]
    # Stored without a fraction of a second, and before the epoch.
    Post.objects.filter(pk=posts[1].pk).update(created=datetime(2024, 1, 1, tzinfo=UTC))
    Post.objects.filter(pk=posts[2].pk).update(updated=datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC))
    make_user(email="second@example.com")
    assert PostProtoSerializer.get_codec().columns is not None
    assert UserProtoSerializer.get_codec().columns is not None
    calls = {
        "posts": lambda: stream_and_pages(posts_stub, posts_pb2.PostStreamRequest, posts_pb2.PostListRequest),
        "users": lambda: stream_and_pages(users_stub, users_pb2.UserStreamRequest, users_pb2.UserListRequest),
    }
    fast = {name: call() for name, call in calls.items()}

    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "FAST_PATH": False}
    assert PostProtoSerializer.get_codec().columns is None
    reference = {name: call() for name, call in calls.items()}

    assert fast == reference
    assert len(fast["posts"][0]) == 3 and len(fast["posts"][1]) == 3


@pytest.mark.parametrize(
    "raw",
    ["0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF", "0" * 32, "f" * 32, "1" * 32],
)
def test_uuid_text_is_the_uuid_string(raw):
    assert uuid_text(raw) == str(uuid.UUID(raw))


@pytest.mark.parametrize("raw", ["not-a-uuid", "g" * 32, "{" + "0" * 30 + "}"])
def test_uuid_text_refuses_what_uuid_refuses(raw):
    with pytest.raises(ValueError):
        uuid.UUID(raw)
    with pytest.raises(ValueError):
        uuid_text(raw)
