"""Start, watch and stop the servers under test: gRPC, DRF under gunicorn, the floor."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, processes: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """Return once ``port`` accepts connections; raise if a process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(process.args)} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def proc_status_kb(pid: int, key: str) -> int:
    """Return ``VmRSS`` or ``VmHWM`` (kB) of a process from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


@dataclass
class Server:
    """One server under test: its processes, port and the pids whose memory counts."""

    name: str
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    #: gunicorn's master only forks; its workers serve and hold the memory.
    workers_are_children: bool = False

    def serving_pids(self) -> list[int]:
        pids = [process.pid for process in self.processes]
        if self.workers_are_children:
            return [child for pid in pids for child in children(pid)]
        return pids

    def rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmRSS") for pid in self.serving_pids())

    def peak_rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmHWM") for pid in self.serving_pids())

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def server_env(database_url: str) -> dict[str, str]:
    """Return the environment of a server: the benchmark database, no access log, no debug."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "benchmark-only-" + "x" * 40),
        "PYTHONPATH": str(settings.BASE_DIR),
    }


def start(
    name: str, commands: list[list[str]], port: int, env: dict[str, str], *, workers_are_children=False
) -> Server:
    """Start ``commands`` (one per process) and wait until ``port`` answers."""
    server = Server(name, port, workers_are_children=workers_are_children)
    for command in commands:
        server.processes.append(
            subprocess.Popen(
                command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    try:
        wait_for_port(port, server.processes)
    except RuntimeError:
        server.stop()
        raise
    time.sleep(0.5 * len(commands))  # every SO_REUSEPORT listener bound, not only the first
    return server


def start_grpc(database_url: str, processes: int) -> Server:
    """Start ``processes`` grpcrunserver processes sharing one port (grpcio sets SO_REUSEPORT)."""
    port = free_port()
    command = [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{port}", "--max-workers", "16"]
    return start(f"grpc x{processes}", [command] * processes, port, server_env(database_url))


def start_drf(database_url: str, workers: int) -> Server:
    """Start gunicorn with ``workers`` processes serving the DRF baseline."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "bench.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--log-level",
        "warning",
        "--timeout",
        "120",
    ]
    env = {**server_env(database_url), "DJANGO_SETTINGS_MODULE": "bench.settings"}
    return start(f"drf x{workers}", [command], port, env, workers_are_children=True)


def start_floor(stream_rows: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", str(port), str(stream_rows)]
    return start("floor", [command], port, {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)})
