"""Stop a PostgreSQL query from another thread with the protocol's cancel request, sent through libpq.

A cancelled call's query is stopped from a thread of its own (``CallContext.cancel``).
The cancel request the PostgreSQL protocol defines carries the session's
secret key, so it can only stop that session's query. Not the alternatives:

- ``pg_cancel_backend(pid)`` on a connection of our own: behind PgBouncer
  the pid a connection reports is one PgBouncer made up, which names no
  backend, or by chance another session's.
- psycopg2's ``connection.cancel()``: the same request, but sent holding the
  GIL, so a database that stops answering would freeze every thread of the
  process, the event loop included, until the kernel gives up (minutes).

So libpq's own functions are called through ``ctypes`` (which releases the GIL
during the call), on the libpq psycopg2 loaded: what the request needs is
copied when a connection opens, in the thread that opened it
(``cancel_handle``, from ``connection_created``); ``CancelHandle.send`` sends it.
With libpq 17 or later (psycopg2-binary 2.9.10+ bundles it) the request
gives up after the connection's ``connect_timeout``; with an older libpq it
uses ``PQcancel``, bounded only by the kernel's connect timeout. Where the
library cannot be found (no ``/proc``: not Linux), no cancel is sent and
the statement timeout that follows the call's deadline (or ``QUERY_TIMEOUT``)
stops the query. Behind a transaction pooler the server sends none at all
(``grpc_ext.server.calls.sends_cancel_requests``): the pooler forwards the
request to whatever server connection its client holds when it arrives.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from typing import Any

logger = logging.getLogger(__name__)

#: Where libpq writes why ``PQcancel`` failed (the size libpq's documentation recommends).
ERROR_BUFFER_SIZE = 256


class CancelHandle:
    """What libpq needs to cancel one connection's query, copied when it opened; freed with this object."""

    __slots__ = ("lib", "pointer", "modern", "lock", "used")

    def __init__(self, lib: ctypes.CDLL, pointer: int, modern: bool):
        self.lib = lib
        self.pointer = pointer
        #: ``PGcancelConn`` (libpq 17+: PQcancelBlocking) or ``PGcancel`` (PQcancel).
        self.modern = modern
        self.lock = threading.Lock()  # a PGcancelConn serves one request at a time
        self.used = False

    def send(self) -> None:
        """Send the cancel request; raise ``OSError`` with libpq's message if it could not be sent."""
        with self.lock:
            if self.modern:
                if self.used:
                    self.lib.PQcancelReset(self.pointer)
                self.used = True
                if not self.lib.PQcancelBlocking(self.pointer):
                    message = self.lib.PQcancelErrorMessage(self.pointer) or b""
                    raise OSError(message.decode(errors="replace").strip() or "the cancel request failed")
                return
            error = ctypes.create_string_buffer(ERROR_BUFFER_SIZE)
            if not self.lib.PQcancel(self.pointer, error, ERROR_BUFFER_SIZE):
                raise OSError(error.value.decode(errors="replace").strip() or "the cancel request failed")

    def __del__(self) -> None:
        if self.modern:
            self.lib.PQcancelFinish(self.pointer)
        else:
            self.lib.PQfreeCancel(self.pointer)


def cancel_handle(raw: Any) -> CancelHandle | None:
    """Copy what cancelling ``raw``'s queries needs (a psycopg2 connection, in the thread that opened it)."""
    lib = libpq()
    pointer = getattr(raw, "pgconn_ptr", None)
    if lib is None or not pointer:
        return None
    modern = hasattr(lib, "PQcancelCreate")
    handle = (lib.PQcancelCreate if modern else lib.PQgetCancel)(pointer)
    return CancelHandle(lib, handle, modern) if handle else None


@functools.cache
def libpq() -> ctypes.CDLL | None:
    """Return the libpq psycopg2 loaded, with the signatures of its cancel functions; ``None`` if not found."""
    path = loaded_library("libpq")
    if path is None:
        logger.info("libpq not found among the loaded libraries: a cancelled call's query stops at its timeout")
        return None
    lib = ctypes.CDLL(path)
    lib.PQgetCancel.restype = ctypes.c_void_p
    lib.PQgetCancel.argtypes = [ctypes.c_void_p]
    lib.PQcancel.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.PQfreeCancel.argtypes = [ctypes.c_void_p]
    if hasattr(lib, "PQcancelCreate"):
        lib.PQcancelCreate.restype = ctypes.c_void_p
        lib.PQcancelCreate.argtypes = [ctypes.c_void_p]
        lib.PQcancelBlocking.argtypes = [ctypes.c_void_p]
        lib.PQcancelReset.argtypes = [ctypes.c_void_p]
        lib.PQcancelErrorMessage.restype = ctypes.c_char_p
        lib.PQcancelErrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQcancelFinish.argtypes = [ctypes.c_void_p]
    return lib


def loaded_library(prefix: str) -> str | None:
    """Return the path of the shared library named ``prefix...`` this process has loaded (Linux's /proc)."""
    import psycopg2  # noqa: F401  (loads libpq)

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.startswith("/") and os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        return None
    return None
