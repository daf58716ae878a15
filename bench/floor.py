"""The floor: a plain grpcio servicer that answers every PostController RPC with prebuilt messages.

No Django, no database: what grpcio itself costs per RPC and per streamed row.
Run as ``python -m bench.floor PORT ROWS [--aio]`` (``--aio``: grpc.aio's server).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from concurrent import futures
from datetime import UTC, datetime

import grpc

from protos import posts_pb2, posts_pb2_grpc


def sample_post() -> posts_pb2.Post:
    """Return a post shaped like the seeded ones."""
    post = posts_pb2.Post(
        id=str(uuid.uuid4()), owner=str(uuid.uuid4()), title="Benchmark post 1", description="x" * 120
    )
    now = datetime.now(UTC)
    post.created.FromDatetime(now)
    post.updated.FromDatetime(now)
    return post


class FloorServicer(posts_pb2_grpc.PostControllerServicer):
    def __init__(self, stream_rows: int):
        self.post = sample_post()
        self.page = posts_pb2.PostListResponse(posts=[self.post] * 1000)
        self.stream_rows = stream_rows

    def Retrieve(self, request, context):
        return self.post

    def Create(self, request, context):
        return self.post

    def List(self, request, context):
        return self.page

    def Stream(self, request, context):
        """Send the rows in batches of 1,000, as the project's Stream does by default."""
        batch = posts_pb2.PostStreamResponse(posts=[self.post] * 1000)
        for start in range(0, self.stream_rows, 1000):
            remaining = self.stream_rows - start
            yield batch if remaining >= 1000 else posts_pb2.PostStreamResponse(posts=[self.post] * remaining)


class AioFloorServicer(FloorServicer):
    """The same answers from coroutines, for grpc.aio's server: the floor of the project's own server model."""

    async def Retrieve(self, request, context):
        return self.post

    async def Create(self, request, context):
        return self.post

    async def List(self, request, context):
        return self.page

    async def Stream(self, request, context):
        for response in FloorServicer.Stream(self, request, context):
            yield response


async def main_aio(port: int, stream_rows: int) -> None:
    server = grpc.aio.server()
    posts_pb2_grpc.add_PostControllerServicer_to_server(AioFloorServicer(stream_rows), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    print(f"grpc.aio floor serving on 127.0.0.1:{port}", flush=True)
    await stopped.wait()
    await server.stop(0)


def main(port: int, stream_rows: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    posts_pb2_grpc.add_PostControllerServicer_to_server(FloorServicer(stream_rows), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *args: server.stop(0))
    print(f"floor serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    if "--aio" in sys.argv[3:]:
        asyncio.run(main_aio(int(sys.argv[1]), int(sys.argv[2])))
    else:
        main(int(sys.argv[1]), int(sys.argv[2]))
