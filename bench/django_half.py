"""The Django half of a Retrieve, in process: what one call costs with no transport around it.

Runs the request cycle of ``posts.PostController/Retrieve`` as a pool thread
runs it (``CallContext.run`` -> ``RequestCycle.run_unary``: the request
signals, the database check, the cached token, permissions, throttles, the
prepared lookup under its statement timeout, the model instance, the
message), ``CALLS`` times in a loop, and prints its CPU per call in µs. Set
against the server's CPU per call under load, it tells the transport's share.
Run as ``python -m bench.django_half POST_ID TOKEN [CALLS]`` with a server's
environment (``bench.processes.server_env``).
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import django


class Metadatum(NamedTuple):
    key: str
    value: str


class LoadContext:
    """What a call under the benchmark's load shows the cycle: a bearer token, a peer, a 10 s deadline."""

    def __init__(self, token: str):
        self.metadata = (Metadatum("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[Metadatum, ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def time_remaining(self) -> float:
        return 10.0


def main(post_id: str, token: str, calls: int) -> None:
    django.setup()
    from grpc_ext.server.calls import CallContext
    from posts.servicers import PostService
    from protos import posts_pb2

    cycle = PostService.request_cycle_class(PostService, "Retrieve", {})
    request = posts_pb2.PostRetrieveRequest(id=post_id)

    def one() -> None:
        call = CallContext(LoadContext(token))  # type: ignore[arg-type]  # the part of grpc's context it reads
        _, status = call.run(cycle.run_unary, request, call)
        if status is not None:
            raise SystemExit(f"Retrieve failed: {status.code.name} {status.details}")

    for _ in range(min(calls, 300)):  # warm: the token cache, the prepared lookup, the connection
        one()
    started = time.process_time()
    for _ in range(calls):
        one()
    print(f"{(time.process_time() - started) / calls * 1e6:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3000)
