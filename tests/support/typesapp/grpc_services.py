"""Not ``servicers.py``: this service is served only by tests/test_proto_types.py, with a scratch proto."""

from grpc_ext.services.generics import ModelService
from grpc_ext.services.permissions import AllowAny
from tests.support.typesapp.models import Sample
from tests.support.typesapp.serializers import SampleProtoSerializer


class SampleService(ModelService):
    """Open to anonymous callers: the type round-trip tests are not about auth."""

    queryset = Sample.objects.all()
    serializer_class = SampleProtoSerializer
    permission_classes = [AllowAny]
