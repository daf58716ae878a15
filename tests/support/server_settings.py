"""Settings of the servers the tests start as subprocesses: the project's, plus the test interceptors."""

import os

from demo.settings import *  # noqa: F403
from demo.settings import GRPC_FRAMEWORK

GRPC_FRAMEWORK = {
    **GRPC_FRAMEWORK,
    # The project's services, with the knobs of tests.support.server_hooks.
    "ROOT_HANDLERS_HOOK": "tests.support.server_hooks.add_services",
    "SERVER_INTERCEPTORS": [
        *GRPC_FRAMEWORK["SERVER_INTERCEPTORS"],
        "tests.support.interceptors.ServerPidInterceptor",
    ],
    # A test may probe the database less often, to see what the RPCs' own failures do.
    "DATABASE_PROBE_INTERVAL": float(os.environ.get("TEST_DATABASE_PROBE_INTERVAL", "1")),
}
if os.environ.get("TEST_HANDSHAKE_TIMEOUT"):
    # A test may give connections less time to complete their handshake.
    GRPC_FRAMEWORK["HANDSHAKE_TIMEOUT"] = float(os.environ["TEST_HANDSHAKE_TIMEOUT"])

if os.environ.get("TEST_LOG_SQL"):
    # Every statement logged (Django does it with DEBUG on), from the pool thread that ran it.
    from demo.settings import LOGGING

    LOGGING = {
        **LOGGING,
        "loggers": {
            **LOGGING["loggers"],
            "django.db.backends": {"handlers": ["console"], "level": "DEBUG", "propagate": False},
        },
    }
