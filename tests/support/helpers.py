"""Assertions on what a gRPC client sees and ways to call as a given user (from ``grpc_ext.testing``),
and ways to break the database on purpose."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, connections

from grpc_ext.testing import access_token, assert_status, auth_metadata, bad_request_fields, with_metadata

#: The transport the servers of this test run use (``GRPC_TRANSPORT``; CI runs the servicer tests once per transport).
TRANSPORT = os.environ.get("GRPC_TRANSPORT", "").strip() or "aio"


def aio_only(reason: str):
    """Mark a test of a guarantee only grpc.aio keeps; ``reason`` says what the native transport does instead."""
    return pytest.mark.skipif(TRANSPORT != "aio", reason=reason)


def native_only(reason: str):
    """Mark a test of the native transport's own behaviour."""
    return pytest.mark.skipif(TRANSPORT != "native", reason=reason)


__all__ = [
    "TRANSPORT",
    "access_token",
    "aio_only",
    "native_only",
    "assert_status",
    "auth_metadata",
    "bad_request_fields",
    "database_error",
    "database_url_of_this_run",
    "unreachable_database",
    "with_metadata",
]


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


def database_url_of_this_run() -> str:
    """Return the URL of the database the tests run on, for a server in another process."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    return f"postgres://{config['USER']}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


#: The project's directory, where the web process runs.
PROJECT_DIR = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_web(
    env: dict[str, str], *granian_args: str, timeout: float = 30.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the production web command (granian, one worker) serving ``demo.wsgi`` with ``env`` on a free port.

    Yields its URL and process once ``/healthz/`` answers 200. Fails the test
    with granian's output if it exits or does not answer within ``timeout``; stopped afterwards.
    """
    from tests.conftest import free_port

    port = free_port()
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", "1", *granian_args, "demo.wsgi:application"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"granian exited: {server.communicate()[0]}")
                if time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"granian did not answer: {server.communicate()[0]}")
                time.sleep(0.1)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)
