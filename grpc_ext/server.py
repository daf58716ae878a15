"""Build, start and stop the gRPC server that serves the project's services."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from django.utils.module_loading import import_string

from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)


def load_interceptors() -> list[grpc.ServerInterceptor]:
    """Instantiate the interceptors of ``SERVER_INTERCEPTORS`` once, in order.

    The framework passed the classes themselves to grpc.server, which needs instances.
    """
    return [import_string(path)() for path in grpc_ext_settings.SERVER_INTERCEPTORS or []]


def build_server(address: str, *, max_workers: int = 10) -> tuple[grpc.Server, int]:
    """Return a server with every service registered and bound to ``address``, and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=load_interceptors(),
    )
    grpc_ext_settings.ROOT_HANDLERS_HOOK(server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"Cannot listen on {address}: the port is in use or the address is not valid.") from exc
    return server, port


def serve_until_signalled(server: grpc.Server, *, grace: float) -> None:
    """Start ``server`` and stop it on SIGTERM or SIGINT, letting RPCs in flight finish within ``grace`` seconds."""
    stop_requested = threading.Event()

    def request_stop(signum, frame):
        logger.info("Received %s, stopping (grace %.1fs)", signal.Signals(signum).name, grace)
        stop_requested.set()

    # Under the autoreloader this runs in a thread, where signals cannot be
    # handled; the reloader's main thread owns them there.
    in_main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGTERM, signal.SIGINT) if in_main_thread else ()
    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        server.start()
        while not stop_requested.wait(timeout=1.0):
            pass
        server.stop(grace).wait()
        logger.info("Server stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
