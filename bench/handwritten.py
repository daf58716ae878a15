"""The hand-written server: Retrieve and a keyset Stream as one would write them with grpcio and the driver.

No Django, no token check: per Retrieve one ``SELECT ... WHERE id = %s`` on
the thread's own connection and the row built into a ``Post``; per Stream
batch one keyset query (``(created, id) < last``, newest first, as the
project's Stream) built into a ``PostStreamResponse``. psycopg2 on
PostgreSQL, sqlite3 on SQLite; grpcio's synchronous server with 10 threads,
or (``--native``) pygrpc-native's, which takes the same servicer. Run as
``python -m bench.handwritten PORT DATABASE_URL [--native]``.
"""

from __future__ import annotations

import signal
import sys
import uuid
from concurrent import futures
from datetime import UTC, datetime

import grpc

from bench.insert_floor import InsertFloorServicer
from protos import posts_pb2, posts_pb2_grpc

COLUMNS = "id, owner_id, title, description, created, updated, etag"


class HandwrittenServicer(InsertFloorServicer):
    """Retrieve and Stream on the insert floor's per-thread connections."""

    def __init__(self, database_url: str):
        super().__init__(database_url, owner_id="")
        mark = "%s" if self.postgres else "?"
        self.retrieve_sql = f"SELECT {COLUMNS} FROM posts_post WHERE id = {mark}"
        self.first_sql = f"SELECT {COLUMNS} FROM posts_post ORDER BY created DESC, id DESC LIMIT {mark}"
        self.next_sql = (
            f"SELECT {COLUMNS} FROM posts_post WHERE (created, id) < ({mark}, {mark}) "
            f"ORDER BY created DESC, id DESC LIMIT {mark}"
        )

    def query(self, sql: str, parameters: tuple) -> list[tuple]:
        connection = self.connection()
        if self.postgres:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql, parameters)
                return cursor.fetchall()
        return connection.execute(sql, parameters).fetchall()

    def fill(self, post: posts_pb2.Post, row: tuple) -> None:
        post_id, owner_id, title, description, created, updated, etag = row
        if not self.postgres:  # sqlite3: UUIDs as 32 hex digits, times as text
            post_id, owner_id = uuid.UUID(post_id), uuid.UUID(owner_id)
            created = datetime.fromisoformat(created).replace(tzinfo=UTC)
            updated = datetime.fromisoformat(updated).replace(tzinfo=UTC)
        post.id, post.owner, post.title, post.description, post.etag = (
            str(post_id),
            str(owner_id),
            title,
            description,
            etag,
        )
        post.created.FromDatetime(created)
        post.updated.FromDatetime(updated)

    def Retrieve(self, request, context):
        try:
            key = uuid.UUID(request.id)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id is not a UUID")
        rows = self.query(self.retrieve_sql, (str(key) if self.postgres else key.hex,))
        if not rows:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such post")
        post = posts_pb2.Post()
        self.fill(post, rows[0])
        return post

    def Stream(self, request, context):
        size = request.batch_size or 1000
        rows = self.query(self.first_sql, (size,))
        while rows and context.is_active():
            response = posts_pb2.PostStreamResponse()
            for row in rows:
                self.fill(response.posts.add(), row)
            yield response
            last = rows[-1]
            rows = self.query(self.next_sql, (last[4], last[0], size)) if len(rows) == size else []


def main(port: int, database_url: str, native: bool) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=10)
    server: grpc.Server
    if native:
        import pygrpc_native

        server = pygrpc_native.server(pool)
    else:
        server = grpc.server(pool)
    posts_pb2_grpc.add_PostControllerServicer_to_server(HandwrittenServicer(database_url), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *args: server.stop(0))
    print(f"hand-written server ({'native' if native else 'grpcio'}) on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], "--native" in sys.argv[3:])
