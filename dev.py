#!/usr/bin/env python3
"""Set up a local virtualenv and run the project: ``python3 dev.py serve`` or ``python3 dev.py test``.

Needs only Python 3.11+. Installs ``requirements-dev.txt`` into ``.venv`` (again
only when the requirements change), then runs inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
REQUIREMENTS = ["requirements.txt", "requirements-dev.txt"]
STAMP = VENV / ".requirements.sha256"


def run(*args: str, **env: str) -> None:
    """Run a command in the project directory; stop with its exit code if it fails."""
    result = subprocess.run(args, cwd=ROOT, env={**os.environ, **env})
    if result.returncode:
        sys.exit(result.returncode)


def ensure_virtualenv() -> None:
    """Create ``.venv`` and install the requirements unless they are already installed."""
    if sys.version_info < (3, 11):
        sys.exit("Python 3.11 or newer is required.")
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PYTHON.exists():
        print("Creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing requirements into .venv ...", flush=True)
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "-r", "requirements-dev.txt")
    STAMP.write_text(digest)


def manage(*args: str) -> None:
    run(str(PYTHON), "manage.py", *args)


def serve(address: str = "127.0.0.1:50051") -> None:
    """Migrate, load the demo data and serve gRPC (SQLite unless DATABASE_URL says otherwise)."""
    manage("migrate", "--noinput", "-v", "0")
    manage("seeddemo")
    manage("grpcrunserver", address)


def test(*pytest_args: str) -> None:
    """Check the generated protos, then run the test suite."""
    manage("generateproto", "--check")
    run(str(PYTHON), "-m", "pytest", *pytest_args)


COMMANDS = {"serve": serve, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    ensure_virtualenv()
    COMMANDS[sys.argv[1]](*sys.argv[2:])
