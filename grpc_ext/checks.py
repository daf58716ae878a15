"""System checks: a misconfigured GRPC_FRAMEWORK is reported by ``manage.py check``, not by the first RPC."""

from __future__ import annotations

from django.core import checks
from django.utils.module_loading import import_string

from grpc_ext.serializers import ModelProtoSerializer
from grpc_ext.settings import grpc_ext_settings


def _import(path: str, setting: str, check_id: str) -> tuple[object | None, list[checks.CheckMessage]]:
    try:
        return import_string(path), []
    except ImportError as exc:
        return None, [
            checks.Error(f"GRPC_FRAMEWORK[{setting!r}] names {path!r}, which cannot be imported: {exc}", id=check_id)
        ]


@checks.register()
def check_protos(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every entry of ``PROTOS`` must be a ModelProtoSerializer with a model."""
    errors = []
    for package, path in grpc_ext_settings.PROTOS.items():
        serializer_class, import_errors = _import(path, "PROTOS", "grpc_ext.E001")
        errors += import_errors
        if serializer_class is None:
            continue
        if not (isinstance(serializer_class, type) and issubclass(serializer_class, ModelProtoSerializer)):
            errors.append(
                checks.Error(
                    f"GRPC_FRAMEWORK['PROTOS'][{package!r}] is {path}, which is not a grpc_ext ModelProtoSerializer.",
                    hint="Subclass grpc_ext.serializers.ModelProtoSerializer.",
                    id="grpc_ext.E002",
                )
            )
        elif getattr(getattr(serializer_class, "Meta", None), "model", None) is None:
            errors.append(
                checks.Error(f"{path} has no Meta.model to generate the {package!r} proto from.", id="grpc_ext.E003")
            )
    return errors


@checks.register()
def check_interceptors(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every ``SERVER_INTERCEPTORS`` entry must import (the server instantiates it once)."""
    errors = []
    for path in grpc_ext_settings.SERVER_INTERCEPTORS or []:
        errors += _import(path, "SERVER_INTERCEPTORS", "grpc_ext.E004")[1]
    return errors
