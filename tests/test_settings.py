"""Settings come from the environment, and production refuses the development secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

PRINT_DATABASE = "import django; django.setup(); from django.conf import settings as s; print(s.DATABASES['default'])"


#: Variables of the test run's own environment that would change what these tests read as the defaults
#: (a run through PgBouncer sets CONN_MAX_AGE=0 and DISABLE_SERVER_SIDE_CURSORS=true, docs/guides/testing.md).
RUN_VARIABLES = {
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "CONN_MAX_AGE",
    "CONN_HEALTH_CHECKS",
    "DISABLE_SERVER_SIDE_CURSORS",
    "DB_CONNECT_TIMEOUT",
    "DB_TCP_TIMEOUT",
}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in RUN_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        env={**clean, "DJANGO_SETTINGS_MODULE": "demo.settings", "DEBUG": "true", **env},
    )


def test_production_refuses_the_development_secret():
    result = run_python("import django; django.setup()", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_starts_with_its_own_secret():
    result = run_python("import django; django.setup()", DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr


def test_database_url_selects_postgresql_with_persistent_health_checked_connections():
    result = run_python(PRINT_DATABASE, DATABASE_URL="postgres://someone@db.example:5433/things")
    assert result.returncode == 0, result.stderr
    assert "'ENGINE': 'django.db.backends.postgresql'" in result.stdout
    assert "'NAME': 'things'" in result.stdout
    assert "'CONN_MAX_AGE': 600" in result.stdout and "'CONN_HEALTH_CHECKS': True" in result.stdout


def test_no_environment_means_a_sqlite_file_in_the_project():
    result = run_python(PRINT_DATABASE)
    assert "'ENGINE': 'django.db.backends.sqlite3'" in result.stdout
    assert str(settings.BASE_DIR / "db.sqlite3") in result.stdout


def test_postgresql_connections_are_dropped_by_the_kernel_when_their_network_goes_silent():
    """DB_TCP_TIMEOUT reaches libpq: keepalives while a query waits, a bound on unacknowledged data."""
    code = (
        "import django; django.setup(); from django.db import connection; connection.ensure_connection(); "
        "p = connection.connection.info.dsn_parameters; "
        "print(p['keepalives'], p['keepalives_idle'], p['keepalives_interval'], p['keepalives_count'], "
        "p['tcp_user_timeout'])"
    )
    result = run_python(code, DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres", DB_TCP_TIMEOUT="9")
    if "could not connect" in result.stderr or "Connection refused" in result.stderr:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "3", "1", "3", "9000"]

    off = run_python(PRINT_DATABASE, DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres", DB_TCP_TIMEOUT="0")
    assert off.returncode == 0, off.stderr
    assert "keepalives" not in off.stdout and "tcp_user_timeout" not in off.stdout
