"""Find the project's gRPC services in each installed app's ``servicers.py``, as the admin finds ``admin.py``.

A service class defined in ``<app>/servicers.py`` is served when it names its
gRPC service: a model service through its serializer (the message
``protos.posts_pb2.Post`` is served as ``PostController`` of
``protos.posts_pb2_grpc``), a hand-written one through ``grpc_service``
(``"protos.auth_pb2_grpc.AuthController"``). No list is kept anywhere else,
and the order of ``INSTALLED_APPS`` does not matter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module

from django.apps import apps
from django.utils.module_loading import import_string, module_has_submodule

from grpc_ext.contract.protogen import ContractError, ProtoContract
from grpc_ext.services.generics import Service
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

SERVICERS_MODULE = "servicers"


@dataclass(frozen=True)
class DiscoveredService:
    service_class: type[Service]
    #: Dotted path of the generated ``*_pb2_grpc`` module that registers the service.
    grpc_module: str
    #: The service's name in its proto (``PostController``).
    name: str

    @property
    def serializer_class(self) -> type | None:
        return getattr(self.service_class, "serializer_class", None)

    def add_to_server(self, server) -> None:
        add = import_string(f"{self.grpc_module}.add_{self.name}Servicer_to_server")
        add(self.service_class.as_servicer(), server)


def grpc_service_of(service_class: type[Service]) -> tuple[str, str] | None:
    """Return ``(grpc module, service name)`` of a service class, or ``None`` if it names none."""
    declared = getattr(service_class, "grpc_service", None)
    if declared:
        module, _, name = declared.rpartition(".")
        return module, name
    serializer_class = getattr(service_class, "serializer_class", None)
    path_of = getattr(serializer_class, "proto_class_path", None)
    if path_of is None:
        return None
    module, _, message = path_of().rpartition(".")
    return f"{module}_grpc", f"{message}Controller"


def servicers_modules() -> list:
    """Import and return the ``servicers`` module of every installed app that has one."""
    modules = []
    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, SERVICERS_MODULE):
            name = f"{app_config.name}.{SERVICERS_MODULE}"
            try:
                modules.append(import_module(name))
            except ImportError as exc:
                package = grpc_ext_settings.PROTO_PACKAGE
                if exc.name != package and not (exc.name or "").startswith(f"{package}."):
                    raise
                raise ContractError(
                    f"{name} imports stubs that generateproto has not written yet ({exc}). Import them "
                    "inside the methods that use them, so that generateproto can read the service first."
                ) from exc
    return modules


def discover_services() -> list[DiscoveredService]:
    """Return every service class defined (not imported) in an installed app's ``servicers.py``."""
    found = []
    for module in servicers_modules():
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, Service) and value.__module__ == module.__name__):
                continue
            named = grpc_service_of(value)
            if named is None:
                logger.debug("%s names no gRPC service; not served", value.__qualname__)
                continue
            found.append(DiscoveredService(value, *named))
    return found


def add_services(server) -> None:
    """Add every discovered service to ``server`` (the ``ROOT_HANDLERS_HOOK``)."""
    for service in discover_services():
        service.add_to_server(server)


def project_contracts() -> list[ProtoContract]:
    """Return the contract of each discovered model service's serializer whose message is in ``PROTO_PACKAGE``.

    ``protos.posts_pb2.Post`` makes ``posts.proto``. Messages of other
    packages (a test's scratch stubs) are generated elsewhere. Two
    serializers for one file is an error: a file holds one resource.
    """
    contracts: dict[str, ProtoContract] = {}
    for service in discover_services():
        serializer_class = service.serializer_class
        if serializer_class is None or not hasattr(serializer_class, "proto_class_path"):
            continue
        module, _, _ = serializer_class.proto_class_path().rpartition(".")
        package, _, stem = module.rpartition(".")
        if package != grpc_ext_settings.PROTO_PACKAGE or not stem.endswith("_pb2"):
            continue
        name = stem.removesuffix("_pb2")
        known = contracts.get(name)
        if known is not None and known.serializer_class is not serializer_class:
            raise ContractError(
                f"{known.source} and {serializer_class.__module__}.{serializer_class.__qualname__} both make "
                f"{name}.proto; give one of them Meta.proto_class = '{package}.<other>_pb2.<Model>'."
            )
        contracts[name] = ProtoContract(package=name, serializer_class=serializer_class)
    return list(contracts.values())
