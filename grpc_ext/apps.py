from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class GrpcExtConfig(AppConfig):
    name = "grpc_ext"
    verbose_name = "gRPC layer over djangogrpcframework"

    def ready(self) -> None:
        from grpc_ext.contract import checks  # noqa: F401  (registers the system checks)
        from grpc_ext.services.authentication import forget_cached_user

        post_save.connect(forget_cached_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="grpc_ext_user_cache")
        post_delete.connect(forget_cached_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="grpc_ext_user_cache")
