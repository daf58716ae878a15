"""Services are found in each installed app's servicers.py; no list is kept anywhere."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_ext.discovery import discover_services, project_contracts
from posts.serializers import PostProtoSerializer
from users.serializers import UserProtoSerializer


def test_every_service_of_the_installed_apps_is_found_once():
    found = {(service.grpc_module, service.name): service.service_class.__name__ for service in discover_services()}
    assert found == {
        ("protos.users_pb2_grpc", "UserController"): "UserService",
        ("protos.auth_pb2_grpc", "AuthController"): "AuthService",
        ("protos.posts_pb2_grpc", "PostController"): "PostService",
    }


def test_a_serializer_without_proto_class_means_the_app_labels_module():
    assert PostProtoSerializer.proto_class_path() == "protos.posts_pb2.Post"
    assert UserProtoSerializer.proto_class_path() == "protos.users_pb2.User"
    assert {contract.package: contract.serializer_class for contract in project_contracts()} == {
        "users": UserProtoSerializer,
        "posts": PostProtoSerializer,
    }


def test_the_server_serves_every_discovered_service(grpc_channel):
    health = health_pb2_grpc.HealthStub(grpc_channel)
    for name in ("users.UserController", "auth.AuthController", "posts.PostController"):
        response = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name
    unknown = grpc_channel.unary_unary("/notes.NoteController/List")
    with pytest.raises(grpc.RpcError) as excinfo:
        unknown(b"")
    assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED
