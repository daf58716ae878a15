"""The Sample message: every field readable except the token, which is write-only."""

from grpc_ext.wire.serializers import ModelProtoSerializer
from tests.support.typesapp.models import Sample

SAMPLE_FIELDS = [
    "id",
    "owner",
    "name",
    "nickname",
    "count",
    "big",
    "ratio",
    "price",
    "flag",
    "status",
    "happened_at",
    "payload",
    "reference",
    "api_token",
    "created",
]


class SampleProtoSerializer(ModelProtoSerializer):
    class Meta:
        model = Sample
        # Compiled into a scratch package during the test session (tests/test_proto_types.py).
        proto_class = "typesprotos.samples_pb2.Sample"
        fields = SAMPLE_FIELDS
        read_only_fields = ["id", "created"]
        extra_kwargs = {"api_token": {"write_only": True}}
