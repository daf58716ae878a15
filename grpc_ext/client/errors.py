"""``ClientError``, what a failed call raises, and what it reads in a status's details (``google.rpc``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- errors


class StatusCodeValue:
    """A ``grpc.StatusCode`` that is also callable, as ``grpc.RpcError.code()`` is.

    ``error.code == grpc.StatusCode.NOT_FOUND`` and ``error.code() == grpc.StatusCode.NOT_FOUND``
    both hold, so code written for ``grpc.RpcError`` keeps working; ``name`` and
    ``value`` are the status code's. Compare with ``==``: it is not the enum member itself.
    """

    __slots__ = ("status_code",)

    def __init__(self, status_code: grpc.StatusCode):
        self.status_code = status_code

    def __call__(self) -> grpc.StatusCode:
        return self.status_code

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StatusCodeValue):
            other = other.status_code
        return bool(self.status_code == other)

    def __hash__(self) -> int:
        return hash(self.status_code)

    @property
    def name(self) -> str:
        return str(self.status_code.name)

    @property
    def value(self) -> tuple[int, str]:
        number, text = self.status_code.value
        return int(number), str(text)

    def __repr__(self) -> str:
        return repr(self.status_code)

    def __str__(self) -> str:
        return f"{self.status_code}"


class DetailsValue(str):
    """The status message, a ``str`` that is also callable, as ``grpc.RpcError.details()`` is."""

    def __call__(self) -> str:
        return str(self)


class ClientError(grpc.RpcError):
    """A failed call: its status ``code``, ``details`` and the ``field_violations`` of its BadRequest.

    A subclass of ``grpc.RpcError``: ``code()``, ``details()`` and
    ``trailing_metadata()`` answer as grpc's own errors do, so
    ``grpc_status.rpc_status.from_call(error)`` works on it too.
    """

    # Attributes that are also callable, where grpc.RpcError has methods.
    code: StatusCodeValue
    details: DetailsValue

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str = "",
        *,
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
        method: str = "",
    ):
        self.code = StatusCodeValue(code)
        self.details = DetailsValue(details or "")
        self.method = method
        self._trailing_metadata = tuple(trailing_metadata)
        #: The ``google.rpc.Status`` the server put in the trailers, if any.
        self.status: status_pb2.Status | None = _rich_status(self._trailing_metadata)
        #: Field -> messages, from the ``google.rpc.BadRequest`` of the rich status.
        self.field_violations: dict[str, list[str]] = _field_violations(self.status)
        #: Seconds the server asks to wait before trying again (``google.rpc.RetryInfo``), if it says.
        self.retry_delay: float | None = _retry_delay(self.status)
        super().__init__(f"{method + ': ' if method else ''}{code.name}: {details}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, method: str = "") -> ClientError:
        if isinstance(error, ClientError):
            return error
        call: Any = error  # grpc's errors are also the call, with its status and trailers
        code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
        details = call.details() if hasattr(call, "details") else str(error)
        trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else ()
        return cls(
            code or grpc.StatusCode.UNKNOWN,
            details or "",
            trailing_metadata=[(key, value) for key, value in (trailers or ())],
            method=method,
        )

    def trailing_metadata(self) -> Any:
        """The trailers as ``(key, value)`` pairs."""
        return self._trailing_metadata

    def initial_metadata(self) -> Any:
        return ()


def _rich_status(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _field_violations(status: status_pb2.Status | None) -> dict[str, list[str]]:
    violations: dict[str, list[str]] = {}
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            for violation in bad_request.field_violations:
                violations.setdefault(violation.field, []).append(violation.description)
    return violations


def _retry_delay(status: status_pb2.Status | None) -> float | None:
    for detail in status.details if status is not None else ():
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(retry_info):
            return float(retry_info.retry_delay.ToTimedelta().total_seconds())
    return None
