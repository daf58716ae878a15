"""Rate limits shared by the REST API and gRPC: DRF throttles, fed a gRPC call.

A throttle class is written once, as a DRF ``SimpleRateThrottle``; the REST
views list it in ``throttle_classes`` and so do the gRPC services. For gRPC
``client_request`` gives the throttle what it reads from a DRF request: the
user and the client's address (the peer's IP, or behind trusted L7 proxies the one they
forwarded, as ``REMOTE_ADDR``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from grpc_ext.settings import grpc_ext_settings


class ClientRateThrottle(SimpleRateThrottle):
    """Limit requests per client address, at the rate ``DEFAULT_THROTTLE_RATES[scope]``.

    The rate is read on every request, not once at import as DRF's class does,
    so a changed setting (a test's, or an environment's) takes effect.
    Counters live in Django's default cache.
    """

    def get_rate(self) -> str | None:
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
        return rates.get(self.scope) if self.scope else None

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


@dataclass(frozen=True)
class ClientRequest:
    """The part of a DRF request a throttle reads, taken from a gRPC call."""

    user: Any
    META: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def peer_address(peer: str) -> str:
    """Return the client address of a gRPC peer: ``ipv4:10.0.0.1:5000`` -> ``10.0.0.1``."""
    kind, _, address = unquote(peer).partition(":")
    if kind == "ipv4":
        return address.rpartition(":")[0]
    if kind == "ipv6":
        return address.rpartition(":")[0].strip("[]")
    return peer


#: The metadata an L7 proxy (HAProxy ``option forwardfor``, Envoy) adds with the addresses it forwards for.
FORWARDED_FOR = "x-forwarded-for"


def client_request(service) -> ClientRequest:
    """Describe the caller of ``service``'s RPC the way a DRF throttle expects."""
    return ClientRequest(user=service.user, META={"REMOTE_ADDR": client_address(service.context)})


def client_address(context) -> str:
    """Return the address a call's rate limits count against: the peer's, or the one a trusted proxy forwarded.

    Behind ``GRPC_FRAMEWORK["NUM_PROXIES"]`` L7 proxies, every call's peer is
    the nearest proxy, so it is the address the outermost of them appended to
    ``x-forwarded-for`` (as DRF's ``get_ident`` reads ``X-Forwarded-For`` with
    its own ``NUM_PROXIES`` over HTTP); without it, every caller behind a
    balancer would share the balancer's one rate limit. With 0 (the default)
    the metadata is ignored: a client could send any address in it. A call
    served by the web process over Connect says how many proxies stand in
    front of it (``num_proxies``: REST's ``NUM_PROXIES``, the same proxies).
    """
    peer = peer_address(context.peer())
    proxies = getattr(context, "num_proxies", None)  # the web process's Connect calls: REST's NUM_PROXIES
    if proxies is None:
        proxies = grpc_ext_settings.NUM_PROXIES
    if not proxies:
        return peer
    forwarded = [str(value) for key, value in context.invocation_metadata() or () if key == FORWARDED_FOR]
    addresses = [address.strip() for address in ",".join(forwarded).split(",") if address.strip()]
    return addresses[-min(proxies, len(addresses))] if addresses else peer


def allow_requests(throttle: Any, request, view, count: int = 1) -> bool:
    """Tell whether ``count`` more requests fit the throttle's rate, and count them if so.

    A DRF ``SimpleRateThrottle`` counts one request per call; a batch of
    ``count`` items counts as ``count`` requests, all or none, so a refused
    batch uses none of the budget.
    """
    if count == 1 or not isinstance(throttle, SimpleRateThrottle):
        return all(throttle.allow_request(request, view) for _ in range(count))
    throttle = rate_throttle(throttle)
    if throttle.rate is None:
        return True
    throttle.key = throttle.get_cache_key(request, view)
    if throttle.key is None:
        return True
    throttle.history = throttle.cache.get(throttle.key, [])
    throttle.now = throttle.timer()
    while throttle.history and throttle.history[-1] <= throttle.now - throttle.duration:
        throttle.history.pop()
    if len(throttle.history) + count > throttle.num_requests:
        return throttle.throttle_failure()
    throttle.history[:0] = [throttle.now] * count
    throttle.cache.set(throttle.key, throttle.history, throttle.duration)
    return True


def rate_throttle(throttle: SimpleRateThrottle) -> Any:
    """Return the throttle, typed loosely: ``SimpleRateThrottle`` sets ``duration`` and ``num_requests`` itself."""
    return throttle
