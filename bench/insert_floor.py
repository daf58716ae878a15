"""The insert floor: a plain grpcio servicer whose Create runs the same INSERT as the project's, with the driver.

No Django: per call, one INSERT of the row the project's Create writes (a new
UUID, the owner, title, description, both timestamps and an etag), committed,
and the Post message built from it. psycopg2 on PostgreSQL, sqlite3 on SQLite;
one connection per server thread. Run as ``python -m bench.insert_floor PORT
DATABASE_URL OWNER_ID``.
"""

from __future__ import annotations

import secrets
import signal
import sqlite3
import sys
import threading
import uuid
from concurrent import futures
from datetime import UTC, datetime

import dj_database_url
import grpc

from protos import posts_pb2, posts_pb2_grpc

INSERT = (
    "INSERT INTO posts_post (id, owner_id, title, description, created, updated, etag) "
    "VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0})"
)


class InsertFloorServicer(posts_pb2_grpc.PostControllerServicer):
    def __init__(self, database_url: str, owner_id: str):
        self.config = dj_database_url.parse(database_url)
        self.postgres = "postgresql" in self.config["ENGINE"]
        self.owner_id = owner_id
        self.local = threading.local()
        self.sql = INSERT.format("%s" if self.postgres else "?")

    def connection(self):
        connection = getattr(self.local, "connection", None)
        if connection is None:
            if self.postgres:
                import psycopg2

                connection = psycopg2.connect(
                    dbname=self.config["NAME"],
                    user=self.config["USER"],
                    password=self.config["PASSWORD"] or None,
                    host=self.config["HOST"] or None,
                    port=self.config["PORT"] or None,
                )
            else:
                connection = sqlite3.connect(self.config["NAME"], timeout=20, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
            self.local.connection = connection
        return connection

    def Create(self, request, context):
        post_id, now, etag = uuid.uuid4(), datetime.now(UTC), secrets.token_hex(8)
        row: tuple[object, ...]
        if self.postgres:
            row = (str(post_id), self.owner_id, request.title, request.description, now, now, etag)
        else:
            stamp = now.replace(tzinfo=None).isoformat(" ")
            row = (post_id.hex, uuid.UUID(self.owner_id).hex, request.title, request.description, stamp, stamp, etag)
        connection = self.connection()
        if self.postgres:
            with connection, connection.cursor() as cursor:  # one transaction, committed
                cursor.execute(self.sql, row)
        else:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(self.sql, row)
            connection.execute("COMMIT")
        post = posts_pb2.Post(
            id=str(post_id), owner=self.owner_id, title=request.title, description=request.description, etag=etag
        )
        post.created.FromDatetime(now)
        post.updated.FromDatetime(now)
        return post


def main(port: int, database_url: str, owner_id: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    posts_pb2_grpc.add_PostControllerServicer_to_server(InsertFloorServicer(database_url, owner_id), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *args: server.stop(0))
    print(f"insert floor serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
