"""``AsyncClient``, the grpc.aio twin of ``Client``, and ``client.<label>`` on it (``AsyncServiceClient``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
from grpc_ext.client.tracing import AsyncTracingClientInterceptor


class AsyncClient(_ClientBase):
    """The grpc.aio twin of ``Client``: ``await client.<label>.<Rpc>(**fields)``, ``async for`` over
    ``iterate`` and ``stream``. Create it inside the event loop that uses it (``async with AsyncClient(...)``).
    """

    _channel: grpc.aio.Channel

    def _connect(self) -> None:
        interceptors = [AsyncTracingClientInterceptor(self._tracer)] if self._tracer is not None else None
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options, interceptors=interceptors)
        else:
            self._channel = grpc.aio.secure_channel(
                self.target, self._credentials, options=self._options, interceptors=interceptors
            )
        self._lock = asyncio.Lock()
        self._service_clients = {label: AsyncServiceClient(self, spec) for label, spec in self._services.items()}

    def __getattr__(self, name: str) -> AsyncServiceClient:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.service(name)

    def service(self, name: str) -> AsyncServiceClient:
        return self._service_clients[self._service_spec(name).label]

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def login(self, email: str, password: str, *, timeout: float | None = None) -> None:
        spec, method = self._auth_method("Login")
        pair = await self._unary(spec, method, method.request_class(email=email, password=password), timeout=timeout)
        async with self._lock:
            self._store(pair)

    async def refresh(self, *, timeout: float | None = None) -> None:
        async with self._lock:
            await self._refresh_locked(timeout)

    async def _refresh_locked(self, timeout: float | None) -> None:
        if not self._tokens.can_refresh():
            raise RuntimeError("Nothing to refresh: log in first (a client built with token= never refreshes)")
        spec, method = self._auth_method("Refresh")
        pair = await self._unary(spec, method, method.request_class(refresh=self._tokens.refresh), timeout=timeout)
        self._store(pair)

    async def logout(self, *, timeout: float | None = None) -> None:
        async with self._lock:
            refresh, self._tokens = self._tokens.refresh, Tokens()
        if refresh:
            spec, method = self._auth_method("Logout")
            await self._unary(spec, method, method.request_class(refresh=refresh), timeout=timeout)

    async def _token_for_call(self, spec: ServiceSpec) -> str | None:
        if self._is_auth(spec):
            return None
        if self._tokens.near_expiry(self.refresh_margin):
            async with self._lock:
                if self._tokens.near_expiry(self.refresh_margin):
                    await self._refresh_locked(None)
        return self._tokens.access

    async def _refresh_after_refusal(self, refused: str) -> bool:
        async with self._lock:
            if not self._tokens.can_refresh():
                return False
            if self._tokens.access == refused:
                await self._refresh_locked(None)
            return True

    async def _unary(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        deadline = self.timeout if timeout is None else timeout
        token = await self._token_for_call(spec)
        try:
            return await self._callable(method)(request, timeout=deadline, metadata=self._metadata(token, metadata))
        except grpc.RpcError as error:
            if not (token and error.code() == UNAUTHENTICATED and await self._refresh_after_refusal(token)):
                raise ClientError.from_rpc_error(error, method.qualified_name) from None
        try:
            metadata = self._metadata(self._tokens.access, metadata)
            return await self._callable(method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error, method.qualified_name) from None

    async def _stream(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> AsyncIterator[Any]:
        deadline = self.timeout if timeout is None else timeout
        token = await self._token_for_call(spec)
        call = self._callable(method)(request, timeout=deadline, metadata=self._metadata(token, metadata))
        received = False
        try:
            async for response in call:
                received = True
                yield response
            return
        except grpc.RpcError as error:
            retry = (
                not received and token and error.code() == UNAUTHENTICATED and await self._refresh_after_refusal(token)
            )
            if not retry:
                raise ClientError.from_rpc_error(error, method.qualified_name) from None
        finally:
            call.cancel()
        call = self._callable(method)(request, timeout=deadline, metadata=self._metadata(self._tokens.access, metadata))
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error, method.qualified_name) from None
        finally:
            call.cancel()


class AsyncServiceClient(_ServiceClientBase):
    """``client.<label>`` of an ``AsyncClient``."""

    _client: AsyncClient

    def iterate(self, *args: Any, **filters: Any) -> AsyncIterator[Any]:
        """Yield every item of every List page, following ``next_page_token``."""
        return self._pages(*self._prepare("List", args, filters))

    async def _pages(self, method: RpcMethod, request: Any, timeout: float, metadata: Any) -> AsyncIterator[Any]:
        item_field = _item_field(method.response_class)
        while True:
            page = await self._client._unary(self.spec, method, request, timeout=timeout, metadata=metadata)
            for item in _items(page, item_field):
                yield item
            if not page.next_page_token:
                return
            request = _with_page_token(request, page.next_page_token)

    def stream(self, *args: Any, **fields: Any) -> AsyncIterator[Any]:
        """Yield every item of every message of ``Stream``."""
        return self._flatten(*self._prepare("Stream", args, fields))

    async def _flatten(self, method: RpcMethod, request: Any, timeout: float, metadata: Any) -> AsyncIterator[Any]:
        item_field = _item_field(method.response_class)
        async for response in self._client._stream(self.spec, method, request, timeout=timeout, metadata=metadata):
            for item in _items(response, item_field):
                yield item
