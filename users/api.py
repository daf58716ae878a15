"""REST transport for signup and sessions: thin DRF views over ``users.services``.

A user is shown by the same serializer as over gRPC, so both show the same fields.
"""

from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from grpc_ext.rest import UncountedRetriesMixin, idempotent_response, with_etag
from users.serializers import UserProtoSerializer
from users.services import auth_login, auth_logout, auth_refresh
from users.throttling import LoginThrottle, SignupThrottle


class CredentialsSerializer(serializers.Serializer):
    email = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class OpenView(APIView):
    """An entry point for callers without a token.

    It reads no ``Authorization`` header, so that a client sending an expired
    access token with every request can still refresh it.
    """

    authentication_classes = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request) -> str:
        """Keep bad credentials a 401 (DRF makes it a 403 for a view without authenticators)."""
        return JWTAuthentication().authenticate_header(request)

    def validated(self, serializer_class: type[serializers.Serializer]) -> dict:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class SignupView(UncountedRetriesMixin, OpenView):
    throttle_classes = [SignupThrottle]

    def post(self, request):
        return with_etag(idempotent_response(request, lambda: self.signup(request)))

    def signup(self, request) -> Response:
        serializer = UserProtoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.save()
        return Response(UserProtoSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginView(OpenView):
    throttle_classes = [LoginThrottle]

    def post(self, request):
        return Response(auth_login(**self.validated(CredentialsSerializer)))


class TokenRefreshView(OpenView):
    def post(self, request):
        return Response(auth_refresh(**self.validated(RefreshSerializer)))


class LogoutView(OpenView):
    def post(self, request):
        auth_logout(**self.validated(RefreshSerializer))
        return Response(status=status.HTTP_204_NO_CONTENT)
