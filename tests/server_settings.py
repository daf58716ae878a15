"""Settings of the servers the tests start as subprocesses: the project's, plus the test interceptors."""

from demo.settings import *  # noqa: F403
from demo.settings import GRPC_FRAMEWORK

GRPC_FRAMEWORK = {
    **GRPC_FRAMEWORK,
    "SERVER_INTERCEPTORS": [
        *GRPC_FRAMEWORK["SERVER_INTERCEPTORS"],
        "tests.interceptors.ServerPidInterceptor",
    ],
}
