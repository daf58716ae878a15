"""Services are found in each installed app's servicers.py; no list is kept anywhere."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_ext.contract.discovery import discover_services, project_contracts
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


def test_a_servicers_module_importing_stubs_not_generated_yet_is_a_clear_command_error(tmp_path, monkeypatch, settings):
    """generateproto must import servicers.py before it can write the stubs servicers.py imports."""
    from django.core.management import CommandError, call_command

    package = tmp_path / "gadgets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "servicers.py").write_text("from protos import gadgets_pb2  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "gadgets"]
    with pytest.raises(CommandError, match="gadgets.servicers imports stubs that generateproto has not written yet"):
        call_command("generateproto", "--check")
