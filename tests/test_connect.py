"""Every service over Connect (JSON and binary, unary and streaming) and gRPC-Web, through a live HTTP server.

``web_server`` serves ``demo.wsgi.application``, what ``runserver`` and
granian serve, on the test database.

The web process serves the same service classes as the gRPC server
(``grpc_ext.gateway.connect``): these tests call them as a browser or an HTTP client
would, with plain HTTP requests (to see statuses, headers and bodies) and
with connectrpc's own client (binary, gRPC-Web, streams), and check the rows
in the database.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import pytest
from connectrpc.client import ConnectClientSync
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from grpc_ext.gateway.connect import JSONCodec, method_info
from grpc_ext.testing import access_token
from posts.models import Post
from protos import auth_pb2, posts_pb2
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import database_url_of_this_run, running_web

POSTS = posts_pb2.DESCRIPTOR.services_by_name["PostController"]


def call_json(url: str, procedure: str, body: bytes | dict, *, token: str = "", headers: dict | None = None):
    """POST a Connect unary JSON request; return (HTTP status, headers, parsed JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/{procedure}", data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        assert error.headers["Content-Type"] == "application/json", raw[:200]
        return error.code, error.headers, json.loads(raw)


def envelope(message: bytes, flags: int = 0) -> bytes:
    """One enveloped message of a Connect stream: its flags, its length, the message."""
    return struct.pack(">BI", flags, len(message)) + message


def detail(body: dict, kind: str):
    """Decode the Connect error detail of type ``kind`` (google.rpc.BadRequest, RetryInfo) from a JSON error."""
    message_class = getattr(error_details_pb2, kind.rsplit(".", 1)[1])
    (item,) = [item for item in body.get("details", []) if item["type"] == kind]
    return message_class.FromString(base64.b64decode(item["value"] + "=" * (-len(item["value"]) % 4)))


def client(url: str, *, protocol: ProtocolType = ProtocolType.CONNECT, codec: Codec | None = None) -> ConnectClientSync:
    return ConnectClientSync(
        url, protocol=protocol, codec=codec or google_protobuf_binary_codec(), send_compression=None
    )


def unary(connect: ConnectClientSync, method: str, request, token: str = ""):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return connect.execute_unary(request=request, method=method_info(POSTS.methods_by_name[method]), headers=headers)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def web_server(transactional_db):
    """The web process's WSGI application (``demo.wsgi``: Connect in front of Django) on a threaded HTTP server."""
    from demo.wsgi import application

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(application)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def owner(transactional_db):
    return make_user(is_verified=True)


@pytest.fixture
def token(owner) -> str:
    return access_token(owner)


# --------------------------------------------------------------------------- Connect JSON


def test_login_then_create_over_connect_json_writes_the_row_with_the_caller_as_owner(web_server, owner):
    status, _, tokens = call_json(
        web_server.url, "auth.AuthController/Login", {"email": owner.email, "password": PASSWORD}
    )
    assert status == 200 and tokens["access"] and tokens["refresh"]

    status, headers, created = call_json(
        web_server.url, "posts.PostController/Create", {"title": "From a browser"}, token=tokens["access"]
    )

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert created["title"] == "From a browser" and created["etag"] and created["owner"] == str(owner.pk)
    assert list(Post.objects.values_list("id", "title", "owner_id")) == [
        (uuid.UUID(created["id"]), "From a browser", owner.pk)
    ]


def test_connect_json_errors_carry_the_code_http_status_and_bad_request_details(web_server, owner, token):
    status, _, body = call_json(web_server.url, "posts.PostController/Create", {"title": ""}, token=token)

    assert status == 400 and body["code"] == "invalid_argument"
    violations = detail(body, "google.rpc.BadRequest").field_violations
    assert [(violation.field, violation.description) for violation in violations] == [
        ("title", "This field may not be blank.")
    ]
    assert not Post.objects.exists()


@pytest.mark.parametrize(
    ("procedure", "body", "use_token", "http_status", "code"),
    [
        ("posts.PostController/List", {}, False, 401, "unauthenticated"),
        ("posts.PostController/Retrieve", {"id": str(uuid.UUID(int=7))}, True, 404, "not_found"),
        ("posts.PostController/Retrieve", {"id": "not-a-key"}, True, 400, "invalid_argument"),
    ],
)
def test_statuses_map_to_connect_codes_and_http_statuses(
    web_server, token, procedure, body, use_token, http_status, code
):
    status, _, error = call_json(web_server.url, procedure, body, token=token if use_token else "")

    assert (status, error["code"]) == (http_status, code)
    assert error["message"]


def test_the_connect_timeout_is_the_calls_deadline(web_server, token):
    """``connect-timeout-ms`` reaches the service as grpc's deadline: a call whose time is up runs no query."""
    status, _, error = call_json(
        web_server.url, "posts.PostController/List", {}, token=token, headers={"Connect-Timeout-Ms": "0"}
    )

    assert (status, error["code"]) == (504, "deadline_exceeded")


def test_another_users_post_is_permission_denied(web_server, token):
    other = make_post(owner=make_user())

    status, _, error = call_json(
        web_server.url, "posts.PostController/Destroy", {"id": str(other.pk), "etag": other.etag}, token=token
    )

    assert (status, error["code"]) == (403, "permission_denied")
    assert Post.objects.filter(pk=other.pk).exists()


def test_login_throttle_answers_resource_exhausted_with_retry_info(web_server, owner, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "2/minute"}}
    credentials = {"email": owner.email, "password": PASSWORD}
    for _ in range(2):
        assert call_json(web_server.url, "auth.AuthController/Login", credentials)[0] == 200

    status, _, error = call_json(web_server.url, "auth.AuthController/Login", credentials)

    assert (status, error["code"]) == (429, "resource_exhausted")
    assert 0 < detail(error, "google.rpc.RetryInfo").retry_delay.seconds <= 60


def test_behind_the_web_process_proxies_rate_limits_count_the_forwarded_client(web_server, owner, settings):
    """Connect calls count against the address REST's ``NUM_PROXIES`` trusted proxies forwarded, as REST's do."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "1/minute"},
        "NUM_PROXIES": 1,
    }
    credentials = {"email": owner.email, "password": PASSWORD}

    def login(address: str) -> int:
        return call_json(
            web_server.url, "auth.AuthController/Login", credentials, headers={"X-Forwarded-For": address}
        )[0]

    assert login("203.0.113.1") == 200
    assert login("203.0.113.2") == 200  # another client behind the same proxy has a budget of its own
    assert login("203.0.113.1") == 429


def test_create_retried_with_the_same_request_id_writes_once(web_server, token):
    body = {"title": "Once", "requestId": str(uuid.uuid4())}

    first = call_json(web_server.url, "posts.PostController/Create", body, token=token)
    again = call_json(web_server.url, "posts.PostController/Create", body, token=token)

    assert first[0] == again[0] == 200
    assert first[2]["id"] == again[2]["id"]
    assert Post.objects.count() == 1


def test_partial_update_with_a_field_mask_and_etag_then_a_stale_etag_is_aborted(web_server, owner, token):
    post = make_post(owner=owner, title="Before", description="Kept")
    stale = post.etag

    status, _, updated = call_json(
        web_server.url,
        "posts.PostController/PartialUpdate",
        {"id": str(post.pk), "title": "After", "description": "Ignored", "updateMask": "title", "etag": stale},
        token=token,
    )
    assert status == 200 and updated["title"] == "After" and updated["etag"] != stale

    status, _, error = call_json(
        web_server.url,
        "posts.PostController/PartialUpdate",
        {"id": str(post.pk), "title": "Lost", "updateMask": "title", "etag": stale},
        token=token,
    )

    assert (status, error["code"]) == (409, "aborted")
    assert Post.objects.values_list("title", "description").get() == ("After", "Kept")


def test_list_pages_with_a_token(web_server, owner, token):
    for index in range(3):
        make_post(owner=owner, title=f"Post {index}")

    _, _, first = call_json(web_server.url, "posts.PostController/List", {"pageSize": 2, "owner": "me"}, token=token)
    _, _, rest = call_json(
        web_server.url,
        "posts.PostController/List",
        {"pageSize": 2, "owner": "me", "pageToken": first["nextPageToken"]},
        token=token,
    )

    titles = [post["title"] for post in first["posts"] + rest["posts"]]
    assert len(first["posts"]) == 2 and "nextPageToken" not in rest
    assert sorted(titles) == ["Post 0", "Post 1", "Post 2"]


# --------------------------------------------------------------------------- bad input: a Connect error, never a page


def raw_post(url: str, path: str, data: bytes, content_type: str, method: str = "POST"):
    request = urllib.request.Request(f"{url}{path}", data=data if method == "POST" else None, method=method)
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.parametrize(
    ("path", "data", "content_type", "method", "http_status", "code"),
    [
        ("/posts.PostController/List", b"{not json", "application/json", "POST", 400, "invalid_argument"),
        ("/posts.PostController/List", b"\xff\xff", "application/proto", "POST", 400, "invalid_argument"),
        ("/posts.PostController/List", b"{}", "text/plain", "POST", 415, "invalid_argument"),
        ("/posts.PostController/List", b"", "application/json", "GET", 405, "unimplemented"),
        ("/posts.PostController/Publish", b"{}", "application/json", "POST", 404, "unimplemented"),
        ("/nothing.Here/Call", b"{}", "application/json", "POST", 404, "unimplemented"),
        (
            "/posts.PostController/List",
            b" " * (4 * 1024 * 1024 + 1),
            "application/json",
            "POST",
            429,
            "resource_exhausted",
        ),
    ],
)
def test_bad_requests_get_connect_errors(
    web_server, transactional_db, path, data, content_type, method, http_status, code
):
    status, headers, body = raw_post(web_server.url, path, data, content_type, method)

    assert status == http_status
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["code"] == code and error["message"]


# --------------------------------------------------------------------------- Connect binary, streams and gRPC-Web


def test_retrieve_over_connect_binary(web_server, owner, token):
    post = make_post(owner=owner, title="Binary")

    with client(web_server.url) as connect:
        response = unary(connect, "Retrieve", posts_pb2.PostRetrieveRequest(id=str(post.pk)), token)

    assert isinstance(response, posts_pb2.Post)
    assert (response.id, response.title, response.etag) == (str(post.pk), "Binary", post.etag)


@pytest.mark.parametrize(
    ("protocol", "codec"),
    [
        (ProtocolType.CONNECT, google_protobuf_binary_codec()),
        (ProtocolType.CONNECT, JSONCodec()),
        (ProtocolType.GRPC_WEB, google_protobuf_binary_codec()),
    ],
    ids=["connect-proto", "connect-json", "grpc-web"],
)
def test_stream_sends_every_post_in_batches(web_server, owner, token, protocol, codec):
    expected = {str(make_post(owner=owner, title=f"Streamed {index}").pk) for index in range(5)}

    with client(web_server.url, protocol=protocol, codec=codec) as connect:
        batches = list(
            connect.execute_server_stream(
                request=posts_pb2.PostStreamRequest(batch_size=2),
                method=method_info(POSTS.methods_by_name["Stream"]),
                headers={"authorization": f"Bearer {token}"},
            )
        )

    assert [len(batch.posts) for batch in batches] == [2, 2, 1]
    assert {post.id for batch in batches for post in batch.posts} == expected


@pytest.mark.parametrize("protocol", [ProtocolType.CONNECT, ProtocolType.GRPC_WEB], ids=["connect", "grpc-web"])
def test_a_stream_that_fails_ends_with_the_status(web_server, transactional_db, protocol):
    with client(web_server.url, protocol=protocol) as connect, pytest.raises(ConnectError) as raised:
        list(
            connect.execute_server_stream(
                request=posts_pb2.PostStreamRequest(), method=method_info(POSTS.methods_by_name["Stream"])
            )
        )

    assert raised.value.code == Code.UNAUTHENTICATED


def test_grpc_web_create_update_and_errors_with_details(web_server, owner, token):
    with client(web_server.url, protocol=ProtocolType.GRPC_WEB) as grpc_web:
        created = unary(grpc_web, "Create", posts_pb2.PostCreateRequest(title="Over gRPC-Web"), token)
        updated = unary(
            grpc_web,
            "PartialUpdate",
            posts_pb2.PostPartialUpdateRequest(
                id=created.id, title="Renamed", update_mask=field_mask_pb2.FieldMask(paths=["title"]), etag=created.etag
            ),
            token,
        )
        with pytest.raises(ConnectError) as raised:
            unary(grpc_web, "Create", posts_pb2.PostCreateRequest(title=""), token)

    assert updated.title == "Renamed" and updated.etag != created.etag
    assert list(Post.objects.values_list("title", flat=True)) == ["Renamed"]
    error = raised.value
    assert error.code == Code.INVALID_ARGUMENT
    (bad_request,) = error.details
    assert bad_request.type_name == "google.rpc.BadRequest"
    violations = error_details_pb2.BadRequest.FromString(bad_request.message_bytes).field_violations
    assert [violation.field for violation in violations] == ["title"]


def test_grpc_web_login_with_the_auth_service(web_server, owner):
    login = method_info(auth_pb2.DESCRIPTOR.services_by_name["AuthController"].methods_by_name["Login"])
    with client(web_server.url, protocol=ProtocolType.GRPC_WEB) as grpc_web:
        tokens = grpc_web.execute_unary(
            request=auth_pb2.LoginRequest(email=owner.email, password=PASSWORD), method=login
        )
        with pytest.raises(ConnectError) as raised:
            grpc_web.execute_unary(request=auth_pb2.LoginRequest(email=owner.email, password="wrong"), method=login)

    assert tokens.access and tokens.refresh
    assert raised.value.code == Code.UNAUTHENTICATED


def test_connect_streaming_json_end_message_carries_the_error(web_server, transactional_db):
    """A Connect stream's error is its end-of-stream message (flag 2), after an HTTP 200."""
    status, headers, body = raw_post(
        web_server.url, "/posts.PostController/Stream", envelope(b"{}"), "application/connect+json"
    )

    assert status == 200 and headers["Content-Type"] == "application/connect+json"
    flags, length = struct.unpack(">BI", body[:5])
    assert flags == 2
    assert json.loads(body[5 : 5 + length])["error"]["code"] == "unauthenticated"


# --------------------------------------------------------------------------- cross-origin use


def preflight(url: str, origin: str) -> dict:
    request = urllib.request.Request(f"{url}/posts.PostController/List", method="OPTIONS")
    request.add_header("Origin", origin)
    request.add_header("Access-Control-Request-Method", "POST")
    request.add_header("Access-Control-Request-Headers", "content-type,connect-protocol-version,authorization")
    with urllib.request.urlopen(request, timeout=30) as response:
        return {name.lower(): value for name, value in response.headers.items()}


def test_cors_lets_an_allowed_origin_call_with_the_connect_and_grpc_web_headers(web_server, token, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    headers = preflight(web_server.url, "https://app.example.com")
    _, response_headers, _ = call_json(
        web_server.url,
        "posts.PostController/List",
        {},
        token=token,
        headers={"Origin": "https://app.example.com"},
    )

    assert headers["access-control-allow-origin"] == "https://app.example.com"
    allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
    assert {"connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "grpc-timeout", "authorization"} <= allowed
    assert response_headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    exposed = {name.strip() for name in response_headers["Access-Control-Expose-Headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed


def test_cors_refuses_other_origins_by_default(web_server, transactional_db):
    headers = preflight(web_server.url, "https://elsewhere.example.com")

    assert "access-control-allow-origin" not in headers


# --------------------------------------------------------------------------- the production web command


def read_envelopes(response) -> list[tuple[int, bytes]]:
    """Read a Connect streaming body to its end: (flags, payload) of each enveloped message."""
    envelopes = []
    while header := response.read(5):
        flags, length = struct.unpack(">BI", header)
        envelopes.append((flags, response.read(length)))
    return envelopes


def test_sigterm_lets_the_stream_in_flight_finish_and_refuses_new_calls(transactional_db):
    """SIGTERM to the production web command (granian): the call in flight gets every row, a new one no answer."""
    owner = make_user(is_verified=True)
    Post.objects.bulk_create(Post(owner=owner, title=f"Post {index}", description="x" * 2000) for index in range(300))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DATABASE_URL": database_url_of_this_run(),
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    with running_web(env, "--blocking-threads", "4") as (url, process):
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        connection.request(
            "POST",
            "/posts.PostController/Stream",
            body=envelope(json.dumps({"batchSize": 1}).encode()),
            headers={"Content-Type": "application/connect+json", "Authorization": f"Bearer {access_token(owner)}"},
        )
        response = connection.getresponse()
        assert response.status == 200
        _, first_length = struct.unpack(">BI", response.read(5))
        first = response.read(first_length)  # one row of 300 (600 kB): the call is under way

        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/healthz/", timeout=5)
        *rest, (end_flags, end) = read_envelopes(response)

        assert process.wait(timeout=30) == 0
    assert end_flags == 2 and json.loads(end) == {}, end  # the end-of-stream message, with no error
    payloads = [first, *(payload for _, payload in rest)]
    rows = [post["id"] for payload in payloads for post in json.loads(payload)["posts"]]
    assert sorted(rows) == sorted(str(pk) for pk in Post.objects.values_list("pk", flat=True))
