"""Start, watch and stop the servers under test: gRPC, DRF and the web process under granian, the floors."""

from __future__ import annotations

import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

#: The servers' SECRET_KEY, so that this process can sign access tokens they accept.
SECRET_KEY = "benchmark-only-" + secrets.token_urlsafe(40)
#: Seconds the servers' access tokens live (JWT_ACCESS_LIFETIME): longer than any run.
TOKEN_LIFETIME = 6 * 3600


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
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
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


def cpu_seconds(pids: list[int]) -> float:
    """Return the CPU time (user + system, every thread) the processes have used, from /proc."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def database_server_pids() -> list[int]:
    """Return the pids of PostgreSQL's processes on this machine (none for SQLite, which runs in the servers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split(" (", 1)[1].startswith("postgres)"):
                pids.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return pids


@dataclass
class CpuShare:
    """How many cores each party used while a server was loaded: its processes, the database, the load generator."""

    server: float = 0.0
    database: float = 0.0
    load_generator: float = 0.0

    @property
    def total(self) -> float:
        return self.server + self.database + self.load_generator


class CpuMeter:
    """Measure, around a load run, the cores the server, PostgreSQL and the load generator (a child) used."""

    def __init__(self, server: Server):
        self.server = server
        self.share = CpuShare()

    def _sample(self) -> tuple[float, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # h2load, once waited for
        return (
            time.monotonic(),
            cpu_seconds(self.server.serving_pids()),
            cpu_seconds(database_server_pids()),
            children.ru_utime + children.ru_stime,
        )

    def __enter__(self) -> CpuShare:
        self._start = self._sample()
        return self.share

    def __exit__(self, *exc_info) -> None:
        end = self._sample()
        wall = end[0] - self._start[0]
        self.share.server, self.share.database, self.share.load_generator = (
            (end[index] - self._start[index]) / wall for index in (1, 2, 3)
        )


@dataclass
class Server:
    """One server under test: its processes, port and the pids whose memory counts."""

    name: str
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    #: granian's main process only spawns; its workers serve and hold the memory.
    workers_are_children: bool = False
    #: Access token sent with every call (``authorization: Bearer ...``); empty for none.
    token: str = ""
    #: Where the gRPC server counts the calls that did not end OK (``bench.interceptors``); None for none.
    status_dir: Path | None = None

    def failed_calls(self) -> int:
        """Return how many calls the server answered with a status other than OK so far."""
        from bench.interceptors import failed_calls

        return failed_calls(self.status_dir) if self.status_dir is not None else 0

    def auth_metadata(self) -> tuple[tuple[str, str], ...]:
        """Return the gRPC metadata that authenticates a call."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

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
    """Return the environment of a server: the benchmark database, no access log, no debug, no tracing.

    Tracing is on only where a measure turns it on (``start_grpc``'s ``env``), whatever this process's ``OTEL_*``.
    """
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("OTEL_")},
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "JWT_ACCESS_LIFETIME": str(TOKEN_LIFETIME),
        "PYTHONPATH": str(settings.BASE_DIR),
        # The product's settings, not the benchmark's: the servers measured are the ones deployed.
        "DJANGO_SETTINGS_MODULE": "demo.settings",
    }


def access_token(user) -> str:
    """Return an access token for ``user`` that the servers accept (signed with their SECRET_KEY)."""
    from datetime import timedelta

    from rest_framework_simplejwt.backends import TokenBackend
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=TOKEN_LIFETIME))
    return TokenBackend(api_settings.ALGORITHM, signing_key=SECRET_KEY).encode(token.payload)


def start(
    name: str,
    commands: list[list[str]],
    port: int,
    env: dict[str, str],
    *,
    workers_are_children: bool = False,
    token: str = "",
) -> Server:
    """Start ``commands`` (one per process) and wait until ``port`` answers."""
    server = Server(name, port, workers_are_children=workers_are_children, token=token)
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


def start_grpc(
    database_url: str, processes: int, token: str, transport: str = "aio", env: dict[str, str] | None = None
) -> Server:
    """Start ``grpcrunserver --workers processes --transport transport`` (processes share the port: SO_REUSEPORT).

    Each process has the product's default pool (``MAX_WORKERS``, 10 threads);
    ``env`` adds to its environment (tracing's ``OTEL_*`` variables).
    """
    port = free_port()
    command = [
        sys.executable,
        "manage.py",
        "grpcrunserver",
        f"127.0.0.1:{port}",
        "--workers",
        str(processes),
        "--transport",
        transport,
    ]
    status_dir = Path(tempfile.mkdtemp(prefix="bench-status-"))
    name = f"grpc {transport} x{processes}{' traced' if env else ''}"
    env = {
        **server_env(database_url),
        "DJANGO_SETTINGS_MODULE": "bench.grpc_settings",
        "BENCH_STATUS_DIR": str(status_dir),
        **(env or {}),
    }
    for variable in ("GRPC_MAX_CONNECTION_AGE", "GRPC_MAX_CONNECTION_AGE_GRACE"):  # native refuses them; aio's default
        env.pop(variable, None)
    server = start(name, [command], port, env, workers_are_children=processes > 1, token=token)
    server.status_dir = status_dir
    return server


def web_command(application: str, port: int, workers: int) -> list[str]:
    """Return the production guide's web command (granian, WSGI, 4 blocking threads a worker) for ``application``."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        "4",
        "--log-level",
        "warning",
        application,
    ]


def start_drf(database_url: str, workers: int, token: str) -> Server:
    """Start the production web command with ``workers`` processes serving the DRF baseline."""
    port = free_port()
    command = web_command("bench.wsgi:application", port, workers)
    env = {**server_env(database_url), "DJANGO_SETTINGS_MODULE": "bench.drf_settings"}
    return start(f"drf x{workers}", [command], port, env, workers_are_children=True, token=token)


def start_web(database_url: str, workers: int, token: str) -> Server:
    """Start the web process as the production guide's command does (granian, 4 blocking threads per worker).

    It serves every service over Connect and gRPC-Web (``grpc_ext.gateway.connect``), with the product's settings.
    """
    port = free_port()
    command = web_command("demo.wsgi:application", port, workers)
    env = {**server_env(database_url), "ALLOWED_HOSTS": "127.0.0.1"}
    return start(f"web x{workers}", [command], port, env, workers_are_children=True, token=token)


def start_floor(stream_rows: int, *, aio: bool = False) -> Server:
    """Start the plain-grpcio floor: grpcio's synchronous server, or (``aio``) grpc.aio's."""
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", str(port), str(stream_rows), *(["--aio"] if aio else [])]
    name = "grpc.aio floor" if aio else "floor"
    return start(name, [command], port, {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)})


def start_handwritten(database_url: str, *, native: bool = False) -> Server:
    """Start the hand-written grpcio + driver Retrieve and Stream (``bench.handwritten``), or it on pygrpc-native."""
    port = free_port()
    command = [sys.executable, "-m", "bench.handwritten", str(port), database_url, *(["--native"] if native else [])]
    name = "hand-written, native" if native else "hand-written, grpcio"
    return start(name, [command], port, {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)})


def start_insert_floor(database_url: str, owner_id: str) -> Server:
    """Start the plain grpcio servicer whose Create runs the INSERT with the driver (``bench.insert_floor``)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.insert_floor", str(port), database_url, owner_id]
    return start("insert floor", [command], port, {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)})
