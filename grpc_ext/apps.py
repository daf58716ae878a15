from django.apps import AppConfig


class GrpcExtConfig(AppConfig):
    name = "grpc_ext"
    verbose_name = "gRPC layer over djangogrpcframework"

    def ready(self) -> None:
        from grpc_ext import checks  # noqa: F401  (registers the system checks)
