"""The cancel request of a PostgreSQL connection, sent from another thread (``grpc_ext.server.pg_cancel``).

Both ways libpq offers are exercised: ``PQcancelBlocking`` (libpq 17+, the one psycopg2-binary bundles)
and ``PQcancel``, used with an older libpq.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.errors
import pytest
from django.db import connection

from grpc_ext.server.pg_cancel import CancelHandle, libpq
from tests.support.helpers import database_url_of_this_run

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's cancel request")


def wait_until_sleeping() -> None:
    """Wait for the query to run (found by what it does: behind PgBouncer the connection's pid is not its backend's)."""
    for _ in range(100):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
            )
            if cursor.fetchone():
                return
        time.sleep(0.05)
    pytest.fail("the query never started")


@pytest.mark.parametrize("modern", [True, False], ids=["PQcancelBlocking", "PQcancel"])
def test_the_cancel_request_stops_the_connections_running_query_twice(transactional_db, modern):
    lib = libpq()
    assert lib is not None, "the libpq psycopg2 loaded was not found"
    raw = psycopg2.connect(database_url_of_this_run())
    handle = CancelHandle(lib, (lib.PQcancelCreate if modern else lib.PQgetCancel)(raw.pgconn_ptr), modern)
    try:
        for _ in range(2):  # the same handle serves every cancel of the connection's life
            outcome: dict = {}

            def sleep(outcome: dict = outcome) -> None:
                started = time.monotonic()
                try:
                    with raw.cursor() as cursor:
                        cursor.execute("SELECT pg_sleep(20)")
                except psycopg2.Error as exc:
                    outcome["error"] = exc
                raw.rollback()
                outcome["seconds"] = time.monotonic() - started

            query = threading.Thread(target=sleep)
            query.start()
            wait_until_sleeping()
            handle.send()
            query.join(10)
            assert isinstance(outcome.get("error"), psycopg2.errors.QueryCanceled), outcome
            assert outcome["seconds"] < 5
    finally:
        raw.close()
