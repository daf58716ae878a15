"""Settings of the gRPC server under test: the project's, plus the count of calls that did not end OK."""

from demo.settings import *  # noqa: F403
from demo.settings import GRPC_FRAMEWORK

GRPC_FRAMEWORK = {
    **GRPC_FRAMEWORK,
    "SERVER_INTERCEPTORS": [*GRPC_FRAMEWORK["SERVER_INTERCEPTORS"], "bench.interceptors.StatusCountInterceptor"],
}
