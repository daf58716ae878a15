"""A Redis cache that fails fast: a cache outage costs a call milliseconds and a clear UNAVAILABLE, never a thread.

Django's ``RedisCache`` waits for redis-py's socket timeouts (5 s by
default) on every operation while Redis is down or hung, so a dozen
rate-limited logins against a stopped Redis held every thread of the pool.
``FailFastRedisCache`` is the same backend with three differences:

- short socket timeouts by default (``socket_connect_timeout`` and
  ``socket_timeout``, ``DEFAULT_SOCKET_TIMEOUT``; ``OPTIONS`` may say otherwise);
- after an operation fails to reach Redis, every operation of the process
  fails at once, without touching the network, for ``FAIL_FAST_SECONDS``;
  then a single operation tries Redis again while the others keep failing
  fast, and its success ends the outage (a circuit breaker, shared by the
  process's threads);
- a failure is raised as ``CacheUnavailable`` (a redis-py ``ConnectionError``
  that says which cache is down), which the error map turns into UNAVAILABLE
  over gRPC and HTTP 503 with ``Retry-After`` over REST.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

#: Seconds to connect to Redis or wait for an answer before the operation fails.
DEFAULT_SOCKET_TIMEOUT = 0.5
#: Seconds every operation fails at once after one failed to reach Redis.
DEFAULT_FAIL_FAST_SECONDS = 1.0
#: What redis-py raises when the server cannot be reached or does not answer in time.
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: The operations of Django's Redis cache client, each of which talks to Redis.
OPERATIONS = ("add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "set_many", "delete_many", "clear")


class CacheUnavailable(redis.exceptions.ConnectionError):
    """The cache cannot be reached now; a retry after ``retry_after`` seconds may succeed."""

    #: Read by the error map: the message names what is unavailable.
    unavailable_service = "cache"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class Breaker:
    """The outage state of one cache location, shared by every thread of the process."""

    def __init__(self, location: str, fail_fast_seconds: float):
        self.location = location
        self.fail_fast_seconds = fail_fast_seconds
        self.down_until = 0.0
        self.lock = threading.Lock()

    def before(self) -> None:
        """Raise ``CacheUnavailable`` while the cache is known to be down; let one probe through per interval."""
        if not self.down_until:
            return
        with self.lock:
            now = time.monotonic()
            if now < self.down_until:
                raise CacheUnavailable(
                    f"The cache ({self.location}) is unavailable; retry later.", self.down_until - now
                )
            self.down_until = now + self.fail_fast_seconds  # this operation probes; the others fail fast meanwhile

    def failed(self, exc: BaseException) -> CacheUnavailable:
        """Record an operation that could not reach the cache; return the error to raise in its place."""
        with self.lock:
            self.down_until = time.monotonic() + self.fail_fast_seconds
        return CacheUnavailable(
            f"The cache ({self.location}) is unavailable: {type(exc).__name__}; retry later.", self.fail_fast_seconds
        )

    def succeeded(self) -> None:
        if self.down_until:
            with self.lock:
                self.down_until = 0.0


_breakers: dict[tuple[str, ...], Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(servers: list[str], fail_fast_seconds: float) -> Breaker:
    """Return the process's breaker of the cache at ``servers`` (one per location, whatever the thread)."""
    key = tuple(servers)
    with _breakers_lock:
        if key not in _breakers:
            location = ", ".join(server.rpartition("@")[2] for server in servers)  # never a password
            _breakers[key] = Breaker(location, fail_fast_seconds)
        return _breakers[key]


def guarded(operation: Callable) -> Callable:
    """Wrap a cache client operation with its location's breaker."""

    @functools.wraps(operation)
    def call(self: FailFastRedisCacheClient, *args: Any, **kwargs: Any) -> Any:
        self.breaker.before()
        try:
            result = operation(self, *args, **kwargs)
        except UNREACHABLE as exc:
            raise self.breaker.failed(exc) from exc
        self.breaker.succeeded()
        return result

    return call


class FailFastRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, each operation guarded by the location's breaker."""

    def __init__(self, servers, *, fail_fast_seconds: float = DEFAULT_FAIL_FAST_SECONDS, **options: Any):
        options.setdefault("socket_connect_timeout", DEFAULT_SOCKET_TIMEOUT)
        options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        super().__init__(servers, **options)
        self.breaker = breaker_for(list(servers), fail_fast_seconds)


for _name in OPERATIONS:
    setattr(FailFastRedisCacheClient, _name, guarded(getattr(RedisCacheClient, _name)))


class FailFastRedisCache(RedisCache):
    """Django's ``RedisCache`` that fails fast while Redis is down or hung (see the module).

    ``OPTIONS``: ``FAIL_FAST_SECONDS`` (how long operations fail at once after
    a failure), plus whatever Django's backend takes (``socket_timeout``...).
    """

    def __init__(self, server, params):
        super().__init__(server, params)
        options: dict[str, Any] = dict(params.get("OPTIONS", {}))
        fail_fast = options.pop("FAIL_FAST_SECONDS", DEFAULT_FAIL_FAST_SECONDS)
        self._options = {**options, "fail_fast_seconds": float(fail_fast)}
        self._class = FailFastRedisCacheClient
