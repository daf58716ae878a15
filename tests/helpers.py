"""Assertions on what a gRPC client sees."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest


def assert_status(call: Callable, code: grpc.StatusCode, *, details_contain: str = "") -> grpc.RpcError:
    """Call ``call``, expect it to fail with ``code``, and return the error."""
    with pytest.raises(grpc.RpcError) as excinfo:
        call()
    error = excinfo.value
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    assert details_contain in error.details()
    return error
