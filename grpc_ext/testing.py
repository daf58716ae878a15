"""A pytest plugin for projects built on grpc_ext: ``pytest_plugins = ["grpc_ext.testing"]``.

Fixtures (pytest-django's database fixtures underneath):

- ``grpc_server``: every service the server finds (``build_server``) served in-process on
  127.0.0.1:<free port> for the whole session, over the test database
  (``.host``, ``.port``, ``.address``); ``grpc_address`` is its address and
  ``grpc_channel`` a channel to it.
- ``grpc_client``: a factory of ``grpc_ext.client.Client`` on that server,
  ``grpc_client(user)`` signed in as ``user`` (with an access token made for
  them, no password needed), ``grpc_client()`` anonymous. It needs a
  transactional database, as the server reads the rows from its own threads.

And the assertions tests make about what a client sees: ``assert_status``,
``bad_request_fields``, plus ``auth_metadata`` and ``with_metadata`` for
calling raw stubs as a user.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from grpc_ext.client import Client, ClientError

__all__ = [
    "access_token",
    "assert_status",
    "auth_metadata",
    "bad_request_fields",
    "field_violations",
    "start_live_server",
    "with_metadata",
]


# --------------------------------------------------------------------------- the server


def start_live_server(address: str = "127.0.0.1:0") -> tuple[int, Callable[[], None]]:
    """Start every service on ``address`` in this process; return the port and a function that stops it."""
    from grpc_ext.server.transport import serve_in_background

    server = serve_in_background(address, max_workers=4, reflection_enabled=True)

    def stop() -> None:
        server.stop(None).wait()

    return server.port, stop


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Close the server threads' connections after each RPC.

    Otherwise they stay open past the session and PostgreSQL refuses to drop
    the test database.
    """
    from django.db import connections

    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@dataclass(frozen=True)
class LiveServer:
    """The session's server: where it listens."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture(scope="session")
def grpc_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """Serve every service on 127.0.0.1:<free port> for the whole session."""
    with django_db_blocker.unblock():
        port, stop = start_live_server("127.0.0.1:0")
        try:
            yield LiveServer("127.0.0.1", port)
        finally:
            stop()


@pytest.fixture(scope="session")
def grpc_address(grpc_server: LiveServer) -> str:
    """The live server's address, ``127.0.0.1:<port>``."""
    return grpc_server.address


@pytest.fixture(scope="session")
def grpc_channel(grpc_address: str) -> Iterator[grpc.Channel]:
    """A plain channel to the live server, ready."""
    with grpc.insecure_channel(grpc_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


@pytest.fixture
def grpc_client(grpc_address: str, transactional_db: None) -> Iterator[Callable[..., Client]]:
    """Return a factory: ``grpc_client(user=None, **client_options)`` is a ``Client`` on the live server.

    With a user, every call carries an access token made for that user.
    The clients are closed after the test.
    """
    clients: list[Client] = []

    def make(user: Any = None, **options: Any) -> Client:
        if user is not None:
            options.setdefault("token", access_token(user))
        client = Client(grpc_address, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- assertions


def assert_status(call: Callable[[], Any], code: grpc.StatusCode, *, details_contain: str = "") -> grpc.RpcError:
    """Call ``call``, expect it to fail with ``code``, and return the error (a stub's or a ``ClientError``)."""
    with pytest.raises(grpc.RpcError) as excinfo:
        result = call()
        if hasattr(result, "__next__"):  # a stream fails when read
            list(result)
    error = excinfo.value
    details = error.details() or ""
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {details}"
    assert details_contain in details, details
    return error


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """Return the field of every ``google.rpc.BadRequest`` violation in the error's rich status."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def field_violations(error: grpc.RpcError) -> dict[str, list[str]]:
    """Return field -> messages of the error's ``google.rpc.BadRequest``."""
    return ClientError.from_rpc_error(error).field_violations


# --------------------------------------------------------------------------- calling as a user


def access_token(user: Any) -> str:
    """An access token for ``user``, as Login would return."""
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


def auth_metadata(user_or_token: Any) -> tuple[tuple[str, str], ...]:
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

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)


def with_metadata(channel: grpc.Channel, user: Any) -> grpc.Channel:
    """Return ``channel`` with ``user``'s access token added to every call."""
    return grpc.intercept_channel(channel, _AddMetadata(auth_metadata(user)))
