"""System checks report a misconfigured GRPC_FRAMEWORK before any RPC runs."""

from __future__ import annotations

from grpc_ext.checks import check_interceptors, check_protos


def test_the_project_configuration_passes():
    assert check_protos() == [] and check_interceptors() == []


def test_a_proto_whose_serializer_cannot_be_imported_is_an_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTOS": {"ghost": "posts.serializers.Ghost"}}
    assert [error.id for error in check_protos()] == ["grpc_ext.E001"]


def test_a_proto_declared_by_something_else_than_a_model_proto_serializer_is_an_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PROTOS": {"posts": "posts.models.Post"}}
    assert [error.id for error in check_protos()] == ["grpc_ext.E002"]


def test_an_interceptor_that_cannot_be_imported_is_an_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "SERVER_INTERCEPTORS": ["grpc_ext.interceptors.Nope"]}
    assert [error.id for error in check_interceptors()] == ["grpc_ext.E004"]
