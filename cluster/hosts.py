"""Start, break and stop the hosts of a local cluster: every process by its pid, nothing else.

The layout, as the production guide (docs/guides/production.md) describes it for many hosts::

    client --h2--> HAProxy (127.0.0.1) --h2--> grpcrunserver on 127.0.0.2, .3, .4 --+
                                                                                    +--> PgBouncer --> PostgreSQL
    client --http--> granian on 127.0.0.5 ----------------------------------------+     (transaction)  (its own)
                     every host --> Redis (its own): the cache, rate-limit counters

PostgreSQL and Redis are instances of the cluster's own, on ports of their own
and a temporary directory, so that a drill may stop them; the machine's shared
servers are never touched. PostgreSQL and PgBouncer refuse to run as root: as
root they run as the ``postgres`` user (``setpriv``, which execs, so the pid is
theirs). The Django processes get the production environment of
``deploy/production.env.example`` with the cluster's addresses and secrets.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "cluster"
HAPROXY_CONFIG = DEPLOY / "haproxy.cfg"
#: HAProxy's answer when no gRPC host can take a call: a trailers-only UNAVAILABLE (``errorfile``).
GRPC_UNAVAILABLE_RESPONSE = DEPLOY / "grpc-unavailable.http"
PGBOUNCER_CONFIG = DEPLOY / "pgbouncer.ini"
PRODUCTION_ENV = ROOT / "deploy" / "production.env.example"
PYTHON = sys.executable
#: Loopback addresses of the gRPC hosts, and of the web host.
GRPC_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
WEB_HOST = "127.0.0.5"
#: The balancer, PgBouncer, PostgreSQL and Redis: loopback's usual address.
LOCAL = "127.0.0.1"
DATABASE_NAME = "cluster"
#: The Debian packages the cluster runs, by the program each provides.
PACKAGES = {"haproxy": "haproxy", "pgbouncer": "pgbouncer", "redis-server": "redis-server"}
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
#: Seconds a stopping gRPC host keeps serving with health NOT_SERVING: more than the balancer
#: needs to take it out (a check every second, failed after 1 s without SERVING).
DRAIN_DELAY = 3


def http2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name: str | int, value: str) -> bytes:
    """A header field as an HPACK literal without indexing, no Huffman: a static-table index or a new name."""
    encoded = value.encode()
    if isinstance(name, int):
        prefix = bytes([name]) if name < 15 else bytes([15, name - 15])
    else:
        prefix = b"\x00" + bytes([len(name)]) + name.encode()
    return prefix + bytes([len(encoded)]) + encoded


def health_check_request() -> bytes:
    """Return the bytes HAProxy's health check sends: grpc.health.v1.Health/Check for "" over a new HTTP/2 connection.

    ``deploy/cluster/haproxy.cfg`` holds them in hex (``tcp-check send-binary``).
    """
    headers = (
        b"\x83\x86"  # :method POST, :scheme http (static table entries 3 and 6)
        + hpack_literal(4, "/grpc.health.v1.Health/Check")  # :path
        + hpack_literal(1, "health-check")  # :authority
        + hpack_literal(31, "application/grpc")  # content-type
        + hpack_literal("te", "trailers")
    )
    return (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + http2_frame(4, 0, 0, b"")  # SETTINGS, none changed
        + http2_frame(1, 4, 1, headers)  # HEADERS, END_HEADERS, stream 1
        + http2_frame(0, 1, 1, b"\x00" + (0).to_bytes(4, "big"))  # DATA, END_STREAM: an empty HealthCheckRequest
    )


#: The response message HAProxy's check waits for: an uncompressed gRPC frame of 2 bytes, status SERVING.
HEALTH_CHECK_SERVING = b"\x00" + (2).to_bytes(4, "big") + health_pb2.HealthCheckResponse(status=1).SerializeToString()


def free_port(host: str = LOCAL) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_free_on(hosts: tuple[str, ...], port: int) -> bool:
    for host in hosts:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def missing_programs() -> list[str]:
    """Return the programs the cluster needs that are not installed."""
    missing = [program for program in PACKAGES if shutil.which(program) is None]
    if not (POSTGRES_BIN / "postgres").exists():
        missing.append(str(POSTGRES_BIN / "postgres"))
    return missing


def production_environment() -> dict[str, str]:
    """Return the variables of ``deploy/production.env.example``."""
    variables = {}
    for line in PRODUCTION_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            variables[name] = value
    return variables


def as_postgres_user(command: list[str]) -> list[str]:
    """Return ``command`` run as the ``postgres`` user when this is root (PostgreSQL and PgBouncer refuse root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *command]


@dataclass
class Process:
    """One process of the cluster: started, signalled and stopped by its own pid; its output in ``log``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, signum: int) -> None:
        if self.running():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send ``signum`` and wait for the process to end; kill it after ``timeout`` seconds."""
        if not self.running():
            return
        self.send(signum)
        if self.wait(timeout) is None:
            self.send(signal.SIGKILL)
            self.wait(10)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ClusterError(RuntimeError):
    """The cluster could not start, or a host did not come back."""


@dataclass
class Cluster:
    """The hosts of a local cluster and the means to break them; ``start()``, then ``stop()``.

    ``direct=True`` points the hosts at PostgreSQL itself with the defaults (persistent
    connections), not at PgBouncer: the Sizing measure compares both.
    """

    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cluster-")))
    lb_port: int = 0
    grpc_port: int = 0
    direct: bool = False
    secret_key: str = field(default_factory=lambda: "cluster-" + secrets.token_urlsafe(40))
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir.chmod(0o755)
        self.lb_port = self.lb_port or free_port()
        self.grpc_port = self.grpc_port or next(
            port for port in iter(lambda: free_port(GRPC_HOSTS[0]), None) if port_free_on(GRPC_HOSTS, port)
        )
        self.web_port = free_port(WEB_HOST)
        self.postgres_port = free_port()
        self.pgbouncer_port = free_port()
        self.redis_port = free_port()
        self.metrics_port = free_port(GRPC_HOSTS[0])

    # ------------------------------------------------------------------ addresses

    @property
    def lb_address(self) -> str:
        return f"{LOCAL}:{self.lb_port}"

    @property
    def grpc_addresses(self) -> list[str]:
        return [f"{host}:{self.grpc_port}" for host in GRPC_HOSTS]

    @property
    def web_url(self) -> str:
        return f"http://{WEB_HOST}:{self.web_port}"

    @property
    def postgres_url(self) -> str:
        return f"postgres://postgres@{LOCAL}:{self.postgres_port}/{DATABASE_NAME}"

    @property
    def pgbouncer_url(self) -> str:
        return f"postgres://postgres@{LOCAL}:{self.pgbouncer_port}/{DATABASE_NAME}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOCAL}:{self.redis_port}/0"

    @property
    def stats_socket(self) -> Path:
        return self.run_dir / "haproxy.sock"

    def endpoints(self) -> list[tuple[str, str]]:
        """Return (what, where) of every endpoint, as printed at start."""
        rows = [("gRPC, through the balancer (HAProxy)", self.lb_address)]
        rows += [(f"gRPC host {index}", address) for index, address in enumerate(self.grpc_addresses, 1)]
        rows += [
            ("web host (granian: admin, REST, Connect)", self.web_url),
            ("metrics of gRPC host 1..3", f"http://{GRPC_HOSTS[0]}..{GRPC_HOSTS[-1][-1]}:{self.metrics_port}/metrics"),
            ("PgBouncer (transaction mode)", self.pgbouncer_url),
            ("PostgreSQL (the cluster's own)", self.postgres_url),
            ("Redis (the cluster's own)", self.redis_url),
            ("HAProxy admin socket", str(self.stats_socket)),
            ("logs", str(self.run_dir)),
        ]
        return rows

    # ------------------------------------------------------------------ environment

    def django_env(self, host: str | None = None) -> dict[str, str]:
        """The environment of a Django process: production's, with the cluster's addresses and secret."""
        database_url = self.postgres_url if self.direct or host is None else self.pgbouncer_url
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            **production_environment(),
            "SECRET_KEY": self.secret_key,
            "ALLOWED_HOSTS": f"{WEB_HOST},localhost",
            "DATABASE_URL": database_url,
            "CACHE_URL": self.redis_url,
            "STATIC_ROOT": str(self.run_dir / "static"),
            # The web host is reached directly over plain HTTP here, no TLS-ending proxy in front.
            "SECURE_SSL_REDIRECT": "false",
            "NUM_PROXIES": "0",
            # The gRPC hosts are behind HAProxy, which forwards the caller's address.
            "GRPC_NUM_PROXIES": "1",
            # Every drill client signs up and logs in from one address.
            "SIGNUP_RATE": "100000/hour",
            "LOGIN_RATE": "100000/minute",
            "GRPC_SHUTDOWN_DRAIN_DELAY": str(DRAIN_DELAY),
            "GRPC_SHUTDOWN_GRACE": "10",
            "GRPC_METRICS_PORT": str(self.metrics_port),
            "GRPC_METRICS_ADDRESS": host or LOCAL,
        }
        if not self.direct:
            # Behind PgBouncer in transaction mode (docs/guides/production.md, Sizing).
            env.update({"CONN_MAX_AGE": "0", "DISABLE_SERVER_SIDE_CURSORS": "true"})
        return env

    # ------------------------------------------------------------------ start and stop

    def start(self) -> None:
        """Start every host; return once the balancer sees every gRPC host SERVING."""
        missing = missing_programs()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (python3 dev.py cluster installs them as root)")
        self.start_postgres(initialize=True)
        self.start_redis()
        self.start_pgbouncer()
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        for index in range(len(GRPC_HOSTS)):
            self.start_grpc(index, wait=False)
        for index in range(len(GRPC_HOSTS)):
            self.wait_grpc_serving(index)
        self.start_web()
        self.start_balancer()

    def stop(self) -> None:
        """Stop every process the cluster started, the balancer first, the database last."""
        grpc_hosts = [f"grpc{index}" for index in range(1, len(GRPC_HOSTS) + 1)]
        for group in (["haproxy"], ["web", *grpc_hosts], ["pgbouncer", "redis"], ["postgres"]):
            processes = [self.processes[name] for name in group if name in self.processes]
            for process in processes:  # every host of a group drains at the same time
                process.send(signal.SIGINT if process.name == "postgres" else signal.SIGTERM)
            for process in processes:
                process.stop()

    def remove(self) -> None:
        """Delete the run directory (the database, the logs)."""
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def process(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Process:
        existing = self.processes.get(name)
        if existing is not None and existing.running():
            raise ClusterError(f"{name} is already running (pid {existing.pid})")
        process = Process(name, command, env if env is not None else self.django_env(), self.run_dir / f"{name}.log")
        self.processes[name] = process
        process.start()
        return process

    def manage(self, *args: str) -> None:
        """Run a one-off ``manage.py`` command (the release steps), on PostgreSQL directly."""
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.django_env(), capture_output=True, text=True
        )
        if result.returncode:
            raise ClusterError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")

    def start_postgres(self, initialize: bool = False) -> None:
        data = self.run_dir / "postgres"
        if initialize:
            data.mkdir(mode=0o700)
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                os.chown(data, user.pw_uid, user.pw_gid)
            initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            result = subprocess.run(as_postgres_user([*initdb, "--no-sync"]), capture_output=True, text=True)
            if result.returncode:
                raise ClusterError(f"initdb failed:\n{result.stdout}{result.stderr}")
        command = [
            str(POSTGRES_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.postgres_port),
            "-c",
            f"listen_addresses={LOCAL}",
            "-c",
            "unix_socket_directories=",
        ]
        self.process("postgres", as_postgres_user(command), env={"PATH": os.environ.get("PATH", ""), "LANG": "C"})
        self.wait_for(lambda: self.postgres_accepts(), "PostgreSQL", self.processes["postgres"])
        if initialize:
            with self.postgres("postgres") as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE_NAME}")

    def postgres_accepts(self) -> bool:
        try:
            with self.postgres("postgres") as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:
            return False

    @contextmanager
    def postgres(self, database: str = DATABASE_NAME, port: int | None = None) -> Iterator[Any]:
        """A cursor on the cluster's PostgreSQL (or on PgBouncer's port), autocommit."""
        import psycopg2

        connection = psycopg2.connect(
            host=LOCAL, port=port or self.postgres_port, user="postgres", dbname=database, connect_timeout=3
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    def start_redis(self) -> None:
        command = ["redis-server", "--bind", LOCAL, "--port", str(self.redis_port), "--save", "", "--appendonly", "no"]
        self.process("redis", command, env={"PATH": os.environ.get("PATH", "")})
        self.wait_for(lambda: self.redis_accepts(), "Redis", self.processes["redis"])

    def redis_accepts(self) -> bool:
        try:
            with socket.create_connection((LOCAL, self.redis_port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start_pgbouncer(self, databases: str | None = None) -> None:
        """Start PgBouncer with ``deploy/cluster/pgbouncer.ini``, in front of ``databases`` (default: the cluster's)."""
        auth = self.run_dir / "pgbouncer.users"
        auth.write_text('"postgres" ""\n')
        config = self.run_dir / "pgbouncer.ini"
        databases = databases or f"{DATABASE_NAME} = host={LOCAL} port={self.postgres_port} dbname={DATABASE_NAME}"
        config.write_text(
            f"[databases]\n{databases}\n"
            f"[pgbouncer]\nlisten_addr = {LOCAL}\nlisten_port = {self.pgbouncer_port}\nunix_socket_dir =\n"
            f"auth_file = {auth}\n%include {PGBOUNCER_CONFIG}\n"
        )
        self.process("pgbouncer", as_postgres_user(["pgbouncer", str(config)]), env={"PATH": os.environ["PATH"]})
        self.wait_for(lambda: self.port_open(LOCAL, self.pgbouncer_port), "PgBouncer", self.processes["pgbouncer"])

    def start_grpc(self, index: int, wait: bool = True) -> None:
        host = GRPC_HOSTS[index]
        command = [PYTHON, "manage.py", "grpcrunserver", f"{host}:{self.grpc_port}"]
        self.process(f"grpc{index + 1}", command, self.django_env(host))
        if wait:
            self.wait_grpc_serving(index)

    def grpc(self, index: int) -> Process:
        return self.processes[f"grpc{index + 1}"]

    def wait_grpc_serving(self, index: int, timeout: float = 60) -> None:
        address = self.grpc_addresses[index]
        self.wait_for(lambda: health_status(address) == "SERVING", f"gRPC host {address}", self.grpc(index), timeout)

    def start_web(self) -> None:
        command = [PYTHON, "-m", "granian", "--interface", "wsgi", "--host", WEB_HOST, "--port", str(self.web_port)]
        command += ["--workers", "2", "--blocking-threads", "4", "--access-log", "demo.wsgi:application"]
        self.process("web", command, self.django_env(WEB_HOST))
        self.wait_for(lambda: self.web_answers(), "the web host", self.processes["web"])

    def web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.web_url}/healthz/", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start_balancer(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "LB_ADDRESS": self.lb_address,
            "STATS_SOCKET": str(self.stats_socket),
            "GRPC_UNAVAILABLE_RESPONSE": str(GRPC_UNAVAILABLE_RESPONSE),
            **{f"GRPC_HOST_{index}": address for index, address in enumerate(self.grpc_addresses, 1)},
        }
        self.process("haproxy", ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)], env)
        self.wait_for(lambda: self.balanced() == {"UP"}, "every gRPC host UP in HAProxy", self.processes["haproxy"])

    # ------------------------------------------------------------------ state

    def balancer_command(self, command: str) -> str:
        """Send ``command`` to HAProxy's admin socket (``show stat``, ``disable server ...``); return its answer."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(2)
            connection.connect(str(self.stats_socket))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def balancer_servers(self) -> dict[str, dict[str, str]]:
        """Return HAProxy's statistics of each gRPC host (``status``: UP, DOWN; ``stot``: calls sent to it)."""
        text = self.balancer_command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row for row in rows if row["pxname"] == "grpc_hosts" and row["svname"].startswith("grpc")
        }

    def balanced(self) -> set[str]:
        """Return the set of HAProxy's states of the gRPC hosts (``{"UP"}`` when all are in)."""
        try:
            return {row["status"].split()[0] for row in self.balancer_servers().values()}
        except OSError:
            return set()

    @staticmethod
    def port_open(host: str, port: int) -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    @staticmethod
    def wait_for(ready, what: str, process: Process | None = None, timeout: float = 60) -> float:
        """Wait until ``ready()``; return the seconds it took. Raise if ``process`` ends or time runs out."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if ready():
                return time.monotonic() - started
            if process is not None and not process.running():
                raise ClusterError(
                    f"{process.name} exited with {process.popen and process.popen.returncode}:\n{process.tail()}"
                )
            time.sleep(0.1)
        raise ClusterError(f"{what}: not ready after {timeout:.0f} s" + (f"\n{process.tail()}" if process else ""))


def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """Return the health status name of ``service`` at ``address``, or the error code's name."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
