"""A throwaway copy of the project to change models in, with its own database, driven by subprocesses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dj_database_url

ROOT = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", ".tools", "var", "db.sqlite3*", "__pycache__", ".pytest_cache", "node_modules", "bench"
)


class ProjectCopy:
    """The project copied into ``path``, using the project's ``.venv``.

    On SQLite it gets its own file; when ``DATABASE_URL`` names PostgreSQL, a
    scratch database on the same server, dropped by ``close``.
    """

    def __init__(self, path: Path):
        self.path = path
        shutil.copytree(ROOT, path, ignore=IGNORED, dirs_exist_ok=True)
        (path / ".venv").symlink_to(ROOT / ".venv")
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo.settings", "PYTHONPATH": str(path)}
        self.env.pop("DATABASE_URL", None)
        self.scratch_database = None
        url = os.environ.get("DATABASE_URL", "")
        if url.startswith("postgres"):
            self.scratch_database = f"copy_{uuid.uuid4().hex[:12]}"
            self.admin_sql(f"CREATE DATABASE {self.scratch_database}")
            self.env["DATABASE_URL"] = url.rsplit("/", 1)[0] + f"/{self.scratch_database}"

    def admin_sql(self, sql: str) -> None:
        import psycopg2

        config = dj_database_url.parse(os.environ["DATABASE_URL"])
        connection = psycopg2.connect(
            dbname="postgres", user=config["USER"], host=config["HOST"], port=config["PORT"] or 5432
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the copy; fail with its output if it fails."""
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=300)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "manage.py", *args)

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.path / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))

    def close(self) -> None:
        if self.scratch_database:
            self.admin_sql(f"DROP DATABASE IF EXISTS {self.scratch_database} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
