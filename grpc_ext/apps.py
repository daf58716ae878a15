from django.apps import AppConfig


class GrpcExtConfig(AppConfig):
    name = "grpc_ext"
    verbose_name = "gRPC layer over djangogrpcframework"
