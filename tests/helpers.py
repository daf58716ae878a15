"""Assertions on what a gRPC client sees, and ways to call as a given user."""

from __future__ import annotations

import socket
from collections import namedtuple
from collections.abc import Callable

import grpc
import pytest
from django.db import connection, connections
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rest_framework_simplejwt.tokens import AccessToken

from users.models import User


def assert_status(call: Callable, code: grpc.StatusCode, *, details_contain: str = "") -> grpc.RpcError:
    """Call ``call``, expect it to fail with ``code``, and return the error."""
    with pytest.raises(grpc.RpcError) as excinfo:
        call()
    error = excinfo.value
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    assert details_contain in error.details(), error.details()
    return error


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """Return the field of every ``google.rpc.BadRequest`` violation in the error's rich status."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def access_token(user: User) -> str:
    return str(AccessToken.for_user(user))


def auth_metadata(user_or_token: User | str) -> tuple[tuple[str, str], ...]:
    """Return the ``authorization`` metadata of a call made as a user (or with a raw token)."""
    token = user_or_token if isinstance(user_or_token, str) else access_token(user_or_token)
    return (("authorization", f"Bearer {token}"),)


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _AddMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    def _details(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


def with_metadata(channel: grpc.Channel, user: User) -> grpc.Channel:
    """Return ``channel`` with ``user``'s access token added to every call."""
    return grpc.intercept_channel(channel, _AddMetadata(auth_metadata(user)))


def database_error(settings_changes: dict, sql: str = "SELECT 1", params=()) -> Exception:
    """Run ``sql`` on a new connection to the test database with ``settings_changes``; return what it raised."""
    wrapper = type(connections["default"])({**connection.settings_dict, **settings_changes}, alias="error-probe")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute(sql, params)
    except Exception as exc:
        return exc
    finally:
        wrapper.close()
    raise AssertionError(f"{sql} did not fail")


def unreachable_database(tmp_path) -> dict:
    """Return settings changes that point at a database that cannot be used: a garbage file, a closed port."""
    if connection.vendor == "sqlite":
        path = tmp_path / "not-a-database.sqlite3"
        path.write_bytes(b"garbage " * 1000)
        return {"NAME": str(path)}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return {"HOST": "127.0.0.1", "PORT": port}
