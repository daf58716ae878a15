"""A mixed load through the balancer, with the project's Python client, that records what every call saw.

Each worker thread is a user of its own with a ``grpc_ext.client.Client`` (its
retry policy: reads and writes with a ``request_id`` retried on UNAVAILABLE)
and loops over a mix of calls: Create (the client fills in ``request_id``),
Retrieve, List, Stream and PartialUpdate with the post's etag, with short, long
and no deadlines (a call without one goes through the client's channel, so
the same retry policy applies, since the client itself always sets one).
Optionally the mix adds signup and login over gRPC and over REST, the calls
that use the cache.

A Create the client saw succeed is *acknowledged*: it must be in the database
exactly once, under the id it answered. A Create that failed is *in doubt*: it
may or may not be there, but never twice. A PartialUpdate that failed with
UNAVAILABLE is sent once more with the same etag: ABORTED then means the first
was applied (the etag moved), never that it was applied twice.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from grpc_ext.client import Client, ClientError
from protos import posts_pb2, posts_pb2_grpc

PASSWORD = "cluster-drill-password-1"
OK = "OK"


@dataclass(frozen=True)
class Deadlines:
    """Seconds of the short and long deadlines; ``None`` is a call without one."""

    short: float = 1.0
    long: float = 30.0


@dataclass
class Outcome:
    """One call as the client saw it."""

    method: str
    deadline: float | None
    started: float
    ended: float
    code: str
    details: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def is_read(self) -> bool:
        return self.method in {"Retrieve", "List", "Stream", "Health"}


@dataclass
class Written:
    """The posts a worker created and what it changed, for the checks against the database."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # title -> id the client was answered
    in_doubt: set[str] = field(default_factory=set)  # titles of Creates that failed
    titles: dict[str, str] = field(default_factory=dict)  # id -> title of its last acknowledged update
    pending_titles: dict[str, set[str]] = field(default_factory=dict)  # id -> titles of updates in doubt


class Load:
    """``workers`` threads calling ``target`` until ``stop()``; ``outcomes`` and ``written`` hold what happened.

    ``mix`` names the calls each worker loops over (see ``Worker``); ``pause`` is
    the think time between calls, so that the load leaves room on a small machine.
    """

    def __init__(
        self,
        target: str,
        label: str,
        *,
        workers: int = 4,
        deadlines: Deadlines | None = None,
        mix: tuple[str, ...] = ("Create", "Retrieve", "List", "Stream", "PartialUpdate"),
        pause: float = 0.05,
        web_url: str | None = None,
    ):
        self.target, self.label, self.mix, self.pause, self.web_url = target, label, mix, pause, web_url
        self.deadlines = deadlines or Deadlines()
        self.outcomes: list[Outcome] = []
        self.written = Written()
        self.running = threading.Event()
        self.lock = threading.Lock()
        self.workers = [Worker(self, index) for index in range(workers)]
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Sign every worker up and in, create its first posts, then start calling."""
        for worker in self.workers:
            worker.prepare()
        self.running.set()
        self.threads = [threading.Thread(target=worker.run, name=f"load-{worker.index}") for worker in self.workers]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join(120)
        for worker in self.workers:
            worker.client.close()

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def between(self, start: float, end: float) -> list[Outcome]:
        """Return the calls that started or ended within [start, end] (monotonic seconds)."""
        with self.lock:
            return [o for o in self.outcomes if o.started <= end and o.ended >= start]

    def codes(self, outcomes: list[Outcome] | None = None) -> Counter[str]:
        with self.lock:
            return Counter(o.code for o in (self.outcomes if outcomes is None else outcomes))


class Worker:
    """One user of the load: its client, its posts, and the loop over the mix."""

    def __init__(self, load: Load, index: int):
        self.load, self.index = load, index
        self.email = f"{load.label}-{index}-{uuid.uuid4().hex[:8]}@example.com"
        self.client = Client(load.target, timeout=load.deadlines.long)
        self.posts: dict[str, str] = {}  # id -> etag
        self.count = 0

    def prepare(self) -> None:
        self.client.users.Create(email=self.email, password=PASSWORD)
        self.client.login(self.email, PASSWORD)
        for _ in range(3):
            self.create()

    def run(self) -> None:
        calls: dict[str, Callable[[], None]] = {
            "Create": self.create,
            "Retrieve": self.retrieve,
            "List": self.list,
            "Stream": self.stream,
            "PartialUpdate": self.partial_update,
            "Signup": self.signup,
            "Login": self.login,
            "RestSignup": self.rest_signup,
            "RestLogin": self.rest_login,
        }
        step = 0
        while self.load.running.is_set():
            calls[self.load.mix[step % len(self.load.mix)]]()
            step += 1
            time.sleep(self.load.pause)

    # ------------------------------------------------------------------ calls

    def deadline(self) -> float | None:
        """Cycle the deadlines: short, long, none."""
        self.count += 1
        return (self.load.deadlines.short, self.load.deadlines.long, None)[self.count % 3]

    def call(self, method: str, deadline: float | None, function: Callable[[], Any]) -> Any:
        """Run one call; record its outcome; return its result, or None if it failed."""
        started = time.monotonic()
        try:
            result = function()
        except grpc.RpcError as error:
            failure = ClientError.from_rpc_error(error)
            self.load.record(
                Outcome(method, deadline, started, time.monotonic(), failure.code.name, str(failure.details))
            )
            return None
        self.load.record(Outcome(method, deadline, started, time.monotonic(), OK))
        return result

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.client.access_token}"),)

    def posts_stub(self) -> posts_pb2_grpc.PostControllerStub:
        return posts_pb2_grpc.PostControllerStub(self.client.channel)

    def create(self) -> None:
        title = f"{self.load.label}-{uuid.uuid4().hex}"
        with self.load.lock:
            self.load.written.in_doubt.add(title)
        post = self.call("Create", self.load.deadlines.long, lambda: self.client.posts.Create(title=title))
        if post is not None:
            with self.load.lock:
                self.load.written.in_doubt.discard(title)
                self.load.written.acknowledged[title] = post.id
                self.load.written.titles[post.id] = title
            self.posts[post.id] = post.etag

    def some_post(self) -> str:
        return list(self.posts)[self.count % len(self.posts)]

    def retrieve(self) -> None:
        deadline, post_id = self.deadline(), self.some_post()
        if deadline is None:
            request = posts_pb2.PostRetrieveRequest(id=post_id)
            self.call("Retrieve", None, lambda: self.posts_stub().Retrieve(request, metadata=self.metadata()))
        else:
            self.call("Retrieve", deadline, lambda: self.client.posts.Retrieve(id=post_id, timeout=deadline))

    def list(self) -> None:
        deadline = self.deadline()
        if deadline is None:
            request = posts_pb2.PostListRequest(page_size=50)
            self.call("List", None, lambda: self.posts_stub().List(request, metadata=self.metadata()))
        else:
            self.call("List", deadline, lambda: self.client.posts.List(page_size=50, timeout=deadline))

    def stream(self) -> None:
        deadline = self.deadline()
        if deadline is None:
            request = posts_pb2.PostStreamRequest(batch_size=500)
            self.call(
                "Stream", None, lambda: sum(1 for _ in self.posts_stub().Stream(request, metadata=self.metadata()))
            )
        else:
            self.call(
                "Stream", deadline, lambda: sum(1 for _ in self.client.posts.stream(batch_size=500, timeout=deadline))
            )

    def partial_update(self) -> None:
        post_id = self.some_post()
        title = f"{self.load.label}-{uuid.uuid4().hex}"
        with self.load.lock:
            self.load.written.pending_titles.setdefault(post_id, set()).add(title)
        for attempt in range(2):
            started = time.monotonic()
            etag = self.posts[post_id]
            try:
                post = self.client.posts.PartialUpdate(id=post_id, title=title, etag=etag)
            except ClientError as error:
                code = error.code.name
                self.load.record(
                    Outcome(
                        "PartialUpdate", self.load.deadlines.long, started, time.monotonic(), code, str(error.details)
                    )
                )
                if code == "UNAVAILABLE" and attempt == 0:
                    time.sleep(0.5)
                    continue
                if code == "ABORTED":  # the first attempt was applied: read the post as it is
                    current = self.call(
                        "Retrieve", self.load.deadlines.long, lambda: self.client.posts.Retrieve(id=post_id)
                    )
                    if current is not None:
                        self.posts[post_id] = current.etag
                        self.settle(post_id, current.title)
                return
            self.load.record(Outcome("PartialUpdate", self.load.deadlines.long, started, time.monotonic(), OK))
            self.posts[post_id] = post.etag
            self.settle(post_id, title)
            return

    def settle(self, post_id: str, title: str) -> None:
        with self.load.lock:
            self.load.written.titles[post_id] = title
            self.load.written.pending_titles[post_id] = set()

    # ------------------------------------------------------------------ the calls that use the cache

    def signup(self) -> None:
        email = f"{self.load.label}-signup-{uuid.uuid4().hex[:12]}@example.com"
        self.call("Signup", 5.0, lambda: self.client.users.Create(email=email, password=PASSWORD, timeout=5.0))

    def login(self) -> None:
        auth = self.client.service("auth")
        self.call("Login", 5.0, lambda: auth.Login(email=self.email, password=PASSWORD, timeout=5.0))

    def rest_signup(self) -> None:
        email = f"{self.load.label}-rest-{uuid.uuid4().hex[:12]}@example.com"
        self.rest("RestSignup", "/api/users/signup/", {"email": email, "password": PASSWORD})

    def rest_login(self) -> None:
        self.rest("RestLogin", "/api/users/login/", {"email": self.email, "password": PASSWORD})

    def rest(self, method: str, path: str, body: dict[str, str]) -> None:
        """POST JSON to the web host; the outcome's code is ``HTTP <status>`` and, on an error, what came back."""
        assert self.load.web_url, "REST calls need the web host's URL"
        request = urllib.request.Request(
            self.load.web_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                code, details = f"HTTP {response.status}", ""
        except urllib.error.HTTPError as error:
            content_type = error.headers.get("Content-Type", "")
            retry_after = error.headers.get("Retry-After")
            text = error.read(300).decode(errors="replace")
            code = f"HTTP {error.code}"
            details = f"{content_type}; Retry-After: {retry_after}; {text}"
        except OSError as error:
            code, details = "HTTP no answer", str(error)
        self.load.record(Outcome(method, 5.0, started, time.monotonic(), code, details))
