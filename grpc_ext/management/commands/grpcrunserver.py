"""Serve every gRPC service of the project.

Replaces djangogrpcframework's command, which sets ``requires_system_checks =
False`` (a TypeError on Django 5.2), passes interceptor classes where grpc
wants instances, and cannot be stopped cleanly. The server itself is
assembled by ``grpc_ext.server.transport.build_server``; this command reads flags, runs
the system checks (the deployment checks too when DEBUG is off) and refuses to
start on an error, then runs the server in one process or several, each with
its metrics endpoint when ``METRICS_PORT`` is set.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from datetime import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import autoreload

from grpc_ext.server.metrics import serve_metrics
from grpc_ext.server.transport import (
    TRANSPORTS,
    GrpcServer,
    build_server,
    check_native_settings,
    check_port_free,
    serve_in_processes,
    serve_until_signalled,
    transport_name,
)
from grpc_ext.settings import grpc_ext_settings


class Command(BaseCommand):
    help = "Start the gRPC server."
    requires_system_checks: list[str] = []
    default_address = "[::]:50051"

    def add_arguments(self, parser):
        parser.add_argument("address", nargs="?", default=self.default_address, help="host:port to listen on.")
        parser.add_argument(
            "--max-workers",
            type=int,
            default=None,
            help="Worker threads per process, i.e. concurrent RPCs (default: MAX_WORKERS).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Server processes sharing the port with SO_REUSEPORT, each with its own database connections.",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="Seconds RPCs in flight get to finish on SIGTERM/SIGINT (default: SHUTDOWN_GRACE).",
        )
        parser.add_argument(
            "--drain-delay",
            type=float,
            default=None,
            help="Seconds to keep serving, health NOT_SERVING, before refusing new RPCs "
            "(default: SHUTDOWN_DRAIN_DELAY).",
        )
        parser.add_argument(
            "--reflection",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Serve gRPC reflection, or not (default: REFLECTION, i.e. DEBUG).",
        )
        parser.add_argument("--tls-cert", default=None, help="PEM certificate chain; serve TLS (default: TLS_CERT).")
        parser.add_argument("--tls-key", default=None, help="PEM private key of the certificate (default: TLS_KEY).")
        parser.add_argument(
            "--tls-client-ca",
            default=None,
            help="PEM CA bundle; require client certificates signed by it (default: TLS_CLIENT_CA).",
        )
        parser.add_argument(
            "--transport",
            choices=TRANSPORTS,
            default=None,
            help="HTTP/2 transport: aio (grpc.aio) or native (pygrpc-native; plaintext, connections not aged) "
            "(default: TRANSPORT, i.e. GRPC_TRANSPORT).",
        )
        parser.add_argument("--dev", action="store_true", help="Reload on code change (one process).")

    def handle(self, *args, **options):
        self.address = options["address"]
        self.workers = options["workers"]
        self.max_workers = options["max_workers"] or grpc_ext_settings.MAX_WORKERS
        self.grace = options["grace"] if options["grace"] is not None else grpc_ext_settings.SHUTDOWN_GRACE
        self.drain_delay = (
            options["drain_delay"] if options["drain_delay"] is not None else grpc_ext_settings.SHUTDOWN_DRAIN_DELAY
        )
        self.server_kwargs = {
            "max_workers": self.max_workers,
            "reflection_enabled": options["reflection"],
            "tls_cert": options["tls_cert"],
            "tls_key": options["tls_key"],
            "tls_client_ca": options["tls_client_ca"],
            "reuse_port": self.workers > 1,
        }
        self.validate(dev=options["dev"])
        self.server_kwargs["transport"] = self.validate_transport(options["transport"], options["tls_cert"])
        if not options["dev"]:
            self.run_system_checks()
        if options["dev"]:
            autoreload.run_with_reloader(self.inner_run, dev=True)
        elif self.workers > 1:
            self.run_workers()
        else:
            self.inner_run(dev=False)

    def validate(self, dev: bool) -> None:
        if self.workers < 1 or self.max_workers < 1:
            raise CommandError("--workers and --max-workers must be at least 1.")
        if self.workers > 1 and dev:
            raise CommandError("--dev reloads one process; it cannot be combined with --workers.")
        if self.workers > 1 and self.address.endswith(":0"):
            raise CommandError("--workers needs a fixed port to share; port 0 would give each process its own.")

    def validate_transport(self, transport: str | None, tls_cert: str | None) -> str:
        """Return the transport to serve with; refuse, before any process starts, settings it cannot honour."""
        try:
            transport = transport_name(transport)
            if transport == "native":
                check_native_settings(secure=bool(tls_cert or grpc_ext_settings.TLS_CERT))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        return transport

    def run_system_checks(self) -> None:
        """Run every system check, the deployment ones too when DEBUG is off; raise on an error.

        Warnings are printed and do not stop the server.
        """
        self.stdout.write("Performing system checks...")
        self.check(display_num_errors=True, include_deployment_checks=not settings.DEBUG)

    def start_metrics(self, worker_index: int = 0) -> None:
        try:
            port = serve_metrics(worker_index)
        except OSError as exc:
            raise CommandError(f"Cannot serve metrics: {exc}") from exc
        if port is not None:
            self.stdout.write(f"Prometheus metrics at http://{grpc_ext_settings.METRICS_ADDRESS}:{port}/metrics")

    def get_server(self) -> GrpcServer:
        """Build the server; turn a taken port or a TLS misconfiguration into a CommandError."""
        try:
            return build_server(self.address, **self.server_kwargs)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def inner_run(self, dev: bool) -> None:
        if dev:
            autoreload.raise_last_exception()
            self.run_system_checks()
            self.check_migrations()
        server = self.get_server()
        self.start_metrics()
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(
            f"{datetime.now():%B %d, %Y - %X}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"{self.describe(server)}\n"
            f"Quit the server with {quit_command}."
        )
        self.stdout.flush()
        serve_until_signalled(server, grace=self.grace, drain_delay=self.drain_delay)

    def run_workers(self) -> None:
        """Check the port, then serve from ``--workers`` processes until they are signalled."""
        try:
            check_port_free(self.address)
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Starting {self.workers} gRPC server processes at {self.address} (parent pid {os.getpid()})")
        self.stdout.flush()
        if serve_in_processes(self.workers, self.run_worker) != 0:
            raise CommandError("A server process failed; see its output above.")

    def run_worker(self) -> None:
        """Serve in a forked child; exit with status 1 on a startup error."""
        try:
            server = self.get_server()
            # serve_in_processes names its children grpc-worker-<index>.
            self.start_metrics(int(multiprocessing.current_process().name.rpartition("-")[2]))
        except CommandError as exc:
            self.stderr.write(f"Worker {os.getpid()}: {exc}")
            sys.exit(1)
        self.stdout.write(f"Worker {os.getpid()}: {self.describe(server)}")
        self.stdout.flush()
        serve_until_signalled(server, grace=self.grace, drain_delay=self.drain_delay)

    def describe(self, server: GrpcServer) -> str:
        scheme = "TLS" if server.secure else "plaintext"
        return (
            f"Starting gRPC server at {self.address} (port {server.port}, {scheme}, {server.transport} transport, "
            f"{self.max_workers} threads), "
            f"services: {', '.join(server.service_names)}"
        )
