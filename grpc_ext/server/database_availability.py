"""Whether the database can be used, for the health service: a probe, and the RPCs' own failures.

A ``DatabaseMonitor`` probes the database every ``DATABASE_PROBE_INTERVAL``
seconds from a background thread, on a connection of its own opened for each
probe (so it meets what a new RPC's connection would meet: a refused
connection, a server shutting down, an unreadable SQLite file). An RPC that
fails on a connection error marks every running monitor unavailable at once
(``report_unavailable``, on the ``database_unavailable`` signal the error map
sends) and makes it probe again without waiting; only a probe that succeeds
marks it available again. A probe that hangs (a network that drops packets)
counts as a failure after ``DATABASE_PROBE_TIMEOUT``, and the next probe
starts on time anyway (up to ``MAX_HUNG_PROBES`` waiting).

Subscribers get ``callback(serving: bool)`` on every change, in order, always
on the monitor's own thread, whoever noticed the change (an RPC on an event
loop included): a callback may block briefly, e.g. on
``asyncio.run_coroutine_threadsafe(...).result()``, but must not call the
monitor back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections

from grpc_ext.exceptions import first_line
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.signals import database_unavailable

logger = logging.getLogger(__name__)

#: Probes left waiting on a database that does not answer, before no new one is started:
#: each holds a socket until the driver gives up, but a new one sees the database come back.
MAX_HUNG_PROBES = 3

_running: set[DatabaseMonitor] = set()
_running_lock = threading.Lock()


def report_unavailable(reason: str) -> None:
    """Mark every running monitor unavailable now: an RPC has just failed on a connection error."""
    with _running_lock:
        monitors = list(_running)
    for monitor in monitors:
        monitor.mark_unavailable(reason)


def on_database_unavailable(sender: object, *, reason: str, **kwargs: object) -> None:
    """Receive ``database_unavailable``, which the error map sends for a call failed on a connection error."""
    report_unavailable(reason)


database_unavailable.connect(on_database_unavailable, dispatch_uid="grpc_ext_database_availability")


class DatabaseMonitor:
    """Track whether database ``alias`` answers, and tell subscribers when that changes."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS, *, interval: float | None = None, timeout: float | None = None):
        self.alias = alias
        self.interval = grpc_ext_settings.DATABASE_PROBE_INTERVAL if interval is None else interval
        self.timeout = grpc_ext_settings.DATABASE_PROBE_TIMEOUT if timeout is None else timeout
        self._serving = True
        self._callbacks: list[Callable[[bool], None]] = []
        self._lock = threading.Lock()
        #: Changes recorded but not yet delivered to the callbacks, oldest first.
        self._pending: list[bool] = []
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        return self._serving

    def on_change(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``callback(serving)`` on every change; return a function that unsubscribes it."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def start(self) -> None:
        """Probe in a daemon thread until ``stop``; an interval of 0 turns probing off."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name=f"db-probe-{self.alias}", daemon=True)
        self._thread.start()
        with _running_lock:
            _running.add(self)

    def stop(self) -> None:
        with _running_lock:
            _running.discard(self)
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def mark_unavailable(self, reason: str) -> None:
        """Report unavailable now and, if that is news, tell subscribers and probe again at once.

        Only a probe marks the database available again.
        """
        if self._set(False, reason):
            self._wake.set()

    def probe(self) -> str | None:
        """Open a new connection, run a trivial query and close it; return why that failed, or ``None``."""
        connection = connections.create_connection(self.alias)
        try:
            with connection.cursor() as cursor:
                # SQLite opens its file lazily: reading the schema proves the file is a readable database.
                cursor.execute("SELECT count(*) FROM sqlite_master" if connection.vendor == "sqlite" else "SELECT 1")
                cursor.fetchone()
            return None
        except Exception as exc:
            return first_line(exc)
        finally:
            try:
                connection.close()
            except Exception:
                logger.debug("Closing the probe's connection failed", exc_info=True)

    def _run(self) -> None:
        hung: list[threading.Thread] = []
        while not self._stopped.is_set():
            self._wake.clear()
            self._deliver()
            hung = [thread for thread in hung if thread.is_alive()]
            if len(hung) < MAX_HUNG_PROBES:
                result: list[str | None] = []
                thread = threading.Thread(target=lambda out=result: out.append(self.probe()), daemon=True)
                thread.start()
                thread.join(timeout=self.timeout)
                if thread.is_alive():
                    hung.append(thread)
                if result:
                    self._set(result[0] is None, result[0])
                else:
                    self._set(False, f"no answer within {self.timeout:g} s")
            else:
                self._set(False, f"{len(hung)} probes are waiting for an answer")
            self._deliver()
            self._wake.wait(timeout=self.interval)

    def _set(self, serving: bool, reason: str | None = None) -> bool:
        """Record and log the state, for delivery by the monitor's thread; return True if it changed."""
        with self._lock:
            if serving == self._serving:
                return False
            self._serving = serving
            self._pending.append(serving)
        if serving:
            logger.warning("Database %s is reachable again", self.alias)
        else:
            logger.warning("Database %s is unavailable: %s", self.alias, reason)
        return True

    def _deliver(self) -> None:
        """Call the callbacks with each change recorded since the last delivery, in order."""
        with self._lock:
            changes, self._pending = self._pending, []
            callbacks = list(self._callbacks)
        for serving in changes:
            for callback in callbacks:
                try:
                    callback(serving)
                except Exception:
                    logger.exception("A database availability callback failed")
