"""The committed protos and stubs are what generateproto produces from the serializers now."""

from __future__ import annotations

import importlib

import pytest
from django.core.management import CommandError, call_command


def test_committed_protos_and_stubs_are_up_to_date():
    call_command("generateproto", "--check")


def test_check_fails_and_shows_a_diff_when_a_committed_file_drifted(settings, tmp_path, capsys):
    for path in (settings.BASE_DIR / "protos").iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "posts.proto").write_text((tmp_path / "posts.proto").read_text().replace("title", "headline"))
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path)}
    with pytest.raises(CommandError, match="posts.proto"):
        call_command("generateproto", "--check")
    assert "-  string headline = 3;" in capsys.readouterr().out


def test_generated_grpc_module_imports_its_pb2_from_the_protos_package():
    module = importlib.import_module("protos.posts_pb2_grpc")
    assert module.protos_dot_posts__pb2 is importlib.import_module("protos.posts_pb2")


def test_hand_written_protos_are_compiled_with_the_generated_ones(settings, tmp_path):
    """Editing protos/auth.proto without regenerating leaves its stubs stale, and --check says so."""
    for path in (settings.BASE_DIR / "protos").iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "auth.proto").write_text((tmp_path / "auth.proto").read_text().replace("Logout", "SignOut"))
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTO_DIR": str(tmp_path)}
    with pytest.raises(CommandError, match="auth_pb2"):
        call_command("generateproto", "--check")


def test_a_missing_hand_written_proto_is_a_command_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "STATIC_PROTOS": ["missing.proto"]}
    with pytest.raises(CommandError, match="missing.proto"):
        call_command("generateproto", "--check")
