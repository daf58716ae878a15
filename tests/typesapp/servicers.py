from grpc_ext.generics import ModelService
from tests.typesapp.models import Sample
from tests.typesapp.serializers import SampleProtoSerializer


class SampleService(ModelService):
    queryset = Sample.objects.all()
    serializer_class = SampleProtoSerializer
