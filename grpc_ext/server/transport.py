"""Build, start and stop the gRPC server that serves the project's services.

``build_server`` is the one place a server is assembled: the services the
``ROOT_HANDLERS_HOOK`` registers, the standard health service, reflection,
credentials, channel options and interceptors. The server is ``grpc.aio``'s,
on an event loop thread of its own (``EventLoopThread``), so that synchronous
code (the management command, tests, ``serve_in_background``) drives it with
plain calls. ``serve_until_signalled`` runs one server process;
``serve_in_processes`` forks several on one port, before any grpc or asyncio
object exists in the parent.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from django.db import connections
from django.utils.module_loading import import_string
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_ext.server.calls import CallPool, use_pool
from grpc_ext.server.database_availability import DatabaseMonitor
from grpc_ext.server.decoding import guard_decoding
from grpc_ext.server.health import AsyncHealthServicer
from grpc_ext.server.limits import DrainGate, bounded_request
from grpc_ext.server.reflection import enable_server_reflection
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def load_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Instantiate the interceptors of ``SERVER_INTERCEPTORS`` once, in order (``grpc.aio.ServerInterceptor``).

    With ``METRICS_PORT`` set, the metrics interceptor comes first; with tracing on
    (``grpc_ext.server.tracing``), the tracing one comes before it, so the others run inside the call's span.
    """
    from grpc_ext.server.tracing import tracing_enabled

    paths = list(grpc_ext_settings.SERVER_INTERCEPTORS or [])
    if grpc_ext_settings.METRICS_PORT:
        paths.insert(0, "grpc_ext.server.metrics.MetricsInterceptor")
    if tracing_enabled():
        paths.insert(0, "grpc_ext.server.tracing.TracingInterceptor")
    return [import_string(path)() for path in paths]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


#: The transports ``TRANSPORT`` (``GRPC_TRANSPORT``) names.
TRANSPORTS = ("aio", "native")

#: What grpc.aio applies for the connection settings left ``None``; the native transport has none of these
#: limits (or a fixed one), and refuses to start when one is set: the reason, and what to do instead.
AIO_CONNECTION_DEFAULTS: dict[str, float] = {
    "HANDSHAKE_TIMEOUT": 10.0,
    "KEEPALIVE_MIN_CLIENT_PING_INTERVAL": 10.0,
    "MAX_CONNECTION_AGE": 300.0,
    "MAX_CONNECTION_AGE_GRACE": 60.0,
    "MAX_CONNECTION_IDLE": 300.0,
}
NATIVE_MISSING_LIMITS: dict[str, str] = {
    "HANDSHAKE_TIMEOUT": "its handshake timeout is fixed (120 s)",
    "KEEPALIVE_MIN_CLIENT_PING_INTERVAL": "it does not limit client pings",
    "MAX_CONNECTION_AGE": "it ages no connection (spread calls with an HTTP/2-aware load balancer instead)",
    "MAX_CONNECTION_AGE_GRACE": "it ages no connection (spread calls with an HTTP/2-aware load balancer instead)",
    "MAX_CONNECTION_IDLE": "it closes no idle connection (keepalive pings still find dead peers)",
}
#: grpc options of ``SERVER_OPTIONS`` the native transport cannot honour (pygrpc-native refuses or ignores them).
NATIVE_UNSUPPORTED_OPTIONS = frozenset(
    {
        "grpc.max_connection_age_ms",
        "grpc.max_connection_age_grace_ms",
        "grpc.max_connection_idle_ms",
        "grpc.max_allowed_incoming_connections",
        "grpc.default_compression_algorithm",
        "grpc.default_compression_level",
        "grpc.server_handshake_timeout_ms",
        "grpc.http2.min_recv_ping_interval_without_data_ms",
        "grpc.http2.max_ping_strikes",
    }
)


def transport_name(transport: str | None = None) -> str:
    """Return the transport to serve with: ``transport``, else ``TRANSPORT``; ``ValueError`` for an unknown one."""
    name = (transport or grpc_ext_settings.TRANSPORT or "aio").strip().lower()
    if name not in TRANSPORTS:
        raise ValueError(f"TRANSPORT (GRPC_TRANSPORT, --transport) is {name!r}: use 'aio' or 'native'.")
    return name


def check_native_settings(*, secure: bool) -> None:
    """Raise ``ValueError`` naming every setting the native transport cannot honour, and the way out.

    A security or limit setting is never dropped silently: TLS, the connection
    limits set (not left ``None``) and the ``SERVER_OPTIONS`` it has no equivalent of.
    """
    settings = grpc_ext_settings
    problems = []
    if secure:
        problems.append(
            "TLS (TLS_CERT and TLS_KEY, --tls-cert): it serves plaintext only; "
            "terminate TLS in front of it (the mesh sidecar or the load balancer)"
        )
    for name, reason in NATIVE_MISSING_LIMITS.items():
        value = getattr(settings, name)
        if value is not None:
            problems.append(f"{name} = {value!r}: {reason}; leave it unset (None)")
    for option, value in settings.SERVER_OPTIONS or []:
        if option in NATIVE_UNSUPPORTED_OPTIONS and value:
            problems.append(f"SERVER_OPTIONS {option} = {value!r}: it has no equivalent")
    if problems:
        raise ValueError(
            "The native transport (GRPC_TRANSPORT=native) cannot honour "
            + "; ".join(problems)
            + ". Or serve with the aio transport: GRPC_TRANSPORT=aio (grpcrunserver --transport aio)."
        )


def server_options(*, reuse_port: bool, transport: str = "aio") -> list[tuple[str, object]]:
    """Return the channel options: the connection limits of the settings, then ``SERVER_OPTIONS`` (which win).

    ``grpc.so_reuseport`` is always set explicitly: grpcio turns SO_REUSEPORT
    on by default, so a second server on a taken port would start without an
    error and share it; only ``--workers`` wants that. The native transport
    gets only the options it honours (``check_native_settings`` refused the others).
    """
    settings = grpc_ext_settings
    limits: dict[str, object] = {
        "grpc.max_concurrent_streams": settings.MAX_CONCURRENT_STREAMS,
        "grpc.keepalive_time_ms": _ms(settings.KEEPALIVE_TIME),
        "grpc.keepalive_timeout_ms": _ms(settings.KEEPALIVE_TIMEOUT),
        "grpc.keepalive_permit_without_calls": 1,
    }
    if transport == "aio":

        def limit(name: str) -> int:
            value = getattr(settings, name)
            return _ms(AIO_CONNECTION_DEFAULTS[name] if value is None else value)

        limits.update(
            {
                "grpc.server_handshake_timeout_ms": limit("HANDSHAKE_TIMEOUT"),
                "grpc.http2.min_recv_ping_interval_without_data_ms": limit("KEEPALIVE_MIN_CLIENT_PING_INTERVAL"),
                "grpc.max_connection_age_ms": limit("MAX_CONNECTION_AGE"),
                "grpc.max_connection_age_grace_ms": limit("MAX_CONNECTION_AGE_GRACE"),
                "grpc.max_connection_idle_ms": limit("MAX_CONNECTION_IDLE"),
            }
        )
    for name, value in settings.SERVER_OPTIONS or []:
        if transport == "aio" or name not in NATIVE_UNSUPPORTED_OPTIONS:
            limits[name] = value
    limits["grpc.so_reuseport"] = 1 if reuse_port else 0
    return list(limits.items())


def raise_open_files_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit.

    Every connection is a file: under the common soft limit of 1,024, a
    thousand clients that connect and say nothing leave no descriptor for the
    next connection, Health/Check included. The hard limit is what the
    operator allows; servers that expect many connections take it (Go's
    runtime does the same at start).
    """
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logger.warning("Cannot raise the open files limit from %d to %d", soft, hard)


def server_credentials(
    cert: str | Path | None, key: str | Path | None, client_ca: str | Path | None = None
) -> grpc.ServerCredentials | None:
    """Return TLS credentials from PEM files, mutual TLS when ``client_ca`` is given; ``None`` for plaintext."""
    if not cert and not key:
        if client_ca:
            raise ValueError("A client CA needs a server certificate and key (TLS_CERT and TLS_KEY).")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both a certificate and a key (TLS_CERT and TLS_KEY).")
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
        root = Path(client_ca).read_bytes() if client_ca else None
    except OSError as exc:
        raise ValueError(f"Cannot read a TLS file: {exc.filename}: {exc.strerror}.") from exc
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


def prepared_handler(path: str, handler: grpc.RpcMethodHandler, *, bound_unary: bool = True) -> grpc.RpcMethodHandler:
    """Return the handler of ``/service/Method`` as the server registers it.

    An undecodable request is answered INVALID_ARGUMENT (``guard_decoding``).
    With ``bound_unary`` (grpc.aio), a unary request is read within
    ``REQUEST_TIMEOUT`` (``bounded_request``); the native transport receives
    the whole request before it hands a call over, so unary stays unary there
    (a client-streaming method would go to its slower grpcio fallback).
    """
    guarded = guard_decoding(handler, path)
    return bounded_request(guarded) if bound_unary else guarded


class _ServiceRecorder:
    """Stand in for a server while services are added: prepare each method (``prepared_handler``), note services."""

    def __init__(self, server: grpc.aio.Server, *, bound_unary: bool = True):
        self._server = server
        self._bound_unary = bound_unary
        self.service_names: list[str] = []

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        bounded = []
        for handler in generic_rpc_handlers:
            if hasattr(handler, "service_name"):
                name = handler.service_name()
                self.service_names.append(name)
                methods = getattr(handler, "_method_handlers", None)
                if methods is not None:
                    prefix = f"/{name}/"
                    handler = grpc.method_handlers_generic_handler(
                        name,
                        {
                            method.removeprefix(prefix): prepared_handler(method, h, bound_unary=self._bound_unary)
                            for method, h in methods.items()
                        },
                    )
            bounded.append(handler)
        self._server.add_generic_rpc_handlers(bounded)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                method: prepared_handler(f"/{service_name}/{method}", handler, bound_unary=self._bound_unary)
                for method, handler in method_handlers.items()
            },
        )

    def __getattr__(self, name: str):
        return getattr(self._server, name)


def described_services(names: list[str]) -> list[str]:
    """Return the names the generated descriptors define; reflection can describe only those."""
    pool = descriptor_pool.Default()
    described = []
    for name in names:
        try:
            described.append(pool.FindServiceByName(name).full_name)
        except KeyError:
            logger.warning("Service %s has no generated descriptor; reflection leaves it out", name)
    return described


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return uvloop's event loop where it is installed, asyncio's otherwise.

    Every call crosses the loop several times (grpc's completion queue, the hop
    to the pool and back), and uvloop's loop costs less per crossing: the
    plain grpc.aio floor serves 10-20 % more calls per second on it. It is
    installed on Linux and macOS (``requirements.txt``); Windows keeps asyncio's.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


#: Threads the native transport may block waiting for room in the streams of clients that read slowly.
NATIVE_SEND_THREADS = 256


class EventLoopThread:
    """An asyncio event loop running in a thread of its own, with a bounded pool for the synchronous work.

    With ``own_default_executor`` the loop's default executor is a pool of
    its own, not the one that serves calls: pygrpc-native waits there, one
    thread per stream, for a client that stopped reading to make room (its
    ``_send`` calls ``run_in_executor(None, front.stream_send, ...)``).
    Were it the pool that serves calls, 10 such clients (``MAX_WORKERS``)
    would leave no thread for any other call (docs/guides/transports.md: "Notes on pygrpc-native").
    """

    def __init__(self, max_workers: int, *, own_default_executor: bool = False):
        self.loop = new_event_loop()
        self.pool = CallPool(max_workers=max_workers, thread_name_prefix="grpc")
        use_pool(self.loop, self.pool)
        self.waiters: futures.ThreadPoolExecutor | None = None
        if own_default_executor:
            self.waiters = futures.ThreadPoolExecutor(NATIVE_SEND_THREADS, thread_name_prefix="grpc-send")
            self.loop.set_default_executor(self.waiters)
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-event-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine) -> Any:
        """Run ``coroutine`` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Stop the loop and its thread; let the pool threads end once their work is done."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.waiters is not None:
            self.waiters.shutdown(wait=False, cancel_futures=True)


#: Seconds calls get to send their responses once the drain has ended them.
FLUSH_GRACE = 1.0
#: Seconds between the last call in flight ending and grpc's shutdown.
SETTLE_DELAY = 0.2


class GrpcServer:
    """A built ``grpc.aio`` server on its own event loop thread, its port, and the health servicer reporting on it.

    Every method is called from ordinary (synchronous) code and is thread-safe.
    """

    def __init__(
        self,
        runner: EventLoopThread,
        server: grpc.aio.Server,
        port: int,
        health_servicer: AsyncHealthServicer,
        gate: DrainGate,
        service_names: list[str],
        secure: bool,
    ):
        self._runner = runner
        self.server = server
        self.port = port
        self.health = health_servicer
        self.gate = gate
        self.service_names = service_names
        self.secure = secure
        self._stopped: threading.Event | None = None
        self.database = DatabaseMonitor()
        self.transport = "aio"

    def start(self) -> None:
        """Start serving and report every service SERVING, then NOT_SERVING while the database is unavailable."""
        self._runner.run(self.server.start())
        for name in ["", *self.service_names]:
            self.set_health(name, SERVING)
        self.database.on_change(self.report_database)
        self.database.start()

    def report_database(self, serving: bool) -> None:
        """Report the server and every service as the database is (the monitor's thread calls this)."""
        for name in ["", *self.service_names]:
            self.set_health(name, SERVING if serving else NOT_SERVING)

    def set_health(self, service: str, status: int) -> None:
        """Set what grpc.health.v1 reports for ``service`` (``""``: the whole server)."""
        self._runner.run(self.health.set(service, status))

    def stop(self, grace: float | None = None, *, drain_delay: float = 0) -> threading.Event:
        """Drain: report NOT_SERVING, keep serving ``drain_delay`` seconds, then refuse new calls.

        New calls get UNAVAILABLE from then on; the calls in flight get up to
        ``grace`` seconds to finish (``None``: none), then end UNAVAILABLE; only
        then is the grpc server stopped. Return the event set once it has.
        The delay gives load balancers that probe health time to send new
        calls elsewhere.
        """
        if self._stopped is None:
            self._stopped = threading.Event()
            self.database.stop()
            threading.Thread(target=self._stop, args=(grace, drain_delay), name="grpc-drain", daemon=True).start()
        return self._stopped

    def _stop(self, grace: float | None, drain_delay: float) -> None:
        try:
            self._runner.run(self._drain(grace, drain_delay))
        except Exception:
            logger.exception("The server did not stop cleanly")
        finally:
            self._runner.close()
            if self._stopped is not None:
                self._stopped.set()

    async def _drain(self, grace: float | None, drain_delay: float) -> None:
        await self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        self.gate.close()
        if not await self.gate.wait_idle(grace or 0):
            logger.warning("%d calls still running after the grace period; ending them", len(self.gate.calls))
            await self.gate.expire(FLUSH_GRACE)
        # The clients of the last calls answered send their next ones now: let them be
        # received and held as refused, rather than arrive as grpc's shutdown begins.
        await asyncio.sleep(SETTLE_DELAY)
        stopping = asyncio.ensure_future(self.server.stop(FLUSH_GRACE))
        await asyncio.sleep(0.1)  # the connections are told to go away before the refused calls are answered
        self.gate.release()
        await stopping


def build_server(
    address: str,
    *,
    max_workers: int | None = None,
    reflection_enabled: bool | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    tls_client_ca: str | Path | None = None,
    reuse_port: bool = False,
    handlers_hook: Callable[[Any], None] | None = None,
    transport: str | None = None,
) -> GrpcServer:
    """Return a server with every service, health and (optionally) reflection, bound to ``address``.

    Arguments left ``None`` come from the ``GRPC_FRAMEWORK`` settings;
    ``handlers_hook`` adds the services in place of ``ROOT_HANDLERS_HOOK``;
    ``transport`` is ``aio`` or ``native`` (``TRANSPORT``). Raise ``OSError``
    when the address cannot be bound and ``ValueError`` for a TLS
    misconfiguration or a setting the transport cannot honour.
    """
    transport = transport_name(transport)
    settings = grpc_ext_settings
    if reflection_enabled is None:
        reflection_enabled = settings.REFLECTION if settings.REFLECTION is not None else _debug()
    credentials = server_credentials(
        tls_cert if tls_cert is not None else settings.TLS_CERT,
        tls_key if tls_key is not None else settings.TLS_KEY,
        tls_client_ca if tls_client_ca is not None else settings.TLS_CLIENT_CA,
    )
    native = transport == "native"
    if native:
        check_native_settings(secure=credentials is not None)
    interceptors = load_interceptors()
    raise_open_files_limit()
    runner = EventLoopThread(max_workers or settings.MAX_WORKERS, own_default_executor=native)

    async def assemble() -> GrpcServer:
        gate = DrainGate()
        options = server_options(reuse_port=reuse_port, transport=transport)
        server = new_server(transport, interceptors=[gate, *interceptors], options=options)
        recorder = _ServiceRecorder(server, bound_unary=not native)
        (handlers_hook or settings.ROOT_HANDLERS_HOOK)(recorder)
        service_names = list(dict.fromkeys(recorder.service_names))
        health_servicer = AsyncHealthServicer()
        for name in ["", *service_names]:
            await health_servicer.set(name, NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, recorder)
        if reflection_enabled:
            health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
            enable_server_reflection([*described_services(service_names), health_name], recorder)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"Cannot listen on {address}: the port is in use or the address is not valid.") from exc
        grpc_server = GrpcServer(runner, server, port, health_servicer, gate, service_names, credentials is not None)
        grpc_server.transport = transport
        return grpc_server

    try:
        return runner.run(assemble())
    except BaseException:
        runner.close()
        raise


def new_server(transport: str, **options: Any) -> grpc.aio.Server:
    """Return an unstarted ``grpc.aio`` server, or pygrpc-native's (same API) for ``transport`` ``native``."""
    if transport == "native":
        import pygrpc_native.aio

        return pygrpc_native.aio.server(**options)
    return grpc.aio.server(**options)


def serve_in_background(address: str = "127.0.0.1:0", **options: Any) -> GrpcServer:
    """Build and start a server on its own event loop thread; ``.port`` is its port, ``.stop()`` stops it.

    For tests and tools that need a real server in the current process;
    ``options`` are those of ``build_server``.
    """
    server = build_server(address, **options)
    server.start()
    return server


def _debug() -> bool:
    from django.conf import settings

    return settings.DEBUG


def serve_until_signalled(grpc_server: GrpcServer, *, grace: float, drain_delay: float = 0) -> None:
    """Start the server and drain it on SIGTERM or SIGINT (see ``GrpcServer.stop``)."""
    stop_requested = threading.Event()

    def request_stop(signum, frame):
        logger.info("Received %s, draining (delay %.1fs, grace %.1fs)", signal.Signals(signum).name, drain_delay, grace)
        stop_requested.set()

    # Under the autoreloader this runs in a thread, where signals cannot be
    # handled; the reloader's main thread owns them there.
    in_main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGTERM, signal.SIGINT) if in_main_thread else ()
    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        grpc_server.start()
        while not stop_requested.wait(timeout=1.0):
            pass
        grpc_server.stop(grace, drain_delay=drain_delay).wait()
        logger.info("Server stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_port_free(address: str) -> None:
    """Raise ``OSError`` if something already listens on ``address``.

    With SO_REUSEPORT on, grpc would share a port that another server holds
    instead of failing, so the parent of several workers checks first.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    host = "" if host in ("", "::", "0.0.0.0") else host
    family = socket.AF_INET6 if ":" in host or host == "" and socket.has_ipv6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host or None, int(port), family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, ValueError) as exc:
        raise OSError(f"Cannot listen on {address}: the address is not valid.") from exc
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise OSError(f"Cannot listen on {address}: the port is in use.") from exc


def serve_in_processes(count: int, target: Callable[[], None]) -> int:
    """Run ``target`` in ``count`` forked processes until they exit; return 0 if all exited cleanly.

    SIGTERM and SIGINT are passed on to every child. If a child dies without
    being asked to, the others are stopped too and the result is 1. Database
    connections are closed before forking, so each child opens its own; no
    grpc object may exist in the parent (grpc's multiprocessing example).
    """
    connections.close_all()
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=target, name=f"grpc-worker-{index}") for index in range(count)]
    stopping = threading.Event()

    def stop_children(signum: int) -> None:
        stopping.set()
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    # Children start with the default handlers and install their own.
    for child in children:
        child.start()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop_children(signum)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        failed = False
        # The running children are listed once per round: listing them twice could
        # find one running, then none, and wait on no sentinel at all, forever.
        while running := [child for child in children if child.exitcode is None]:
            multiprocessing.connection.wait([child.sentinel for child in running])
            for child in children:
                if child.exitcode not in (None, 0):
                    failed = True
            if failed and not stopping.is_set():
                logger.error("A worker exited unexpectedly; stopping the others")
                stop_children(signal.SIGTERM)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
