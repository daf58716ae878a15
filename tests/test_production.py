"""A production-style configuration: DEBUG off by default, security settings and a shared cache from the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
import redis

from protos import users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.support.helpers import assert_status
from tests.test_server import check

BASE_DIR = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = BASE_DIR / "deploy" / "production.env.example"
# The Redis these tests share their cache through: TEST_REDIS_URL, database 13 of 127.0.0.1:6379 unless
# it says otherwise. Nothing is flushed: each test's keys carry a prefix of their own and are deleted after it.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
CONFIGURATION = {
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "CACHE_URL",
    "CACHE_KEY_PREFIX",
    "ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
    "SIGNUP_RATE",
    "LOGIN_RATE",
}


def example_environment() -> dict[str, str]:
    """Return the variables of ``deploy/production.env.example``."""
    variables = {}
    for line in EXAMPLE_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name] = value
    return variables


def clean_environment(**env: str) -> dict[str, str]:
    """The test process's environment without its configuration, plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if k not in CONFIGURATION}, **env}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings as s; {code}"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        env=clean_environment(DJANGO_SETTINGS_MODULE="demo.settings", **env),
    )


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        env=clean_environment(DJANGO_SETTINGS_MODULE="demo.settings", **env),
        timeout=120,
    )


@pytest.fixture
def redis_db():
    """The test Redis, with a key prefix of this test's own (``CACHE_KEY_PREFIX``); its keys are deleted after it."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {REDIS_URL} (TEST_REDIS_URL) is needed: {exc}")
    client.prefix = f"test-{uuid.uuid4().hex}"
    yield client
    for key in client.scan_iter(f"{client.prefix}:*"):
        client.delete(key)
    client.close()


def test_no_environment_means_debug_off_and_refuses_the_development_secret():
    result = run_python("print(s.DEBUG)")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "DEBUG is off" in result.stderr


def test_debug_is_on_only_when_the_environment_says_so():
    assert run_python("print(s.DEBUG)", DEBUG="true").stdout.strip() == "True"
    assert run_python("print(s.DEBUG)", SECRET_KEY="k" * 50).stdout.strip() == "False"


def test_the_example_environment_passes_every_deploy_check(redis_db):
    env = {
        **example_environment(),
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        "CACHE_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": redis_db.prefix,
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def local_run_values() -> dict[str, str]:
    """Return the variables the production guide's one-host run appends to its copy of the example."""
    guide = (BASE_DIR / "docs" / "guides" / "production.md").read_text()
    section = guide.split("## A production-style run on one host", 1)[1]
    block = section.split("cat >> deploy/production.env <<EOF", 1)[1].split("\n", 1)[1].split("\nEOF\n", 1)[0]
    return dict(line.split("=", 1) for line in block.strip().splitlines())


def test_the_one_host_run_of_the_docs_passes_its_deploy_check_with_the_four_https_warnings(redis_db):
    values = local_run_values()
    assert values["SECRET_KEY"].startswith("$(python3 -c") and values["ALLOWED_HOSTS"] == "127.0.0.1,localhost"
    env = {
        **example_environment(),
        **values,
        "SECRET_KEY": "local-run-" + uuid.uuid4().hex * 2,
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        "CACHE_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": redis_db.prefix,
    }

    result = manage("check", "--deploy", **env)

    assert result.returncode == 0, result.stdout + result.stderr
    warnings = set(re.findall(r"\((security\.W\d+)\)", result.stdout + result.stderr))
    assert warnings == {"security.W004", "security.W008", "security.W012", "security.W016"}


def test_the_one_host_run_of_the_docs_listens_on_loopback_only():
    guide = (BASE_DIR / "docs" / "guides" / "production.md").read_text()
    block = guide.split("## A production-style run on one host", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert "grpcrunserver 127.0.0.1:50051" in block and "--host 127.0.0.1 --port 8000" in block
    assert "0.0.0.0" not in block and "[::]" not in block
    assert local_run_values()["GRPC_METRICS_ADDRESS"] == "127.0.0.1"


def test_the_deploy_check_fails_without_the_security_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY="k" * 20 + "abcdefghij" * 4)
    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in result.stderr


def test_security_settings_come_from_the_environment():
    example = example_environment()
    code = (
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD,"
        " s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER, s.CSRF_TRUSTED_ORIGINS,"
        " s.ALLOWED_HOSTS)"
    )
    result = run_python(code, **example)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "True 31536000 True True True True ('HTTP_X_FORWARDED_PROTO', 'https') "
        "['https://api.example.com'] ['api.example.com']"
    )
    result = run_python("", **{**example, "SECURE_PROXY_SSL_HEADER": "X_FORWARDED_PROTO"})
    assert result.returncode != 0 and "HTTP_X_FORWARDED_PROTO,https" in result.stderr


def test_cache_url_selects_the_fail_fast_redis_backend_and_the_file_cache_is_the_default():
    backend = "print(s.CACHES['default']['BACKEND'], s.CACHES['default']['LOCATION'])"
    result = run_python(backend, DEBUG="true", CACHE_URL=REDIS_URL)
    assert result.stdout.split() == ["grpc_ext.server.cache.FailFastRedisCache", REDIS_URL]
    result = run_python(backend, DEBUG="true")
    assert result.stdout.split() == [
        "django.core.cache.backends.filebased.FileBasedCache",
        str(BASE_DIR / "var" / "cache"),
    ]
    result = run_python(backend, DEBUG="true", CACHE_URL="memcached://127.0.0.1:11211")
    assert result.returncode != 0 and "CACHE_URL" in result.stderr


@pytest.fixture
def production_servers(redis_db):
    """Start ``grpcrunserver`` processes configured for production, sharing the test Redis as their cache."""
    processes = []

    def start(**env: str) -> str:
        address = f"127.0.0.1:{free_port()}"
        defaults = {
            "DEBUG": "false",
            "SECRET_KEY": "a-production-secret-" + "x" * 40,
            "CACHE_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": redis_db.prefix,
        }
        environment = clean_environment(DJANGO_SETTINGS_MODULE="demo.settings", **{**defaults, **env})
        if "DATABASE_URL" in os.environ:
            environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
        process = subprocess.Popen(
            [sys.executable, "manage.py", "grpcrunserver", address],
            cwd=BASE_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        with grpc.insecure_channel(address) as channel:
            try:
                check(channel, wait_for_ready=True, timeout=30)
            except grpc.RpcError:
                process.kill()
                pytest.fail(f"the server did not start: {process.communicate()[0]}")
        return address

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_server_processes_share_one_signup_throttle_through_redis(production_servers, redis_db):
    first, second = production_servers(SIGNUP_RATE="3/hour"), production_servers(SIGNUP_RATE="3/hour")
    # An empty email is refused before any query, so the calls need no database.
    invalid_signup = users_pb2.UserCreateRequest(email="", password="")
    with grpc.insecure_channel(first) as channel_a, grpc.insecure_channel(second) as channel_b:
        stub_a, stub_b = users_pb2_grpc.UserControllerStub(channel_a), users_pb2_grpc.UserControllerStub(channel_b)
        for stub in (stub_a, stub_b, stub_a):
            assert_status(lambda stub=stub: stub.Create(invalid_signup, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
        # The fourth signup from this address is over the limit, whichever process it reaches.
        assert_status(lambda: stub_b.Create(invalid_signup, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert_status(lambda: stub_a.Create(invalid_signup, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED)
    keys = redis_db.keys(f"{redis_db.prefix}:*")
    assert any(b"signup" in key for key in keys), keys


def test_with_the_example_environment_plain_http_is_redirected_except_the_probe_path():
    code = (
        "from django.test import Client; c = Client(HTTP_HOST='api.example.com');"
        "r = c.get('/healthz/'); print(r.status_code, r.content.decode());"
        "r = c.get('/admin/'); print(r.status_code, r['Location']);"
        "r = c.get('/admin/', HTTP_X_FORWARDED_PROTO='https'); print(r.status_code, r['Strict-Transport-Security'])"
    )
    result = run_python(code, **{**example_environment(), "DATABASE_URL": "sqlite://:memory:"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "200 ok",
        "301 https://api.example.com/admin/",
        "302 max-age=31536000; includeSubDomains; preload",
    ]


def test_an_unreachable_redis_makes_throttled_calls_unavailable_not_internal(production_servers):
    # Nothing listens on port 1: the throttle cannot count, and says so with a status a client retries.
    address = production_servers(CACHE_URL="redis://127.0.0.1:1/0")
    with grpc.insecure_channel(address) as channel:
        stub = users_pb2_grpc.UserControllerStub(channel)
        signup = users_pb2.UserCreateRequest(email="", password="")
        assert_status(lambda: stub.Create(signup, timeout=10), grpc.StatusCode.UNAVAILABLE, details_contain="retry")
