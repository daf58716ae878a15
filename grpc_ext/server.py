"""Build, start and stop the gRPC server that serves the project's services.

``build_server`` is the one place a server is assembled: the services the
``ROOT_HANDLERS_HOOK`` registers, the standard health service, reflection,
credentials, channel options and interceptors. ``serve_until_signalled`` runs
one server process; ``serve_in_processes`` runs several on one port.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from django.db import connections
from django.utils.module_loading import import_string
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def load_interceptors() -> list[grpc.ServerInterceptor]:
    """Instantiate the interceptors of ``SERVER_INTERCEPTORS`` once, in order.

    The framework passed the classes themselves to grpc.server, which needs instances.
    """
    return [import_string(path)() for path in grpc_ext_settings.SERVER_INTERCEPTORS or []]


def server_options(*, reuse_port: bool) -> list[tuple[str, object]]:
    """Return ``SERVER_OPTIONS`` with ``grpc.so_reuseport`` set explicitly.

    grpcio turns SO_REUSEPORT on by default, so a second server on a taken port
    would start without an error and share it; only ``--workers`` wants that.
    """
    options = [tuple(option) for option in grpc_ext_settings.SERVER_OPTIONS or [] if option[0] != "grpc.so_reuseport"]
    return [*options, ("grpc.so_reuseport", 1 if reuse_port else 0)]


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


class _ServiceRecorder:
    """Stand in for a server while the handlers hook runs, noting each service it adds."""

    def __init__(self, server: grpc.Server):
        self._server = server
        self.service_names: list[str] = []

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        for handler in generic_rpc_handlers:
            if hasattr(handler, "service_name"):
                self.service_names.append(handler.service_name())
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def __getattr__(self, name: str):
        return getattr(self._server, name)


def register_services(server: grpc.Server) -> list[str]:
    """Add the project's services with ``ROOT_HANDLERS_HOOK``; return their full names.

    The names are what the generated ``add_<Service>Servicer_to_server``
    functions register, so any service the hook adds is found, never listed by hand.
    """
    recorder = _ServiceRecorder(server)
    grpc_ext_settings.ROOT_HANDLERS_HOOK(recorder)
    return list(dict.fromkeys(recorder.service_names))


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


@dataclass
class GrpcServer:
    """A built server, its port, and the health servicer that reports on it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: list[str] = field(default_factory=list)
    secure: bool = False

    def start(self) -> None:
        """Start serving and report every service SERVING."""
        self.server.start()
        for name in ["", *self.service_names]:
            self.health.set(name, SERVING)

    def stop(self, grace: float | None, *, drain_delay: float = 0) -> threading.Event:
        """Report NOT_SERVING, keep serving ``drain_delay`` seconds, then refuse new RPCs.

        Return the event set once the RPCs in flight have finished, or were
        cancelled after ``grace`` seconds. The delay gives load balancers that
        probe health time to send new RPCs elsewhere: without it, an RPC sent
        on an open connection just as the server stops is CANCELLED.
        """
        self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            time.sleep(drain_delay)
        return self.server.stop(grace)


def build_server(
    address: str,
    *,
    max_workers: int | None = None,
    reflection_enabled: bool | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    tls_client_ca: str | Path | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """Return a server with every service, health and (optionally) reflection, bound to ``address``.

    Arguments left ``None`` come from the ``GRPC_FRAMEWORK`` settings. Raise
    ``OSError`` when the address cannot be bound and ``ValueError`` for a TLS
    misconfiguration.
    """
    settings = grpc_ext_settings
    if reflection_enabled is None:
        reflection_enabled = settings.REFLECTION if settings.REFLECTION is not None else _debug()
    credentials = server_credentials(
        tls_cert if tls_cert is not None else settings.TLS_CERT,
        tls_key if tls_key is not None else settings.TLS_KEY,
        tls_client_ca if tls_client_ca is not None else settings.TLS_CLIENT_CA,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers or settings.MAX_WORKERS, thread_name_prefix="grpc"),
        interceptors=load_interceptors(),
        options=server_options(reuse_port=reuse_port),
    )
    service_names = register_services(server)

    health_servicer = health.HealthServicer()
    for name in ["", *service_names]:
        health_servicer.set(name, NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_enabled:
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            [*described_services(service_names), health_name, reflection.SERVICE_NAME], server
        )

    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"Cannot listen on {address}: the port is in use or the address is not valid.") from exc
    return GrpcServer(server, port, health_servicer, service_names, secure=credentials is not None)


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
            if child.is_alive():
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
