"""System checks report what would fail a client before any RPC runs."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from grpc_ext.contract.checks import check_interceptors, check_retired_settings, check_services, relaxed_contract_checks
from grpc_ext.contract.discovery import DiscoveredService
from grpc_ext.services.generics import ModelService
from grpc_ext.wire.serializers import ModelProtoSerializer
from posts.models import Post
from posts.serializers import PostProtoSerializer
from posts.servicers import PostService


def strict_post_create(*, owner, title: str, description: str = "") -> Post:
    """A domain service that lists its fields by hand."""
    return Post.objects.create(owner=owner, title=title, description=description)


def serve_only(monkeypatch, *service_classes: type) -> None:
    """Make discovery find exactly ``service_classes``."""
    import grpc_ext.contract.discovery

    found = [DiscoveredService(cls, "protos.posts_pb2_grpc", "PostController") for cls in service_classes]
    monkeypatch.setattr(grpc_ext.contract.discovery, "discover_services", lambda: found)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_the_project_configuration_passes():
    assert check_services() == [] and check_interceptors() == []
    call_command("check", "--fail-level", "WARNING")


def test_a_domain_service_that_cannot_take_a_writable_field_is_an_error(monkeypatch):
    """The breakage of a field added to the model and serializer but listed by hand in the service."""

    class Meta(PostProtoSerializer.Meta):
        create_function = strict_post_create

    class Strict(PostService):
        serializer_class = type("StrictPostSerializer", (PostProtoSerializer,), {"Meta": Meta})

    serve_only(monkeypatch, Strict)
    assert "grpc_ext.E005" not in ids(check_services())  # title and description: both taken by name
    Meta.create_function = lambda *, owner, title: None
    errors = [message for message in check_services() if message.id == "grpc_ext.E005"]
    assert len(errors) == 1 and "cannot accept the writable field(s) description" in errors[0].msg


def test_a_field_the_model_lacks_is_an_error(monkeypatch):
    class Broken(ModelProtoSerializer):
        class Meta:
            model = Post
            fields = ["id", "nope"]

    class BrokenService(ModelService):
        serializer_class = Broken

    serve_only(monkeypatch, BrokenService)
    assert ids(check_services()) == ["grpc_ext.E003"]


def test_a_serializer_that_is_not_a_model_proto_serializer_is_an_error(monkeypatch):
    class NotOurs(ModelService):
        serializer_class = Post

    serve_only(monkeypatch, NotOurs)
    assert "grpc_ext.E002" in ids(check_services())


def test_a_stale_proto_is_an_error_except_while_the_schema_commands_run(settings, tmp_path, db):
    for path in (settings.BASE_DIR / "protos").iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "posts.proto").write_text((tmp_path / "posts.proto").read_text().replace("title", "headline"))
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path)}
    messages = check_services()
    assert ids(messages) == ["grpc_ext.E008"] and "posts.proto is stale" in messages[0].msg
    assert "`.venv/bin/python manage.py generateproto`" in messages[0].hint
    with relaxed_contract_checks():
        assert ids(check_services()) == ["grpc_ext.W001"]
    with pytest.raises(SystemCheckError, match="posts.proto is stale"):
        call_command("check")
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # the schema commands still run


def test_hints_name_the_virtualenv_python_since_a_bare_python_finds_no_django(settings):
    sources = [settings.BASE_DIR / "grpc_ext" / "contract" / "checks.py"]
    sources += sorted((settings.BASE_DIR / "grpc_ext" / "management" / "commands").glob("*.py"))
    for source in sources:
        text = source.read_text()
        assert "`python manage.py" not in text, source
    assert "`.venv/bin/python manage.py generateproto`" in sources[0].read_text()


def test_two_services_for_one_grpc_service_is_an_error(monkeypatch):
    class Other(PostService):
        pass

    serve_only(monkeypatch, PostService, Other)
    assert "grpc_ext.E006" in ids(check_services())


def test_the_retired_protos_setting_is_reported_not_ignored(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTOS": {"posts": "posts.serializers.PostProtoSerializer"}}
    assert ids(check_retired_settings()) == ["grpc_ext.W003"]


def test_an_interceptor_that_cannot_be_imported_is_an_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "SERVER_INTERCEPTORS": ["grpc_ext.server.interceptors.Nope"]}
    assert [error.id for error in check_interceptors()] == ["grpc_ext.E004"]
