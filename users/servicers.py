"""gRPC transport for users: ``users.UserController``."""

from grpc_ext.generics import ModelService
from users.selectors import user_list
from users.serializers import UserProtoSerializer


class UserService(ModelService):
    serializer_class = UserProtoSerializer

    def get_queryset(self):
        return user_list()
