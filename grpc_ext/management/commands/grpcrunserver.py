"""Serve every gRPC service of the project.

Replaces djangogrpcframework's command, which sets ``requires_system_checks =
False`` (a TypeError on Django 5.2), passes interceptor classes where grpc
wants instances, and cannot be stopped cleanly.
"""

from __future__ import annotations

import sys
from datetime import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import autoreload

from grpc_ext.server import build_server, serve_until_signalled
from grpc_ext.settings import grpc_ext_settings


class Command(BaseCommand):
    help = "Start the gRPC server."
    requires_system_checks: list[str] = []
    default_address = "[::]:50051"

    def add_arguments(self, parser):
        parser.add_argument("address", nargs="?", default=self.default_address, help="host:port to listen on.")
        parser.add_argument("--max-workers", type=int, default=10, help="Worker threads (concurrent RPCs).")
        parser.add_argument(
            "--grace", type=float, default=None,
            help="Seconds RPCs in flight get to finish on SIGTERM/SIGINT (default: SHUTDOWN_GRACE).",
        )
        parser.add_argument("--dev", action="store_true", help="Reload on code change and run the system checks.")

    def handle(self, *args, **options):
        self.address = options["address"]
        self.max_workers = options["max_workers"]
        self.grace = options["grace"] if options["grace"] is not None else grpc_ext_settings.SHUTDOWN_GRACE
        if options["dev"]:
            autoreload.run_with_reloader(self.inner_run, dev=True)
        else:
            self.inner_run(dev=False)

    def inner_run(self, dev: bool) -> None:
        if dev:
            autoreload.raise_last_exception()
            self.stdout.write("Performing system checks...\n")
            self.check(display_num_errors=True)
            self.check_migrations()
        try:
            server, port = build_server(self.address, max_workers=self.max_workers)
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(
            f"{datetime.now():%B %d, %Y - %X}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting gRPC server at {self.address} (port {port}, {self.max_workers} threads)\n"
            f"Quit the server with {quit_command}."
        )
        self.stdout.flush()
        serve_until_signalled(server, grace=self.grace)
