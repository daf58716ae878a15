"""What operators and tools see of a running server: start-up checks, Prometheus metrics, reflection v1, Health/List."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from protos import users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.support.helpers import assert_status
from tests.test_server import InFlightRpc, check

BASE_DIR = Path(__file__).resolve().parent.parent
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
SERVING = health_pb2.HealthCheckResponse.SERVING


def reflect_v1(channel: grpc.Channel, **request_fields) -> reflection_pb2.ServerReflectionResponse:
    """Ask reflection under the v1 name; the messages are wire-identical to v1alpha's."""
    call = channel.stream_stream(
        V1_METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([reflection_pb2.ServerReflectionRequest(**request_fields)]), timeout=10))
    return response


def file_descriptors(response: reflection_pb2.ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


def test_reflection_v1_lists_and_describes_every_service_and_itself(grpc_channel):
    services = {service.name for service in reflect_v1(grpc_channel, list_services="").list_services_response.service}
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.health.v1.Health",
        "posts.PostController",
        "users.UserController",
    } <= services

    files = file_descriptors(reflect_v1(grpc_channel, file_containing_symbol="grpc.reflection.v1.ServerReflection"))
    (v1,) = [file for file in files if file.package == "grpc.reflection.v1"]
    (service,) = v1.service
    (method,) = service.method
    assert (service.name, method.name, method.input_type, method.output_type) == (
        "ServerReflection",
        "ServerReflectionInfo",
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert {message.name for message in v1.message_type} >= {"ServerReflectionRequest", "ServerReflectionResponse"}

    files = file_descriptors(reflect_v1(grpc_channel, file_containing_symbol="posts.PostController"))
    assert any(any(service.name == "PostController" for service in file.service) for file in files)

    error = reflect_v1(grpc_channel, file_containing_symbol="no.such.Service").error_response
    assert error.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_health_list_answers_every_service_with_its_status(grpc_channel):
    response = health_pb2_grpc.HealthStub(grpc_channel).List(health_pb2.HealthListRequest(), timeout=10)
    statuses = {name: status.status for name, status in response.statuses.items()}
    assert statuses[""] == SERVING
    assert statuses["posts.PostController"] == SERVING and statuses["users.UserController"] == SERVING
    assert statuses["liveness"] == SERVING


def test_the_liveness_entry_serves_through_a_database_outage_until_the_server_drains():
    from grpc_ext.server.transport import build_server

    server = build_server("127.0.0.1:0", max_workers=2, reflection_enabled=False)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert check(channel, "liveness", timeout=10).status == SERVING
        # A database outage makes the server unready, not dead.
        server.report_database(False)
        assert check(channel, "", timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert check(channel, "liveness", timeout=10).status == SERVING
        server.report_database(True)
        stopped = server.stop(5)
        stopped.wait(10)
    assert server.health._server_status["liveness"] == health_pb2.HealthCheckResponse.NOT_SERVING


def test_grpcrunserver_refuses_to_start_on_a_system_check_error():
    from django.conf import settings

    broken = {**settings.GRPC_FRAMEWORK, "SERVER_INTERCEPTORS": ["grpc_ext.server.interceptors.NoSuchInterceptor"]}
    with override_settings(GRPC_FRAMEWORK=broken), pytest.raises(SystemCheckError, match="grpc_ext.E004"):
        call_command("grpcrunserver", "127.0.0.1:0")


@pytest.fixture
def production_server():
    """``grpcrunserver`` with DEBUG off and metrics on a port of their own; yield its output, addresses and process."""
    port, metrics = free_port(), free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in {"DEBUG", "SECRET_KEY"}},
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DEBUG": "false",
        "SECRET_KEY": "observability-test-secret-" + "o" * 40,
        "GRPC_METRICS_PORT": str(metrics),
        "GRPC_METRICS_ADDRESS": "127.0.0.1",
        "GRPC_REFLECTION": "true",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{port}"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            try:
                check(channel, wait_for_ready=True, timeout=30)
            except grpc.RpcError:
                process.kill()
                pytest.fail(f"the server did not start: {process.communicate()[0]}")
        yield process, address, f"http://127.0.0.1:{metrics}/metrics"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def scrape(url: str) -> dict[str, float]:
    """Return the samples of ``grpc_server_*`` metrics, keyed by name and labels as exposed."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0 if there is none)."""
    for key, value in samples.items():
        match = re.fullmatch(r"(\w+)\{(.*)\}", key)
        if match and match[1] == name:
            present = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if labels.items() <= present.items():
                return value
    return 0.0


def test_grpcrunserver_runs_the_deploy_checks_and_serves_metrics_per_method_and_code(production_server):
    process, address, metrics_url = production_server
    with grpc.insecure_channel(address) as channel:
        users = users_pb2_grpc.UserControllerStub(channel)
        for _ in range(3):
            retrieve = users_pb2.UserRetrieveRequest(id="00000000-0000-0000-0000-000000000000")
            assert_status(
                lambda retrieve=retrieve: users.Retrieve(retrieve, timeout=10), grpc.StatusCode.UNAUTHENTICATED
            )
        assert check(channel, timeout=10).status == SERVING
        in_flight = InFlightRpc(channel)
        assert in_flight.ask().list_services_response.service

        samples = scrape(metrics_url)
        users_retrieve = {"grpc_service": "users.UserController", "grpc_method": "Retrieve"}
        assert sample(samples, "grpc_server_handled_total", **users_retrieve, grpc_code="UNAUTHENTICATED") == 3
        assert sample(samples, "grpc_server_handling_seconds_count", **users_retrieve) == 3
        assert sample(samples, "grpc_server_handling_seconds_bucket", **users_retrieve, le="+Inf") == 3
        health = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
        assert sample(samples, "grpc_server_handled_total", **health, grpc_code="OK") >= 2
        reflection = {"grpc_service": "grpc.reflection.v1alpha.ServerReflection", "grpc_method": "ServerReflectionInfo"}
        assert sample(samples, "grpc_server_in_flight", **reflection) == 1
        assert in_flight.finish() == grpc.StatusCode.OK
        deadline = time.monotonic() + 10
        while sample(scrape(metrics_url), "grpc_server_in_flight", **reflection) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = scrape(metrics_url)
        assert sample(samples, "grpc_server_in_flight", **reflection) == 0
        assert sample(samples, "grpc_server_handled_total", **reflection, grpc_code="OK") == 1

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    # DEBUG is off, so the deployment checks ran at start-up; their warnings do not stop the server.
    assert "Performing system checks" in output and "security.W004" in output


def test_metrics_are_off_unless_configured():
    from grpc_ext.server.transport import load_interceptors

    assert not any(type(interceptor).__name__ == "MetricsInterceptor" for interceptor in load_interceptors())


def consecutive_free_ports(count: int) -> int:
    """Return a port ``p`` such that ``p`` .. ``p + count - 1`` are free on 127.0.0.1 now."""
    for _ in range(50):
        first = free_port()
        sockets = []
        try:
            for offset in range(count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    pytest.fail("no consecutive free ports")


def test_each_worker_process_serves_its_own_metrics_port():
    grpc_port, metrics = free_port(), consecutive_free_ports(2)
    env = {**os.environ, "GRPC_METRICS_PORT": str(metrics), "GRPC_METRICS_ADDRESS": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{grpc_port}", "--workers", "2", "--grace", "1"],
        cwd=BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "demo.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            check(channel, wait_for_ready=True, timeout=30)
        for port in (metrics, metrics + 1):
            deadline = time.monotonic() + 20
            while True:
                try:
                    scrape(f"http://127.0.0.1:{port}/metrics")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f":{metrics}/metrics" in output and f":{metrics + 1}/metrics" in output
