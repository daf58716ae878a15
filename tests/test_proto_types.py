"""Every field type the generator maps round-trips exactly through a real channel.

The Sample model (tests/support/typesapp) has one field of each kind. Its proto is
rendered and compiled by the project's generator code into a scratch package
for the session, and served on its own server.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
import pytest
from django.db import connection
from google.protobuf import field_mask_pb2, timestamp_pb2

from grpc_ext.contract.protogen import ProtoContract, compile_protos
from grpc_ext.server.transport import serve_in_background
from tests.support.factories import make_user
from tests.support.helpers import assert_status
from tests.support.typesapp.grpc_services import SampleService
from tests.support.typesapp.models import Sample
from tests.support.typesapp.serializers import SampleProtoSerializer

PARIS = ZoneInfo("Europe/Paris")
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="session")
def samples_protos(tmp_path_factory):
    """Generate ``typesprotos.samples_pb2`` and ``_pb2_grpc`` and make them importable."""
    root = tmp_path_factory.mktemp("generated")
    package = root / "typesprotos"
    package.mkdir()
    proto = package / "samples.proto"
    proto.write_text(ProtoContract(package="samples", serializer_class=SampleProtoSerializer).render())
    compile_protos([proto], root, package)
    sys.path.insert(0, str(root))
    try:
        yield tuple(importlib.import_module(f"typesprotos.samples_{suffix}") for suffix in ("pb2", "pb2_grpc"))
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def samples_address(samples_protos, django_db_setup, django_db_blocker):
    _, samples_pb2_grpc = samples_protos
    with django_db_blocker.unblock():
        server = serve_in_background(
            handlers_hook=lambda server: samples_pb2_grpc.add_SampleControllerServicer_to_server(
                SampleService.as_servicer(), server
            ),
            max_workers=2,
        )
        yield f"127.0.0.1:{server.port}"
        server.stop(None).wait()


@pytest.fixture
def pb2(samples_protos):
    return samples_protos[0]


@pytest.fixture
def stub(samples_protos, samples_address, transactional_db):
    with grpc.insecure_channel(samples_address) as channel:
        yield samples_protos[1].SampleControllerStub(channel)


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def test_every_field_round_trips_exactly(stub, pb2):
    owner = make_user()
    happened_at = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=PARIS)
    reference = uuid.uuid4()
    payload = {"n": 1, "nested": {"list": [1, 2.5, "x", None, True]}, "empty": {}}
    created = stub.Create(
        pb2.SampleCreateRequest(
            owner=str(owner.id),
            name="every type",
            nickname="nick",
            count=0,
            big=2**62,
            ratio=0.1,
            price="-98765.4321098765",
            flag=False,
            status="published",
            happened_at=timestamp(happened_at),
            payload=payload,
            reference=str(reference),
        )
    )
    row = Sample.objects.get(pk=created.id)
    fetched = stub.Retrieve(pb2.SampleRetrieveRequest(id=created.id))

    assert fetched == created
    assert row.owner_id == owner.id and fetched.owner == str(owner.id)
    assert (row.name, row.nickname, row.count, row.big, row.ratio) == ("every type", "nick", 0, 2**62, 0.1)
    assert (fetched.name, fetched.nickname, fetched.count, fetched.big, fetched.ratio) == (
        "every type",
        "nick",
        0,
        2**62,
        0.1,
    )
    assert row.price == Decimal("-98765.4321098765") and fetched.price == "-98765.4321098765"
    assert row.flag is False and fetched.HasField("flag") and fetched.flag is False
    assert row.status == fetched.status == "published"
    assert row.happened_at == happened_at and row.happened_at.microsecond == 123456
    assert fetched.happened_at.ToDatetime(tzinfo=dt.UTC) == happened_at
    assert row.payload == payload and type(row.payload["n"]) is int
    assert row.reference == reference and fetched.reference == str(reference)
    assert fetched.created.ToDatetime(tzinfo=dt.UTC) == row.created
    assert fetched.id == str(row.id)


def test_a_decimal_keeps_every_digit_on_the_wire(stub, pb2):
    """30 significant digits, more than a double holds, go in and come out as the same string.

    SQLite stores decimals as floating point (a Django limitation), so the row
    is compared on PostgreSQL only; the wire is compared on both.
    """
    exact = "12345678901234567890.0123456789"
    created = stub.Create(pb2.SampleCreateRequest(name="precise", price=exact))

    assert created.price == exact
    if connection.vendor != "sqlite":
        assert Sample.objects.get(pk=created.id).price == Decimal(exact)
        assert stub.Retrieve(pb2.SampleRetrieveRequest(id=created.id)).price == exact


def test_unset_optional_fields_differ_from_empty_and_zero(stub, pb2):
    unset = stub.Create(pb2.SampleCreateRequest(name="unset"))
    zero = stub.Create(pb2.SampleCreateRequest(name="zero", nickname="", count=0, ratio=0.0, flag=False, price="0"))

    unset_row, zero_row = Sample.objects.get(pk=unset.id), Sample.objects.get(pk=zero.id)
    assert (unset_row.nickname, unset_row.count, unset_row.ratio, unset_row.flag, unset_row.price) == (
        None,
        7,
        None,
        None,
        None,
    )
    assert (zero_row.nickname, zero_row.count, zero_row.ratio, zero_row.flag, zero_row.price) == ("", 0, 0.0, False, 0)
    for field in ("owner", "nickname", "ratio", "price", "flag", "reference"):
        assert not unset.HasField(field), field
    for field in ("happened_at", "payload"):
        assert not unset.HasField(field), field
    for field in ("nickname", "ratio", "price", "flag"):
        assert zero.HasField(field), field
    assert unset.count == 7 and unset.status == "draft"


def test_partial_update_with_a_masked_unset_optional_field_clears_it(stub, pb2):
    sample = Sample.objects.create(name="before", nickname="nick", happened_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    updated = stub.PartialUpdate(
        pb2.SamplePartialUpdateRequest(
            id=str(sample.id), update_mask=field_mask_pb2.FieldMask(paths=["nickname", "happened_at"])
        )
    )
    sample.refresh_from_db()
    assert (sample.nickname, sample.happened_at) == (None, None)
    assert not updated.HasField("nickname") and not updated.HasField("happened_at")


def test_choices_are_a_checked_string(stub, pb2):
    assert_status(
        lambda: stub.Create(pb2.SampleCreateRequest(name="bad", status="archived")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain='"archived" is not a valid choice.',
    )
    assert not Sample.objects.exists()


def test_a_decimal_with_more_digits_than_the_column_is_refused_not_rounded(stub, pb2):
    assert_status(
        lambda: stub.Create(pb2.SampleCreateRequest(name="bad", price="0.12345678901")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="price",
    )
    assert not Sample.objects.exists()


def test_malformed_uuid_and_unknown_owner_are_invalid(stub, pb2):
    assert_status(
        lambda: stub.Create(pb2.SampleCreateRequest(name="bad", reference="not-a-uuid")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="reference",
    )
    assert_status(
        lambda: stub.Create(pb2.SampleCreateRequest(name="bad", owner=str(uuid.uuid4()))),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="owner",
    )
    assert not Sample.objects.exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"happened_at": timestamp_pb2.Timestamp(seconds=253402300800)},  # year 10000
        {"happened_at": timestamp_pb2.Timestamp(seconds=-62135596801)},  # before year 1
        {"happened_at": timestamp_pb2.Timestamp(seconds=0, nanos=-1)},
        {"happened_at": timestamp_pb2.Timestamp(seconds=0, nanos=1_000_000_000)},
        {"happened_at": timestamp_pb2.Timestamp(seconds=2**62)},
        {"ratio": float("nan")},
        {"ratio": float("inf")},
        {"count": 2**31 - 1, "big": 2**63 - 1, "price": "1" * 100},
        {"price": "NaN"},
        {"price": "1e999999"},
        {"name": "a\x00b"},
        {"reference": "x" * 10_000},
        {"status": "x" * 10_000},
        {"nickname": "\x00"},
        {"payload": {"key\x00": "value"}},
        {"payload": {"key": "value\x00"}},
    ],
    ids=lambda fields: ",".join(fields)[:40] + ":" + repr(next(iter(fields.values())))[:30],
)
def test_hostile_values_of_every_type_are_invalid_argument_and_write_nothing(stub, pb2, fields):
    error = assert_status(lambda: stub.Create(pb2.SampleCreateRequest(**{"name": "hostile", **fields})), INVALID)
    assert len(error.details()) <= 1024
    assert not Sample.objects.exists()


def test_write_only_token_goes_in_but_never_comes_out(stub, pb2):
    created = stub.Create(pb2.SampleCreateRequest(name="secret", api_token="s3cr3t"))

    assert Sample.objects.get(pk=created.id).api_token == "s3cr3t"
    assert "api_token" in pb2.SampleCreateRequest.DESCRIPTOR.fields_by_name
    assert "api_token" not in pb2.Sample.DESCRIPTOR.fields_by_name
    assert b"s3cr3t" not in created.SerializeToString()


def test_read_only_fields_are_not_in_any_request(pb2):
    for request in (pb2.SampleCreateRequest, pb2.SampleUpdateRequest, pb2.SamplePartialUpdateRequest):
        assert "created" not in request.DESCRIPTOR.fields_by_name
    assert "id" not in pb2.SampleCreateRequest.DESCRIPTOR.fields_by_name


def test_field_types_on_the_wire(pb2):
    fields = pb2.Sample.DESCRIPTOR.fields_by_name
    assert fields["happened_at"].message_type.full_name == "google.protobuf.Timestamp"
    assert fields["payload"].message_type.full_name == "google.protobuf.Struct"
    strings = ("id", "owner", "price", "reference", "status", "name")
    assert all(fields[name].type == fields[name].TYPE_STRING for name in strings)
    assert fields["big"].type == fields["big"].TYPE_INT64
    assert fields["count"].type == fields["count"].TYPE_INT32
    assert fields["ratio"].type == fields["ratio"].TYPE_DOUBLE
    assert [name for name, field in fields.items() if field.has_presence and field.message_type is None] == [
        "owner",
        "nickname",
        "ratio",
        "price",
        "flag",
        "reference",
    ]
