"""System checks: what would fail a client is reported by ``manage.py check``, not by the first RPC.

Each served model service is checked against its serializer, model, proto and
domain services:

- E002 its serializer is not a grpc_ext ``ModelProtoSerializer`` with a model;
- E003 the serializer's fields do not fit the model;
- E005 ``Meta.create_function``/``update_function`` cannot accept a writable field;
- E006 two services serve the same gRPC service;
- E007 the serializer asks for a contract change that would break clients (``generateproto`` refuses it);
- E008 the .proto on disk, or the compiled message, is not what ``generateproto``
  writes now (a stale contract);
- E009 its gRPC stubs cannot be imported (never generated);
- W003 ``GRPC_FRAMEWORK["PROTOS"]`` is set (no longer read).

A stale or missing contract is an error for ``check`` and every other command
that runs the checks, but a warning (W001, W002) while ``makemigrations`` or
``migrate`` runs (``RelaxedContractChecks``): the schema changes before
``generateproto`` rewrites the contract, in that order. Not a check tag that
those commands leave out: a tag only chooses which checks run
(``requires_system_checks``), so the stale contract would go unreported, and
naming every other tag would skip the checks other apps register untagged.

The checks are registered with the tag ``grpc_ext``: ``manage.py check --tag grpc_ext`` runs them alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.serializers import ModelProtoSerializer

#: True while a schema command runs: a contract not regenerated yet is then a warning.
_schema_command_running: ContextVar[bool] = ContextVar("grpc_ext_schema_command_running", default=False)


@contextmanager
def relaxed_contract_checks() -> Iterator[None]:
    """Report a stale or missing contract as a warning meanwhile (``makemigrations``, ``migrate``)."""
    token = _schema_command_running.set(True)
    try:
        yield
    finally:
        _schema_command_running.reset(token)


class RelaxedContractChecks:
    """A schema command's ``check``, with a contract not regenerated yet reported as a warning."""

    def check(self, *args, **kwargs):
        with relaxed_contract_checks():
            return super().check(*args, **kwargs)  # type: ignore[misc]


#: The tag of the checks registered here.
CHECK_TAG = "grpc_ext"
#: A contract behind its serializer: (error id, warning id while relaxed).
STALE_CONTRACT = ("grpc_ext.E008", "grpc_ext.W001")
MISSING_STUBS = ("grpc_ext.E009", "grpc_ext.W002")


def contract_problem(msg: str, *, hint: str, ids: tuple[str, str]) -> checks.CheckMessage:
    """Return an error for a contract behind its serializer, or a warning while relaxed."""
    error_id, warning_id = ids
    if _schema_command_running.get():
        return checks.Warning(msg, hint=hint, id=warning_id)
    return checks.Error(msg, hint=hint, id=error_id)


def _import(path: str, setting: str, check_id: str) -> tuple[object | None, list[checks.CheckMessage]]:
    try:
        return import_string(path), []
    except ImportError as exc:
        return None, [
            checks.Error(f"GRPC_FRAMEWORK[{setting!r}] names {path!r}, which cannot be imported: {exc}", id=check_id)
        ]


@checks.register(CHECK_TAG)
def check_services(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every discovered service can be served, and its serializer, model, proto and domain services agree."""
    from grpc_ext.contract.discovery import discover_services, project_contracts
    from grpc_ext.contract.protogen import ContractError

    errors: list[checks.CheckMessage] = []
    served: dict[str, str] = {}
    try:
        services = discover_services()
    except ContractError as exc:
        return [
            contract_problem(str(exc), hint="Then run `.venv/bin/python manage.py generateproto`.", ids=MISSING_STUBS)
        ]
    for service in services:
        label = f"{service.service_class.__module__}.{service.service_class.__qualname__}"
        full_name = f"{service.grpc_module}.{service.name}"
        if full_name in served:
            errors.append(
                checks.Error(f"{label} and {served[full_name]} both serve {service.name}.", id="grpc_ext.E006")
            )
        served[full_name] = label
        serializer_class = service.serializer_class
        if serializer_class is not None:
            errors += check_serializer(label, serializer_class)
        try:
            import_string(f"{service.grpc_module}.add_{service.name}Servicer_to_server")
        except ImportError as exc:
            errors.append(
                contract_problem(
                    f"{label} is served as {service.name} of {service.grpc_module}, which cannot be imported: {exc}",
                    hint="Run `.venv/bin/python manage.py generateproto`.",
                    ids=MISSING_STUBS,
                )
            )
    if not any(error.level >= checks.ERROR for error in errors):
        try:
            contracts = project_contracts()
        except ContractError as exc:
            return [*errors, checks.Error(str(exc), id="grpc_ext.E006")]
        for contract in contracts:
            errors += check_contract_is_current(contract)
    return errors


def check_serializer(label: str, serializer_class: type) -> list[checks.CheckMessage]:
    """The serializer is a model proto serializer whose fields fit its model and its domain services."""
    if not (isinstance(serializer_class, type) and issubclass(serializer_class, ModelProtoSerializer)):
        return [
            checks.Error(
                f"{label}.serializer_class is not a grpc_ext ModelProtoSerializer.",
                hint="Subclass grpc_ext.wire.serializers.ModelProtoSerializer.",
                id="grpc_ext.E002",
            )
        ]
    if getattr(getattr(serializer_class, "Meta", None), "model", None) is None:
        return [checks.Error(f"{serializer_class.__qualname__} has no Meta.model.", id="grpc_ext.E002")]
    try:
        fields = serializer_class().fields
    except (ImproperlyConfigured, AssertionError) as exc:
        return [checks.Error(f"{serializer_class.__qualname__}: {exc}", id="grpc_ext.E003")]
    writable = [field.source or name for name, field in fields.items() if not field.read_only]
    errors: list[checks.CheckMessage] = []
    for attribute, skip in (("create_function", 0), ("update_function", 1)):
        function = getattr(serializer_class.Meta, attribute, None)
        if function is None:
            continue
        refused = refused_keywords(function, writable, skip)
        if refused:
            errors.append(
                checks.Error(
                    f"{serializer_class.__qualname__}.Meta.{attribute} ({function.__module__}.{function.__qualname__})"
                    f" cannot accept the writable field(s) {', '.join(refused)}.",
                    hint="Let the domain service take the validated fields as they come (**fields).",
                    id="grpc_ext.E005",
                )
            )
    return errors


def refused_keywords(function: Callable[..., Any], names: list[str], positional: int) -> list[str]:
    """Return the ``names`` that ``function`` takes no keyword argument for (after ``positional`` arguments)."""
    parameters = list(inspect.signature(function).parameters.values())[positional:]
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return []
    accepted = {
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return [name for name in names if name not in accepted]


def check_contract_is_current(contract) -> list[checks.CheckMessage]:
    """The .proto on disk and the compiled message are what ``generateproto`` makes from the serializer now."""
    from grpc_ext.contract.protogen import ContractError

    path = Path(settings.BASE_DIR) / grpc_ext_settings.PROTO_DIR / f"{contract.package}.proto"
    hint = "Run `.venv/bin/python manage.py generateproto` and commit the result."
    if not path.exists():
        return [
            contract_problem(
                f"{path.name} has not been generated for {contract.source}.", hint=hint, ids=STALE_CONTRACT
            )
        ]
    try:
        current = path.read_text() == contract.render(path.read_text())
    except ContractError as exc:
        return [checks.Error(str(exc), id="grpc_ext.E007")]
    if not current:
        return [
            contract_problem(f"{path.name} is stale: {contract.source} has changed.", hint=hint, ids=STALE_CONTRACT)
        ]
    try:
        message = contract.serializer_class.get_proto_class()
    except ImportError:
        return []  # E009 reports it
    compiled = set(message.DESCRIPTOR.fields_by_name)
    expected = {field.name for field in contract.readable_fields()}
    if compiled != expected:
        return [
            contract_problem(
                f"The compiled {message.DESCRIPTOR.full_name} has fields {sorted(compiled)}, "
                f"{contract.source} reads {sorted(expected)}: the stubs are stale.",
                hint=hint,
                ids=STALE_CONTRACT,
            )
        ]
    return []


@checks.register(CHECK_TAG)
def check_retired_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``GRPC_FRAMEWORK["PROTOS"]`` is no longer read: say so rather than ignore it silently."""
    if "PROTOS" in getattr(settings, "GRPC_FRAMEWORK", {}):
        return [
            checks.Warning(
                "GRPC_FRAMEWORK['PROTOS'] is no longer read: protos are generated for the services found in "
                "each installed app's servicers.py.",
                hint="Remove the setting; see the tutorial 'Adding a model' (docs/tutorial/adding-a-model.md).",
                id="grpc_ext.W003",
            )
        ]
    return []


@checks.register(CHECK_TAG)
def check_interceptors(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every ``SERVER_INTERCEPTORS`` entry must import (the server instantiates it once)."""
    errors = []
    for path in grpc_ext_settings.SERVER_INTERCEPTORS or []:
        errors += _import(path, "SERVER_INTERCEPTORS", "grpc_ext.E004")[1]
    return errors
