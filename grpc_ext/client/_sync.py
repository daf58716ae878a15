"""``Client``, the synchronous client, and ``client.<label>`` on it (``ServiceClient``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from grpc_ext.client._base import (
    RpcMethod,
    ServiceSpec,
    Tokens,
    _ClientBase,
    _item_field,
    _items,
    _ServiceClientBase,
    _with_page_token,
)
from grpc_ext.client.errors import UNAUTHENTICATED, ClientError
from grpc_ext.client.tracing import TracingClientInterceptor

#: The client's own logger, one name for both clients.
logger = logging.getLogger("grpc_ext.client")


class Client(_ClientBase):
    """A synchronous client: ``client.<label>.<Rpc>(**fields)`` returns the response message.

    Every call has a deadline (``timeout``, or ``timeout=`` per call); reads
    (and writes with a ``request_id``) are retried on UNAVAILABLE by the
    channel's retry policy; a failed call
    raises ``ClientError``. After ``login`` the access token is sent with every
    call and refreshed once when near expiry or refused as UNAUTHENTICATED; a
    ``token=`` given here is used as is. Safe to share between threads.
    With a tracer provider configured (OpenTelemetry's global one, or
    ``tracer_provider=``), every call is a CLIENT span whose ``traceparent``
    the server joins (``grpc_ext.client.tracing``).
    """

    _channel: grpc.Channel

    def _connect(self) -> None:
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        if self._tracer is not None:
            self._channel = grpc.intercept_channel(self._channel, TracingClientInterceptor(self._tracer))
        self._lock = threading.Lock()
        self._service_clients = {label: ServiceClient(self, spec) for label, spec in self._services.items()}

    def __getattr__(self, name: str) -> ServiceClient:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.service(name)

    def service(self, name: str) -> ServiceClient:
        """The service of label (``posts``) or full name (``posts.PostController``) ``name``."""
        return self._service_clients[self._service_spec(name).label]

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def login(self, email: str, password: str, *, timeout: float | None = None) -> None:
        """Exchange credentials for an access and a refresh token, kept for the calls that follow."""
        spec, method = self._auth_method("Login")
        pair = self._unary(spec, method, method.request_class(email=email, password=password), timeout=timeout)
        with self._lock:
            self._store(pair)

    def refresh(self, *, timeout: float | None = None) -> None:
        """Exchange the refresh token (which rotates) for new tokens."""
        with self._lock:
            self._refresh_locked(timeout)

    def _refresh_locked(self, timeout: float | None) -> None:
        if not self._tokens.can_refresh():
            raise RuntimeError("Nothing to refresh: log in first (a client built with token= never refreshes)")
        spec, method = self._auth_method("Refresh")
        pair = self._unary(spec, method, method.request_class(refresh=self._tokens.refresh), timeout=timeout)
        self._store(pair)
        logger.debug("Refreshed the access token")

    def logout(self, *, timeout: float | None = None) -> None:
        """Blacklist the refresh token and forget both tokens."""
        with self._lock:
            refresh, self._tokens = self._tokens.refresh, Tokens()
        if refresh:
            spec, method = self._auth_method("Logout")
            self._unary(spec, method, method.request_class(refresh=refresh), timeout=timeout)

    def _token_for_call(self, spec: ServiceSpec) -> str | None:
        if self._is_auth(spec):
            return None
        if self._tokens.near_expiry(self.refresh_margin):
            with self._lock:
                if self._tokens.near_expiry(self.refresh_margin):
                    self._refresh_locked(None)
        return self._tokens.access

    def _refresh_after_refusal(self, refused: str) -> bool:
        """Refresh once after the server refused ``refused``, unless another call already did."""
        with self._lock:
            if not self._tokens.can_refresh():
                return False
            if self._tokens.access == refused:
                self._refresh_locked(None)
            return True

    def _unary(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        deadline = self.timeout if timeout is None else timeout
        token = self._token_for_call(spec)
        try:
            return self._callable(method)(request, timeout=deadline, metadata=self._metadata(token, metadata))
        except grpc.RpcError as error:
            if not (token and error.code() == UNAUTHENTICATED and self._refresh_after_refusal(token)):
                raise ClientError.from_rpc_error(error, method.qualified_name) from None
        try:
            metadata = self._metadata(self._tokens.access, metadata)
            return self._callable(method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error, method.qualified_name) from None

    def _stream(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Iterator[Any]:
        deadline = self.timeout if timeout is None else timeout
        token = self._token_for_call(spec)
        call = self._callable(method)(request, timeout=deadline, metadata=self._metadata(token, metadata))
        received = False
        try:
            for response in call:
                received = True
                yield response
            return
        except grpc.RpcError as error:
            retry = not received and token and error.code() == UNAUTHENTICATED and self._refresh_after_refusal(token)
            if not retry:
                raise ClientError.from_rpc_error(error, method.qualified_name) from None
        finally:
            call.cancel()
        call = self._callable(method)(request, timeout=deadline, metadata=self._metadata(self._tokens.access, metadata))
        try:
            yield from call
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error, method.qualified_name) from None
        finally:
            call.cancel()


class ServiceClient(_ServiceClientBase):
    """``client.<label>``: the RPCs of one service, plus ``iterate`` (List's pages) and ``stream``."""

    _client: Client

    def iterate(self, *args: Any, **filters: Any) -> Iterator[Any]:
        """Yield every item of every List page, following ``next_page_token`` until it is empty."""
        return self._pages(*self._prepare("List", args, filters))

    def _pages(self, method: RpcMethod, request: Any, timeout: float, metadata: Any) -> Iterator[Any]:
        item_field = _item_field(method.response_class)
        while True:
            page = self._client._unary(self.spec, method, request, timeout=timeout, metadata=metadata)
            yield from _items(page, item_field)
            if not page.next_page_token:
                return
            request = _with_page_token(request, page.next_page_token)

    def stream(self, *args: Any, **fields: Any) -> Iterator[Any]:
        """Yield every item of every message of ``Stream`` (which sends rows in batches)."""
        method, request, timeout, metadata = self._prepare("Stream", args, fields)
        item_field = _item_field(method.response_class)
        responses = self._client._stream(self.spec, method, request, timeout=timeout, metadata=metadata)
        return (item for response in responses for item in _items(response, item_field))
