"""gRPC transport for users (``users.UserController``) and their tokens (``auth.AuthController``)."""

from google.protobuf import empty_pb2

from grpc_ext.generics import ModelService, Service
from grpc_ext.permissions import AllowAny, IsAuthenticated
from protos import auth_pb2
from users.permissions import IsSelfOrStaff
from users.selectors import user_list
from users.serializers import UserProtoSerializer
from users.services import auth_login, auth_logout, auth_refresh
from users.throttling import LoginThrottle, SignupThrottle


class UserService(ModelService):
    """Signup (``Create``) is open and rate limited; everything else needs a token."""

    serializer_class = UserProtoSerializer
    permission_classes = [IsAuthenticated, IsSelfOrStaff]

    def get_queryset(self):
        """Only the accounts the caller may see (``users.rules.visible_users``), for every RPC."""
        return user_list(viewer=self.user)

    def get_permissions(self):
        if self.action == "Create":
            return [AllowAny()]
        return super().get_permissions()

    def get_throttles(self):
        if self.action == "Create":
            return [SignupThrottle()]
        return super().get_throttles()


class AuthService(Service):
    """Exchange credentials for JWTs; the refresh token is the credential of Refresh and Logout.

    The ``authorization`` metadata is not read here, so that a client sending
    an expired access token with every call can still refresh it.
    """

    #: Hand-written in protos/auth.proto (sessions are not a model).
    grpc_service = "protos.auth_pb2_grpc.AuthController"
    authentication_classes = []
    permission_classes = [AllowAny]

    def get_throttles(self):
        if self.action == "Login":
            return [LoginThrottle()]
        return super().get_throttles()

    def Login(self, request, context):
        return auth_pb2.TokenPair(**auth_login(email=request.email, password=request.password))

    def Refresh(self, request, context):
        return auth_pb2.TokenPair(**auth_refresh(refresh=request.refresh))

    def Logout(self, request, context):
        auth_logout(refresh=request.refresh)
        return empty_pb2.Empty()
