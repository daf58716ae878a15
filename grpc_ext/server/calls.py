"""The synchronous half of an RPC, run on the server's bounded thread pool.

The server is ``grpc.aio``: requests are read and responses written on the
event loop, so a slow or stalled client holds a coroutine, never a thread.
The Django part of a call (authentication, permissions, throttling, the
action, building the response) runs in one hop on the loop's default
executor, a bounded ``ThreadPoolExecutor``. It sees a ``CallContext`` in place
of grpc's context: the same reading methods, and an ``abort`` that records the
status for the event loop to send.

Per call, ``prepare_database`` replaces Django's per-request connection check
(a ``SELECT 1`` per RPC with ``CONN_HEALTH_CHECKS``) by one per
``DB_HEALTH_CHECK_INTERVAL``; on PostgreSQL each statement of a call carries
the call's remaining deadline as its own timeout (``StatementTimeout``).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grpc
from django.db import connections
from django.db.backends.signals import connection_created

from grpc_ext.exceptions import DeadlineExceeded
from grpc_ext.server.pg_cancel import CancelHandle, cancel_handle
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)


class RpcAborted(Exception):
    """Raised by ``CallContext.abort``: the call ends with the status it recorded."""


class Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple = ()


#: Seconds left that mean "no deadline": grpcio's synchronous server and pygrpc-native report
#: ``sys.maxsize`` seconds for a call without one, where grpc.aio reports ``None``.
NO_DEADLINE = 1e15


def deadline_remaining(context: Any) -> float | None:
    """Return the seconds left before the deadline of ``context``'s call, ``None`` if it has none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining >= NO_DEADLINE else remaining


class CallContext:
    """What synchronous handler code sees as ``context``, safe to use from a pool thread.

    Reads (metadata, deadline, trailing metadata) go to grpc's context; the
    peer is read once, on the loop, while the call is surely alive (grpc.aio's
    ``peer()`` on a call that has ended can crash the process). ``abort``
    records the status and raises, and the event loop sends it.
    """

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context
        self._peer = context.peer()
        self.status: Status | None = None
        self.cancelled = False
        self._lock = threading.Lock()
        self._database: Any = None  # the DB-API connection of the query running for this call
        self._statement_timeout = StatementTimeout(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        """Return the seconds left before the call's deadline, ``None`` without one (as grpc.aio does)."""
        return deadline_remaining(self._context)

    def is_active(self) -> bool:
        """Tell whether the client still waits for the response (not cancelled, deadline not passed)."""
        remaining = self.time_remaining()
        return not self.cancelled and (remaining is None or remaining > 0)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` (on the event loop) when the call ends, as grpc's synchronous context does."""
        self._context.add_done_callback(lambda context: callback())  # type: ignore[arg-type]  # any callable
        return True

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.status = Status(code, details)
        raise RpcAborted(details)

    def abort_with_status(self, status: grpc.Status) -> None:
        self.status = Status(status.code, status.details, tuple(status.trailing_metadata or ()))
        raise RpcAborted(status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = Status(code, self.status.details if self.status else "")

    def set_details(self, details: str) -> None:
        self.status = Status(self.status.code if self.status else grpc.StatusCode.UNKNOWN, details)

    def code(self) -> grpc.StatusCode | None:
        return self.status.code if self.status else None

    def details(self) -> str | None:
        return self.status.details if self.status else None

    def run(self, function: Callable, *args: Any) -> Any:
        """Run ``function`` (in a pool thread), noting the database connection so ``cancel`` can stop its query.

        On PostgreSQL its statements get the call's remaining deadline as their timeout (``StatementTimeout``).
        """
        database = connections["default"]
        with self._lock:
            self._database = database
        wrappers = database.execute_wrappers
        bounded = database.vendor == "postgresql"
        if bounded:
            wrappers.append(self._statement_timeout)
        try:
            return function(*args)
        finally:
            if bounded:
                wrappers.remove(self._statement_timeout)
            with self._lock:
                self._database = None

    def cancel(self) -> None:
        """Mark the call cancelled and stop the query it is running, if any (called from the event loop).

        The query is stopped from a thread of its own (``query_cancellers``):
        stopping a PostgreSQL query means talking to the database server,
        which a silent network can make wait for minutes.
        """
        self.cancelled = True
        if self._database is not None:
            query_cancellers.submit(self._cancel_query)

    def _cancel_query(self) -> None:
        # Under the lock, the query is still this call's: ``run`` clears it only after the function returned.
        with self._lock:
            wrapper = self._database
            raw = wrapper.connection if wrapper is not None else None
            if raw is None:
                return
            try:
                if wrapper.vendor == "postgresql":
                    state = getattr(wrapper, "_grpc_ext_state", None)
                    if state is not None and state.raw is raw and state.cancel is not None:
                        state.cancel.send()
                elif wrapper.vendor == "sqlite":
                    raw.interrupt()
            except Exception:  # the query may have ended meanwhile, or the database is unreachable
                logger.debug("Could not cancel the query of a cancelled call", exc_info=True)


#: The threads that stop the queries of cancelled calls: a silent network can hold one for as long as
#: ``DB_CONNECT_TIMEOUT``, which must hold neither the event loop nor a thread of the pool that serves calls.
query_cancellers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="query-cancel")


class CallPool(ThreadPoolExecutor):
    """The bounded pool that runs the synchronous half of calls, with a hop cheaper than ``submit``.

    ``submit`` builds a ``concurrent.futures.Future`` (a ``Condition``, a
    lock) per call that no one waits on: ``in_pool`` hands the outcome back
    to the event loop itself. ``run_soon`` queues a bare work item on the
    same queue, read by the same bounded threads. Its outcomes reach the
    loop through ``Completions``. A hop costs about half the CPU of a
    ``submit`` and a ``call_soon_threadsafe`` each (32 hops in flight, each
    a few microseconds of work: about 17 against 36 us of CPU per hop). It relies on the executor's
    work queue and thread start (``_work_queue``, ``_adjust_thread_count``),
    stable from Python 3.8 to 3.14; without them it uses ``submit``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._bare = hasattr(self, "_work_queue") and hasattr(self, "_adjust_thread_count")

    def run_soon(self, function: Callable[[], None]) -> None:
        """Run ``function()`` on a thread of the pool; nothing is returned and nothing waits for it."""
        if not self._bare:
            self.submit(function)
            return
        with self._shutdown_lock:  # the executor's own, as submit takes it
            if self._shutdown or self._broken:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work_queue.put(_BareWork(function))  # type: ignore[arg-type]  # its workers only call run()
            self._adjust_thread_count()


class _NoFuture:
    """What a shutdown that cancels queued work, or a failed initializer, finds on a bare work item."""

    def cancel(self) -> bool:
        return False

    def set_exception(self, exception: BaseException) -> None:
        pass


class _BareWork:
    """A work item of ``CallPool``'s queue with no future: the pool's workers only call ``run``."""

    __slots__ = ("function",)
    future = _NoFuture()

    def __init__(self, function: Callable[[], None]):
        self.function = function

    def run(self, *worker_context: Any) -> None:  # Python 3.14's workers pass their context
        self.function()


class Completions:
    """Outcomes of pool hops on their way to the event loop, one wake-up for as many as are ready.

    ``loop.call_soon_threadsafe`` per outcome writes to the loop's self-pipe
    each time; under load several hops end while the loop is busy, and one
    scheduled ``settle_ready`` hands them all over.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._ready: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, future: asyncio.Future, result: Any, error: BaseException | None) -> None:
        """Hand ``future`` its outcome (from any thread)."""
        self._ready.append((future, result, error))
        with self._lock:
            if self._scheduled:  # the scheduled settle_ready has not yet started: it takes this one too
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.settle_ready)
        except RuntimeError:  # the loop closed meanwhile: no one awaits the outcome
            pass

    def settle_ready(self) -> None:
        """Settle every outcome that is ready (on the event loop)."""
        with self._lock:
            self._scheduled = False
        ready = self._ready
        while ready:
            _settle(*ready.popleft())


#: The thread pool of each serving event loop (``use_pool``) and its outcomes' way back; ``in_pool`` uses both.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[CallPool, Completions]] = weakref.WeakKeyDictionary()


def use_pool(loop: asyncio.AbstractEventLoop, pool: CallPool) -> None:
    """Make ``pool`` the one ``in_pool`` runs the synchronous half of calls on, for calls served by ``loop``."""
    loop.set_default_executor(pool)
    _pools[loop] = (pool, Completions(loop))


def serving_pool(loop: asyncio.AbstractEventLoop) -> CallPool | None:
    """Return the pool that runs the synchronous half of the calls ``loop`` serves (``None``: its default executor)."""
    serving = _pools.get(loop)
    return serving[0] if serving is not None else None


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Give ``future`` the outcome of its hop (on the event loop), unless the call was cancelled meanwhile."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


async def in_pool(call: CallContext, function: Callable, *args: Any) -> Any:
    """Run ``function(*args)`` on the loop's thread pool; stop its query if the call is cancelled meanwhile.

    The hop is a bare work item (``CallPool.run_soon``) whose thread hands
    the outcome back through ``Completions``: ``run_in_executor`` chains a
    second future to the pool's, with callbacks both ways, and wakes the
    loop once per hop. As with ``run_in_executor``, a hop whose call was
    cancelled before a thread took it does not run.
    The function runs in a copy of the caller's ``contextvars`` context, as
    ``asyncio.to_thread`` does (neither ``submit`` nor ``run_in_executor``
    copies it): the call's trace span is current in the pool thread, so its
    SQL spans and log records belong to the call, and nothing a hop sets in
    its context outlives the hop.
    """
    loop = asyncio.get_running_loop()
    serving = _pools.get(loop)
    context = contextvars.copy_context()
    if serving is None:  # a loop this module was not told about: its default executor
        future = loop.run_in_executor(None, context.run, call.run, function, *args)
    else:
        pool, completions = serving
        future = loop.create_future()

        def hop() -> None:
            if future.cancelled():
                return
            result, error = None, None
            try:
                result = context.run(call.run, function, *args)
            except BaseException as exc:  # handed to the awaiting coroutine, as run_in_executor does
                error = exc
            completions.put(future, result, error)

        pool.run_soon(hop)
    try:
        return await future
    except asyncio.CancelledError:
        call.cancel()
        raise


def check_deadline(call: CallContext) -> None:
    """Raise DEADLINE_EXCEEDED if the call's deadline has passed: no query runs for it."""
    remaining = call.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("The deadline passed before the call was served.")


class ConnectionState:
    """What this layer knows of one DB-API connection: when it was last checked, how to cancel its query."""

    __slots__ = ("raw", "checked_at", "cancel")

    def __init__(self, raw: Any, checked_at: float, cancel: CancelHandle | None = None):
        self.raw = raw
        self.checked_at = checked_at
        #: PostgreSQL's cancel request for this connection (``pg_cancel``), made as it opened.
        self.cancel = cancel


def note_new_connection(sender, connection, **kwargs) -> None:
    """Start a connection's state as it opens (``connection_created``): a new connection is alive now.

    Not when a call first finds it open: a connection opened by one call
    and next used after a database restart would count as just checked.
    """
    raw = connection.connection
    cancel = cancel_handle(raw) if sends_cancel_requests(connection) else None
    connection._grpc_ext_state = ConnectionState(raw, time.monotonic(), cancel)


def sends_cancel_requests(connection) -> bool:
    """Tell whether a cancelled call's query on ``connection`` is stopped with its cancel request.

    PostgreSQL only, and not behind a transaction pooler (``DISABLE_SERVER_SIDE_CURSORS``, which
    the docs ask for behind PgBouncer): the pooler forwards the request to the server connection
    its client holds when the request arrives, and a call's transaction may have ended and its
    server connection gone to another client's query meanwhile. There the statement timeout
    (the call's deadline, at most ``QUERY_TIMEOUT``) stops the query.
    """
    return connection.vendor == "postgresql" and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")


connection_created.connect(note_new_connection)


def connection_state(database) -> ConnectionState | None:
    """Return the state of the thread's connection, ``None`` while it is closed."""
    raw = database.connection
    if raw is None:
        return None
    state = getattr(database, "_grpc_ext_state", None)
    if state is None or state.raw is not raw:
        # Opened before ``note_new_connection`` listened: when it was last known alive is unknown.
        state = database._grpc_ext_state = ConnectionState(raw, float("-inf"))
    return state


def prepare_database(call: CallContext) -> None:
    """Check the connection at most once per ``DB_HEALTH_CHECK_INTERVAL`` instead of before every call.

    Called after ``grpc_request_started``, whose ``close_old_connections``
    asks Django to check a persistent connection before its next query. A
    connection checked less than ``DB_HEALTH_CHECK_INTERVAL`` seconds ago is
    not checked again; one that raised an error is always checked (Django's
    ``errors_occurred``).
    """
    # health_check_enabled/_done: Django's own attributes, set when a connection opens (not in the stubs).
    database: Any = connections["default"]
    state = connection_state(database)
    if state is not None and database.health_check_enabled and not database.health_check_done:
        now = time.monotonic()
        if now - state.checked_at < grpc_ext_settings.DB_HEALTH_CHECK_INTERVAL:
            database.health_check_done = True
        else:
            state.checked_at = now


def statement_timeout_ms(remaining: float | None, limit: float | None) -> int:
    """Return how long (ms) a statement may run: the call's remaining deadline, at most ``limit`` s; 0 for no bound."""
    wanted = max(1, math.ceil(remaining * 1000)) if remaining is not None else 0
    bound = int(limit * 1000) if limit else 0
    if bound and (not wanted or wanted > bound):
        return bound
    return wanted


class StatementTimeout:
    """Give every PostgreSQL statement of a call the call's remaining deadline as its ``statement_timeout``.

    A Django execute wrapper, installed on the thread's connection for each
    hop of the call (``CallContext.run``): it prefixes the statement with
    ``SET LOCAL statement_timeout = <ms>;``, sent in the same round trip.
    ``SET LOCAL`` lasts until the end of the transaction, which in autocommit
    is that statement's own: nothing stays on the connection for the next
    call, nor on a PgBouncer server connection another client gets next, and
    every batch of a Stream gets the deadline it has then, whichever thread
    and connection run it. No statement runs longer than ``QUERY_TIMEOUT``,
    whatever the deadline, or without one; a statement whose call's deadline
    has passed is not sent (DEADLINE_EXCEEDED). Statements of a server-side
    (named) cursor keep the server's setting: ``DECLARE`` takes one statement.
    """

    __slots__ = ("call",)

    def __init__(self, call: CallContext):
        self.call = call

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        remaining = self.call.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("The deadline passed before the query was sent.")
        timeout = statement_timeout_ms(remaining, grpc_ext_settings.QUERY_TIMEOUT)
        if timeout and getattr(context["cursor"].cursor, "name", None) is None:
            sql = f"SET LOCAL statement_timeout = {timeout}; {sql}"
        return execute(sql, params, many, context)
