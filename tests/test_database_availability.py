"""The database monitor's subscription API on the test database; the outage drills are in test_database_outage."""

from __future__ import annotations

import threading
import time

from grpc_ext.server.database_availability import DatabaseMonitor


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_subscribers_see_each_change_in_order_on_the_monitors_thread_until_they_unsubscribe(transactional_db):
    monitor = DatabaseMonitor(interval=0.05, timeout=5)
    seen: list[bool] = []
    threads: set[str] = set()

    def record(serving: bool) -> None:
        seen.append(serving)
        threads.add(threading.current_thread().name)

    unsubscribe = monitor.on_change(record)
    monitor.start()
    try:
        assert monitor.serving
        # The monitor's next probe (woken at once) may find the database fine before this
        # thread looks again, so the change is read from what subscribers saw, not from ``serving``.
        monitor.mark_unavailable("a call failed on a connection error")
        wait_until(lambda: seen == [False, True])  # the next probe finds the database fine
        unsubscribe()
        monitor.mark_unavailable("again")
        wait_until(lambda: monitor.serving)
        assert seen == [False, True]
        assert threads == {"db-probe-default"}
    finally:
        monitor.stop()
