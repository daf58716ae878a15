"""The measurements, one function per row of the table, each for one kind of server."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import grpc
from django.db import connections

from bench import loadgen
from bench.loadgen import Run
from bench.processes import Server
from protos import posts_pb2, posts_pb2_grpc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Failure(Exception):
    """A call did not succeed: the numbers would be meaningless."""


def check(run: Run, what: str, server: Server | None = None, failed_before: int = 0) -> Run:
    """Fail unless every call succeeded, counting the calls the server answered with a non-OK status."""
    if server is not None:
        errors = server.failed_calls() - failed_before
        run.failed += errors
        run.calls -= errors
    if run.failed or run.calls <= 0:
        raise Failure(f"{what}: {run.failed} failed call(s), {run.calls} succeeded")
    return run


def grpc_url(server: Server, method: str) -> str:
    return f"http://127.0.0.1:{server.port}/posts.PostController/{method}"


def http_headers(server: Server) -> tuple[tuple[str, str], ...]:
    """Return the HTTP ``Authorization`` header (or gRPC metadata) of an authenticated call."""
    return (("authorization", f"Bearer {server.token}"),) if server.token else ()


# gRPC (the project's server and the plain-grpcio floor) -----------------------------------

#: Every gRPC call carries a deadline, as the project's client sends one with every call (its default 10 s).
DEADLINE = ("grpc-timeout", "10S")


def grpc_unary(
    server: Server,
    method: str,
    request,
    *,
    duration: float,
    quick: bool,
    connections: int,
    streams: int,
    quick_calls: int,
) -> Run:
    """Drive one unary RPC: h2load with ``connections`` x ``streams`` in flight, or (quick) a Python client."""
    if quick:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = getattr(posts_pb2_grpc.PostControllerStub(channel), method)
            metadata = server.auth_metadata()
            return check(
                loadgen.python_calls(lambda: call(request, metadata=metadata, timeout=10), requests=quick_calls),
                f"gRPC {method}",
            )
    failed_before = server.failed_calls()
    run = loadgen.h2load(
        grpc_url(server, method),
        loadgen.grpc_frame(request),
        connections=connections,
        streams=streams,
        duration=duration,
        headers=(*http_headers(server), DEADLINE),
    )
    return check(run, f"{server.name} {method}", server, failed_before)


def grpc_retrieve(server: Server, post_id: str, *, duration: float, connections_: int, quick: bool) -> Run:
    request = posts_pb2.PostRetrieveRequest(id=post_id)
    return grpc_unary(
        server,
        "Retrieve",
        request,
        duration=duration,
        quick=quick,
        connections=connections_,
        streams=8,
        quick_calls=200,
    )


def grpc_list(server: Server, page_size: int, *, duration: float, quick: bool) -> Run:
    request = posts_pb2.PostListRequest(page_size=page_size)
    return grpc_unary(server, "List", request, duration=duration, quick=quick, connections=1, streams=1, quick_calls=10)


def grpc_create(server: Server, *, duration: float, quick: bool) -> Run:
    """Create posts; the owner is the caller (the token's user), as on DRF's side."""
    request = posts_pb2.PostCreateRequest(title="Created by the benchmark", description="x" * 120)
    return grpc_unary(
        server, "Create", request, duration=duration, quick=quick, connections=2, streams=2, quick_calls=50
    )


#: Items per BatchCreate call: the largest batch (MAX_BATCH_SIZE).
BATCH_SIZE = 1000


def batch_create_request() -> posts_pb2.PostBatchCreateRequest:
    item = posts_pb2.PostCreateRequest(title="Created by the benchmark", description="x" * 120)
    return posts_pb2.PostBatchCreateRequest(requests=[item] * BATCH_SIZE)


def grpc_batch_create(server: Server, *, duration: float, quick: bool) -> Run:
    """Create posts in batches of 1,000; the run's ``calls`` are rows, not RPCs."""
    run = grpc_unary(
        server,
        "BatchCreate",
        batch_create_request(),
        duration=duration,
        quick=quick,
        connections=1,
        streams=2,
        quick_calls=3,
    )
    return Run(calls=run.calls * BATCH_SIZE, failed=run.failed, seconds=run.seconds, latencies_ms=run.latencies_ms)


def grpc_stream(server: Server, rows: int, *, quick: bool) -> tuple[Run, int]:
    """Stream every row once; return the run (calls = rows) and the servers' RSS growth in kB."""
    reset_peak_rss(server)
    before = server.rss_kb()
    started = time.perf_counter()
    if quick:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            responses = stub.Stream(posts_pb2.PostStreamRequest(), metadata=server.auth_metadata(), timeout=60)
            received = streamed_rows(responses)
        if received != rows:
            raise Failure(f"{server.name} Stream sent {received} rows, expected {rows}")
        seconds = time.perf_counter() - started
    else:
        failed_before = server.failed_calls()
        run = check(
            loadgen.h2load(
                grpc_url(server, "Stream"),
                loadgen.grpc_frame(posts_pb2.PostStreamRequest()),
                connections=1,
                streams=1,
                requests=1,
                headers=(*http_headers(server), DEADLINE),
            ),
            f"{server.name} Stream",
            server,
            failed_before,
        )
        seconds = run.seconds
    growth = server.peak_rss_kb() - before
    return Run(calls=rows, failed=0, seconds=seconds, latencies_ms=[seconds * 1000]), growth


def streamed_rows(responses) -> int:
    """Count the rows of a Stream call (each response carries one batch)."""
    return sum(len(response.posts) for response in responses)


def verify_grpc(server: Server, post_id: str, page_size: int) -> None:
    """Check with a real gRPC client that the calls the load generator repeats end in status OK."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = posts_pb2_grpc.PostControllerStub(channel)
        try:
            metadata = server.auth_metadata()
            post = stub.Retrieve(posts_pb2.PostRetrieveRequest(id=post_id), timeout=10, metadata=metadata)
            page = stub.List(posts_pb2.PostListRequest(page_size=page_size), timeout=30, metadata=metadata)
        except grpc.RpcError as exc:
            raise Failure(f"{server.name}: {exc.code().name} {exc.details()}") from None
    if not post.id or len(page.posts) != page_size:
        raise Failure(f"{server.name}: Retrieve or List answered without the rows")


def verify_stream(server: Server, rows: int) -> None:
    """Check with a real gRPC client that Stream sends every row and ends in status OK."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = posts_pb2_grpc.PostControllerStub(channel)
        try:
            received = streamed_rows(
                stub.Stream(posts_pb2.PostStreamRequest(), timeout=120, metadata=server.auth_metadata())
            )
        except grpc.RpcError as exc:
            raise Failure(f"{server.name} Stream: {exc.code().name} {exc.details()}") from None
    if received != rows:
        raise Failure(f"{server.name} Stream sent {received} rows, expected {rows}")


# DRF under granian -------------------------------------------------------------------------


def drf_http(
    server: Server,
    what: str,
    path: str,
    *,
    duration: float,
    quick: bool,
    connections: int,
    quick_calls: int,
    method: str = "GET",
    body: str | None = None,
) -> Run:
    """Drive one DRF endpoint: wrk with ``connections``, or (quick) a Python HTTP client."""
    headers = http_headers(server)
    if quick:
        call = lambda: loadgen.http_call(server.port, method, path, body, headers=headers)  # noqa: E731
        return check(loadgen.python_calls(call, requests=quick_calls), f"DRF {what}")
    run = loadgen.wrk(
        f"http://127.0.0.1:{server.port}{path}",
        connections=connections,
        duration=duration,
        method=method,
        body=body,
        headers=headers,
    )
    return check(run, f"{server.name} {what}")


def drf_retrieve(server: Server, post_id: str, *, duration: float, connections_: int, quick: bool) -> Run:
    path = f"/bench/posts/{post_id}/"
    return drf_http(server, "Retrieve", path, duration=duration, quick=quick, connections=connections_, quick_calls=200)


def drf_list(server: Server, page_size: int, *, duration: float, quick: bool) -> Run:
    path = f"/bench/posts/?limit={page_size}"
    return drf_http(server, "List", path, duration=duration, quick=quick, connections=1, quick_calls=10)


def drf_create(server: Server, owner_id: str, *, duration: float, quick: bool) -> Run:
    body = json.dumps({"owner": owner_id, "title": "Created by the benchmark", "description": "x" * 120})
    return drf_http(
        server,
        "Create",
        "/bench/posts/",
        duration=duration,
        quick=quick,
        connections=4,
        quick_calls=50,
        method="POST",
        body=body,
    )


def drf_export(server: Server, rows: int) -> tuple[Run, int]:
    """Fetch every row as one JSON list (DRF has no stream); return the run and the RSS growth in kB."""
    reset_peak_rss(server)
    before = server.rss_kb()
    started = time.perf_counter()
    content = loadgen.http_call(server.port, "GET", f"/bench/posts/?limit={rows}", headers=http_headers(server))
    seconds = time.perf_counter() - started
    growth = server.peak_rss_kb() - before
    received = len(json.loads(content)["results"])
    if received != rows:
        raise Failure(f"{server.name} export sent {received} rows, expected {rows}")
    return Run(calls=rows, failed=0, seconds=seconds, latencies_ms=[seconds * 1000]), growth


# Connect (the web process) --------------------------------------------------------------------


def connect_http(
    server: Server,
    what: str,
    method: str,
    body: str | bytes,
    content_type: str,
    *,
    duration: float,
    quick: bool,
    connections: int,
    quick_calls: int,
) -> Run:
    """Drive one Connect unary RPC (a POST of ``body``): wrk with ``connections``, or (quick) a Python client."""
    path = f"/posts.PostController/{method}"
    headers = (*http_headers(server), ("Content-Type", content_type))
    if quick:
        call = lambda: loadgen.http_call(server.port, "POST", path, body, headers=headers)  # noqa: E731
        return check(loadgen.python_calls(call, requests=quick_calls), f"Connect {what}")
    run = loadgen.wrk(
        f"http://127.0.0.1:{server.port}{path}",
        connections=connections,
        duration=duration,
        method="POST",
        body=body,
        headers=headers,
    )
    return check(run, f"{server.name} {what}")


def connect_retrieve(server: Server, post_id: str, *, duration: float, connections_: int, quick: bool) -> Run:
    """Retrieve over the Connect protocol with JSON, as a browser page calls it."""
    body = json.dumps({"id": post_id})
    return connect_http(
        server,
        "Retrieve (JSON)",
        "Retrieve",
        body,
        "application/json",
        duration=duration,
        quick=quick,
        connections=connections_,
        quick_calls=200,
    )


def connect_list(server: Server, page_size: int, *, duration: float, quick: bool) -> Run:
    """List ``page_size`` posts over the Connect protocol with binary protobuf, one call at a time."""
    body = posts_pb2.PostListRequest(page_size=page_size).SerializeToString()
    return connect_http(
        server,
        "List (binary)",
        "List",
        body,
        "application/proto",
        duration=duration,
        quick=quick,
        connections=1,
        quick_calls=10,
    )


def verify_connect(server: Server, post_id: str, page_size: int) -> None:
    """Check, before loading, that Retrieve answers the post (JSON) and List a full page (binary)."""
    path = "/posts.PostController/"
    headers = http_headers(server)
    retrieved = json.loads(
        loadgen.http_call(server.port, "POST", path + "Retrieve", json.dumps({"id": post_id}), headers=headers)
    )
    if retrieved.get("id") != post_id:
        raise Failure(f"{server.name} Retrieve answered {retrieved!r}")
    listed = posts_pb2.PostListResponse.FromString(
        loadgen.http_call(
            server.port,
            "POST",
            path + "List",
            posts_pb2.PostListRequest(page_size=page_size).SerializeToString(),
            headers=(*headers, ("Content-Type", "application/proto")),
        )
    )
    if len(listed.posts) != page_size:
        raise Failure(f"{server.name} List sent {len(listed.posts)} posts, expected {page_size}")


def reset_peak_rss(server: Server) -> None:
    """Reset VmHWM to the current RSS (Linux: ``5 > /proc/PID/clear_refs``), so the peak is this run's."""
    for pid in server.serving_pids():
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as file:
                file.write("5")
        except OSError:
            pass


# In-process floor: a raw cursor fetch plus protobuf encoding -------------------------------

RAW_QUERY = "SELECT id, owner_id, title, description, created, updated FROM posts_post ORDER BY created DESC, id DESC"


def raw_post(row: tuple) -> posts_pb2.Post:
    """Build a Post from a raw row, converting what the driver returns (SQLite: text; PostgreSQL: objects)."""
    post_id, owner_id, title, description, created, updated = row
    return posts_pb2.Post(
        id=str(post_id if isinstance(post_id, uuid.UUID) else uuid.UUID(post_id)),
        owner=str(owner_id if isinstance(owner_id, uuid.UUID) else uuid.UUID(owner_id)),
        title=title,
        description=description,
        created=raw_timestamp(created),
        updated=raw_timestamp(updated),
    )


def raw_timestamp(value) -> dict:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return {"seconds": delta.days * 86400 + delta.seconds, "nanos": delta.microseconds * 1000}


def raw_list(alias: str, page_size: int, repeat: int) -> Run:
    """Time fetching one page with a raw cursor and encoding it as a ListResponse."""
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        with connections[alias].cursor() as cursor:
            cursor.execute(f"{RAW_QUERY} LIMIT {int(page_size)}")
            posts = [raw_post(row) for row in cursor.fetchall()]
        posts_pb2.PostListResponse(posts=posts).SerializeToString()
        latencies.append((time.perf_counter() - started) * 1000)
    total = sum(latencies) / 1000
    return Run(calls=repeat, failed=0, seconds=total, latencies_ms=latencies)


def raw_stream(alias: str, chunk_size: int = 1000) -> tuple[Run, int]:
    """Time fetching every row in chunks and encoding each chunk as a gRPC frame; return the run and the bytes."""
    started = time.perf_counter()
    rows = total_bytes = 0
    with connections[alias].cursor() as cursor:
        cursor.execute(RAW_QUERY)
        while chunk := cursor.fetchmany(chunk_size):
            batch = posts_pb2.PostStreamResponse(posts=[raw_post(row) for row in chunk])
            total_bytes += len(loadgen.grpc_frame(batch))
            rows += len(chunk)
    seconds = time.perf_counter() - started
    return Run(calls=rows, failed=0, seconds=seconds, latencies_ms=[seconds * 1000]), total_bytes
