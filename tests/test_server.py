"""The server an operator runs: health, reflection, TLS, draining, several processes, the RPC life cycle."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from grpc_ext.server.transport import build_server
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.signals import grpc_got_request_exception
from posts.servicers import PostService
from protos import posts_pb2, posts_pb2_grpc, users_pb2
from tests.support.helpers import assert_status, with_metadata
from tests.support.interceptors import PID_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
PROJECT_SERVICES = [
    posts_pb2.DESCRIPTOR.services_by_name["PostController"].full_name,
    users_pb2.DESCRIPTOR.services_by_name["UserController"].full_name,
]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(channel: grpc.Channel, service: str = "", **kwargs):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), **kwargs)


class InFlightRpc:
    """A reflection stream kept open: an RPC in flight for as long as the test wants."""

    def __init__(self, channel: grpc.Channel):
        self.requests: queue.Queue = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.responses = stub.ServerReflectionInfo(iter(self.requests.get, None), timeout=20)

    def ask(self) -> reflection_pb2.ServerReflectionResponse:
        """Ask the server for its services and return the answer."""
        self.requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        return next(self.responses)

    def finish(self) -> grpc.StatusCode:
        """End the request stream and return the status the RPC ends with."""
        self.requests.put(None)
        list(self.responses)
        return self.responses.code()


def watch_health(channel: grpc.Channel):
    return health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)


# Health and reflection


@pytest.mark.parametrize("service", ["", *PROJECT_SERVICES])
def test_health_reports_serving_for_the_server_and_every_registered_service(grpc_channel, service):
    assert check(grpc_channel, service, timeout=5).status == SERVING


def test_health_of_an_unknown_service_is_not_found(grpc_channel):
    assert_status(lambda: check(grpc_channel, "no.Such", timeout=5), grpc.StatusCode.NOT_FOUND)


def test_reflection_lists_and_describes_every_service(grpc_channel):
    database = ProtoReflectionDescriptorDatabase(grpc_channel)
    assert set(database.get_services()) >= {*PROJECT_SERVICES, HEALTH_SERVICE}
    pool = descriptor_pool.DescriptorPool(database)
    methods = {method.name for method in pool.FindServiceByName("posts.PostController").methods}
    assert {"List", "Stream", "Retrieve", "Create", "Update", "PartialUpdate", "Destroy"} <= methods


def test_reflection_can_be_switched_off(transactional_db):
    server = build_server("127.0.0.1:0", reflection_enabled=False)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.RpcError) as excinfo:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert check(channel, timeout=5).status == SERVING
    finally:
        server.stop(None).wait()


# Draining and binding


def test_drain_reports_not_serving_refuses_new_rpcs_and_finishes_those_in_flight(transactional_db):
    server = build_server("127.0.0.1:0", reflection_enabled=True)
    server.start()
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        watch = watch_health(channel)
        assert next(watch).status == SERVING
        in_flight = InFlightRpc(channel)
        assert in_flight.ask().list_services_response.service
        stopped = server.stop(10)
        assert next(watch).status == NOT_SERVING
        with grpc.insecure_channel(address) as new_channel:
            assert_status(lambda: check(new_channel, timeout=5), grpc.StatusCode.UNAVAILABLE)
        assert_status(lambda: check(channel, timeout=5), grpc.StatusCode.UNAVAILABLE)
        assert in_flight.ask().list_services_response.service  # still served while draining
        assert not stopped.is_set()
        assert in_flight.finish() == grpc.StatusCode.OK
        watch.cancel()
        assert stopped.wait(timeout=10)


def test_a_port_already_in_use_is_refused(grpc_address):
    """grpcio shares a port by default (SO_REUSEPORT); one server per port unless --workers."""
    with pytest.raises(OSError, match="in use"):
        build_server(grpc_address)


def test_workers_need_a_fixed_port():
    with pytest.raises(CommandError, match="fixed port"):
        call_command("grpcrunserver", "127.0.0.1:0", "--workers", "2")


# TLS


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Path:
    """Make a CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    directory = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, extension in extensions.items():
        (directory / f"{name}.ext").write_text(extension)
        openssl("req", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )
    return directory


def secure_check(port: int, certificates: Path, *, client_cert: bool) -> health_pb2.HealthCheckResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certificates / "ca.pem").read_bytes(),
        private_key=(certificates / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(certificates / "client.pem").read_bytes() if client_cert else None,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return check(channel, timeout=5)


def test_tls_call_succeeds_and_plaintext_is_refused(transactional_db, certificates):
    server = build_server(
        "127.0.0.1:0", tls_cert=certificates / "server.pem", tls_key=certificates / "server.key", transport="aio"
    )
    server.start()
    try:
        assert secure_check(server.port, certificates, client_cert=False).status == SERVING
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert_status(lambda: check(channel, timeout=5), grpc.StatusCode.UNAVAILABLE)
    finally:
        server.stop(None).wait()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(transactional_db, certificates):
    server = build_server(
        "127.0.0.1:0",
        tls_cert=certificates / "server.pem",
        tls_key=certificates / "server.key",
        tls_client_ca=certificates / "ca.pem",
        transport="aio",
    )
    server.start()
    try:
        assert secure_check(server.port, certificates, client_cert=True).status == SERVING
        assert_status(lambda: secure_check(server.port, certificates, client_cert=False), grpc.StatusCode.UNAVAILABLE)
    finally:
        server.stop(None).wait()


def test_tls_with_a_certificate_but_no_key_is_a_clear_error(certificates):
    with pytest.raises(ValueError, match="both a certificate and a key"):
        build_server("127.0.0.1:0", tls_cert=certificates / "server.pem", transport="aio")


# The transports


def test_native_transport_refuses_tls_naming_the_way_out(certificates):
    with pytest.raises(ValueError, match=r"TLS \(TLS_CERT.*plaintext only.*GRPC_TRANSPORT=aio"):
        build_server(
            "127.0.0.1:0", tls_cert=certificates / "server.pem", tls_key=certificates / "server.key", transport="native"
        )


@pytest.mark.parametrize(
    "setting, value",
    [
        ("MAX_CONNECTION_AGE", 300.0),
        ("MAX_CONNECTION_AGE_GRACE", 60.0),
        ("MAX_CONNECTION_IDLE", 300.0),
        ("HANDSHAKE_TIMEOUT", 10.0),
        ("KEEPALIVE_MIN_CLIENT_PING_INTERVAL", 10.0),
        ("SERVER_OPTIONS", [("grpc.max_connection_idle_ms", 1000)]),
    ],
)
def test_native_transport_refuses_a_limit_it_cannot_honour(settings, setting, value):
    """A connection limit set explicitly is never dropped: the native server does not start, and says why."""
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, setting: value}
    with pytest.raises(ValueError, match=rf"native transport.*{setting}.*GRPC_TRANSPORT=aio"):
        build_server("127.0.0.1:0", transport="native")


def test_connection_limits_left_unset_get_grpc_aio_defaults():
    from grpc_ext.server.transport import server_options

    options = dict(server_options(reuse_port=False, transport="aio"))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.server_handshake_timeout_ms"] == 10_000
    native = dict(server_options(reuse_port=False, transport="native"))
    assert "grpc.max_connection_age_ms" not in native and native["grpc.max_concurrent_streams"] == 100


def test_an_unknown_transport_is_a_clear_error(settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "TRANSPORT": "quic"}
    with pytest.raises(ValueError, match="'quic': use 'aio' or 'native'"):
        build_server("127.0.0.1:0")


def test_grpcrunserver_refuses_tls_on_the_native_transport_before_serving(certificates):
    with pytest.raises(CommandError, match="cannot honour TLS"):
        call_command(
            "grpcrunserver",
            "127.0.0.1:0",
            "--transport",
            "native",
            "--tls-cert",
            str(certificates / "server.pem"),
            "--tls-key",
            str(certificates / "server.key"),
        )


@pytest.mark.parametrize("transport", ["aio", "native"])
def test_grpcrunserver_serves_with_the_transport_asked_for(run_server, transport):
    process, address = run_server("--transport", transport, "--reflection")
    with grpc.insecure_channel(address) as channel:
        assert check(channel, timeout=5).status == SERVING
        assert set(PROJECT_SERVICES) <= set(ProtoReflectionDescriptorDatabase(channel).get_services())
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"{transport} transport" in output


# The RPC life cycle


def test_unexpected_error_sends_got_request_exception_and_ends_internal(posts_stub, monkeypatch):
    def broken_queryset(self):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(PostService, "get_queryset", broken_queryset)
    received = []

    def receiver(sender, exception, **kwargs):
        received.append((sender, exception))

    grpc_got_request_exception.connect(receiver)
    try:
        assert_status(lambda: posts_stub.List(posts_pb2.PostListRequest()), grpc.StatusCode.INTERNAL)
        assert_status(lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id="x")), grpc.StatusCode.INTERNAL)
    finally:
        grpc_got_request_exception.disconnect(receiver)
    assert [(sender, str(exc)) for sender, exc in received] == [(PostService, "database on fire")] * 2


def test_client_errors_do_not_send_got_request_exception(posts_stub):
    received = []
    grpc_got_request_exception.connect(received.append)
    try:
        assert_status(
            lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id="x")), grpc.StatusCode.INVALID_ARGUMENT
        )
    finally:
        grpc_got_request_exception.disconnect(received.append)
    assert received == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a server that can kill its sessions")
def test_a_broken_persistent_connection_is_replaced_not_kept(posts_stub, post):
    """A persistent connection is health-checked before a call once it was last checked over an interval ago.

    Checked at most once per ``DB_HEALTH_CHECK_INTERVAL`` (no ``SELECT 1``
    before every call), a connection broken since its last check is found
    and replaced before the next call runs.
    """
    database = connection.settings_dict
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    past_the_interval = grpc_ext_settings.DB_HEALTH_CHECK_INTERVAL + 0.2
    database["CONN_MAX_AGE"] = None
    try:
        for _ in range(8):  # every server thread opens a persistent connection
            posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)))
        with connection.cursor() as cursor:
            cursor.execute(terminate)
        time.sleep(past_the_interval)
        for _ in range(8):
            assert posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))).id == str(post.id)
    finally:
        database["CONN_MAX_AGE"] = 0
        with connection.cursor() as cursor:  # let the test database be dropped
            cursor.execute(terminate)
        time.sleep(past_the_interval)  # the next tests' calls find them broken and replace them


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a server that can kill its sessions")
def test_a_connection_opened_by_one_call_and_broken_before_the_next_is_replaced(post, settings):
    """A thread's connection, opened by its first call and broken before its second past the interval, is checked.

    Its health-check clock starts when it opens, not when a call first finds
    it open: that second call would otherwise take it for just checked.
    """
    database = connection.settings_dict
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    database["CONN_MAX_AGE"] = None
    server = build_server("127.0.0.1:0", max_workers=1)  # one thread: both calls on the same connection
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = with_metadata(channel, post.owner)
            retrieve = posts_pb2_grpc.PostControllerStub(stub).Retrieve
            assert retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), timeout=10).id == str(post.id)
            with connection.cursor() as cursor:
                cursor.execute(terminate)
            time.sleep(grpc_ext_settings.DB_HEALTH_CHECK_INTERVAL + 0.2)
            assert retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), timeout=10).id == str(post.id)
    finally:
        server.stop(None).wait()
        database["CONN_MAX_AGE"] = 0
        with connection.cursor() as cursor:
            cursor.execute(terminate)


# grpcrunserver as an operator runs it


def test_sigterm_lets_the_rpc_in_flight_finish_then_exits_zero(run_server):
    process, address = run_server("--grace", "10", "--reflection")
    with grpc.insecure_channel(address) as channel:
        watch = watch_health(channel)
        assert next(watch).status == SERVING
        in_flight = InFlightRpc(channel)
        assert in_flight.ask().list_services_response.service
        process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        assert in_flight.ask().list_services_response.service
        assert in_flight.finish() == grpc.StatusCode.OK
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "Received SIGTERM" in output


def test_two_workers_answer_from_two_processes_and_stop_together(run_server):
    process, address = run_server("--workers", "2", "--max-workers", "2", "--grace", "2")
    pids = set()
    for _ in range(100):
        # A channel of its own opens a connection of its own, which the kernel
        # hands to one of the processes sharing the port.
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(health_pb2.HealthCheckRequest(), timeout=5)
            pids.add(int(dict(call.trailing_metadata())[PID_KEY]))
        if len(pids) == 2:
            break
    assert len(pids) == 2 and process.pid not in pids
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def server_pid(address: str) -> int:
    """Return the pid of the process that answers a Health/Check on a new connection to ``address``."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True
        )
        return int(dict(call.trailing_metadata())[PID_KEY])


def test_dev_server_reloads_on_a_code_change_and_serves_again(run_server, served_database, tmp_path):
    """``--dev`` restarts the serving process when a module it imported changes, on the same port."""
    settings_module = tmp_path / "reloading_settings.py"
    settings_module.write_text("from tests.support.server_settings import *  # noqa: F403\nEDITION = 1\n")
    env = {
        **served_database.env,
        "DJANGO_SETTINGS_MODULE": "reloading_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(BASE_DIR)]),
    }
    process, address = run_server("--dev", env=env)
    first = server_pid(address)
    time.sleep(1.5)  # the reloader notes the files' times once a second; the edit must come after
    settings_module.write_text("from tests.support.server_settings import *  # noqa: F403\nEDITION = 2\n")
    for _ in range(40):
        time.sleep(0.5)
        try:
            if server_pid(address) != first:
                break
        except grpc.RpcError:
            continue  # between the old process and the new one
    assert server_pid(address) != first
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)


def test_the_test_servers_serve_with_the_transport_grpc_transport_names():
    """CI's second run (GRPC_TRANSPORT=native) reaches the servers the fixtures start, through the settings."""
    from tests.support.helpers import TRANSPORT

    assert grpc_ext_settings.TRANSPORT == TRANSPORT
