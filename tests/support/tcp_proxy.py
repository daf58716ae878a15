"""A TCP proxy a test can cut and restore: a database outage without stopping the database server."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forward connections to 127.0.0.1:``port`` to ``upstream``.

    ``cut()`` drops every open connection and answers new ones by closing them
    at once, as a database server that is down or restarting does;
    ``hang()`` accepts new connections and never answers them, as a network
    that drops packets does; ``silence()`` does that and also drops what the
    open connections send either way; ``restore()`` closes the held
    connections and forwards again.
    """

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._hang = threading.Event()
        self._silent = threading.Event()
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def hang(self) -> None:
        self._hang.set()

    def silence(self) -> None:
        self._hang.set()
        self._silent.set()

    def restore(self) -> None:
        self._cut.clear()
        self._hang.clear()
        self._silent.clear()
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _close(sock)

    def close(self) -> None:
        self._closed.set()
        self.restore()
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            if self._hang.is_set():
                with self._lock:
                    self._held.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
            with self._lock:
                self._open -= {source, sink}


def _close(sock: socket.socket) -> None:
    """Close ``sock``, waking any thread blocked reading it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
