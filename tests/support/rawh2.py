"""A raw HTTP/2 client that misbehaves on purpose: calls whose request never comes, responses never read."""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.settings
from google.protobuf.message import Message


def grpc_frame(message: Message) -> bytes:
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class RawConnection:
    """One plain TCP connection speaking HTTP/2 to a gRPC server, with a tiny receive window.

    The window is never replenished, so a response larger than it is never
    read: the server has to wait for a reader that does not come.
    """

    def __init__(self, address: str, *, window: int = 1024):
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.h2.initiate_connection()
        self.authority = address
        self.flush()
        self.settle()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def settle(self, seconds: float = 0.3) -> list:
        """Read what the server sends for ``seconds`` (settings, acks, headers), without granting more window."""
        events = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            events.extend(self.h2.receive_data(data))
            self.flush()
        return events

    def open_call(self, method: str, *, metadata: tuple = (), request: Message | None = None) -> int:
        """Open a call to ``method`` (``/package.Service/Method``); send its request only if given."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        self.h2.send_headers(stream_id, headers)
        if request is not None:
            self.h2.send_data(stream_id, grpc_frame(request), end_stream=True)
        self.flush()
        return stream_id

    def close(self) -> None:
        self.sock.close()
