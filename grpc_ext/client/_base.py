"""What the synchronous and the grpc.aio client share: the services the generated modules define,
requests built from keywords, the channel's options and credentials, the tokens, and ``client.<label>``."""

from __future__ import annotations

import base64
import binascii
import functools
import importlib
import json
import pkgutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf import descriptor, field_mask_pb2, message_factory
from google.protobuf.message import Message

from grpc_ext.client.tracing import client_tracer

#: Seconds a call may take unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 10.0
#: RPCs that change nothing, so that a retry after UNAVAILABLE cannot write twice.
READ_METHODS = ("Retrieve", "List", "Stream")
#: A write whose request has this field is idempotent (AIP-155): the server answers a
#: repeated request_id with the first answer, so the client fills it in and may retry.
REQUEST_ID_FIELD = "request_id"
#: Request fields that say how to apply a change rather than what to change (AIP-134,
#: AIP-154, AIP-155, AIP-163): never paths of an update mask built from the keywords.
CONTROL_FIELDS = frozenset({"update_mask", "etag", "request_id", "allow_missing", "validate_only"})
#: gRPC retry policy (service config, gRFC A6) of the read methods. The wait before
#: each new attempt is random, up to 0.2 s, then 0.6 s, 1.8 s and 5 s: enough to ride
#: out a server restart, short enough to fail well within a deadline of seconds.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 3,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
#: Keepalive as the server's defaults (``GRPC_FRAMEWORK["KEEPALIVE_TIME"]`` and
#: ``KEEPALIVE_TIMEOUT``): with calls in flight, a ping after 60 s without activity, and
#: the connection given up 20 s later without an answer, so a long Stream to a dead
#: peer fails instead of hanging. 60 s is above the interval the server accepts
#: (``KEEPALIVE_MIN_CLIENT_PING_INTERVAL``, 10 s), so it never answers GOAWAY
#: "too_many_pings". Idle connections are not pinged: the server closes them
#: (``MAX_CONNECTION_IDLE``) and the channel reconnects on the next call.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
]
#: Reconnect soon after a failed connection (grpc waits 1 s at first by default), so
#: that retried reads find a restarted server within their backoff.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
#: An access token is refreshed this many seconds before it expires (at most a
#: quarter of its lifetime), so that it does not expire on its way to the server.
REFRESH_MARGIN = 30.0


@dataclass(frozen=True)
class RpcMethod:
    """One RPC of a service: its path on the wire and its message classes."""

    service: str
    name: str
    request_class: type[Message]
    response_class: type[Message]
    server_streaming: bool

    @property
    def idempotent(self) -> bool:
        """A read, or a write the server deduplicates by ``request_id``: safe to send again."""
        request_id = self.request_class.DESCRIPTOR.fields_by_name.get(REQUEST_ID_FIELD)
        is_string = request_id is not None and request_id.type == descriptor.FieldDescriptor.TYPE_STRING
        return self.name in READ_METHODS or (is_string and not _is_repeated(request_id))

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def qualified_name(self) -> str:
        return f"{self.service}.{self.name}"


@dataclass(frozen=True)
class ServiceSpec:
    """A service found in the generated modules, and its methods by RPC name."""

    label: str
    full_name: str
    methods: dict[str, RpcMethod]
    #: Fields that name the object acted on (those of the Retrieve request): never in an update mask.
    key_fields: frozenset[str] = field(default=frozenset({"id"}))


def _default_proto_package() -> str:
    """The package of the generated modules: ``GRPC_FRAMEWORK["PROTO_DIR"]`` in a Django project, else ``protos``."""
    try:
        from django.conf import settings

        if settings.configured:
            proto_dir = (getattr(settings, "GRPC_FRAMEWORK", None) or {}).get("PROTO_DIR", "protos")
            if not Path(proto_dir).is_absolute():
                return str(proto_dir).strip("/").replace("/", ".")
    except ImportError:
        pass
    return "protos"


def _proto_modules(protos: str | ModuleType | Iterable[str | ModuleType] | None) -> list[ModuleType]:
    """Import the ``*_pb2`` modules of a package (every one), or the modules given."""
    if protos is None:
        protos = _default_proto_package()
    if isinstance(protos, str):
        protos = importlib.import_module(protos)
    if isinstance(protos, ModuleType):
        if not hasattr(protos, "__path__"):
            return [protos]
        names = sorted(info.name for info in pkgutil.iter_modules(protos.__path__) if info.name.endswith("_pb2"))
        return [importlib.import_module(f"{protos.__name__}.{name}") for name in names]
    given = cast(Iterable[str | ModuleType], protos)
    return [importlib.import_module(item) if isinstance(item, str) else item for item in given]


def discover_services(protos: str | ModuleType | Iterable[str | ModuleType] | None = None) -> dict[str, ServiceSpec]:
    """Return the services of the generated modules by label (their proto package, else the file name)."""
    services: dict[str, ServiceSpec] = {}
    for module in _proto_modules(protos):
        file: descriptor.FileDescriptor | None = getattr(module, "DESCRIPTOR", None)
        if file is None:
            continue
        stem = Path(file.name).stem
        for service in file.services_by_name.values():
            label = (file.package.rpartition(".")[2] or stem) if len(file.services_by_name) == 1 else service.name
            if label in services:
                label = service.full_name.replace(".", "_")
            methods = {
                method.name: RpcMethod(
                    service=service.full_name,
                    name=method.name,
                    request_class=message_factory.GetMessageClass(method.input_type),
                    response_class=message_factory.GetMessageClass(method.output_type),
                    server_streaming=method.server_streaming,
                )
                for method in service.methods
                if not method.client_streaming
            }
            retrieve = methods.get("Retrieve")
            key_fields = (
                frozenset(f.name for f in retrieve.request_class.DESCRIPTOR.fields) if retrieve else frozenset({"id"})
            )
            services[label] = ServiceSpec(label, service.full_name, methods, key_fields)
    return services


def service_config(services: Iterable[ServiceSpec]) -> str:
    """Return the channel's service config: retries on UNAVAILABLE for the idempotent methods only.

    Those are the reads and the writes whose request carries a ``request_id``;
    any other write is sent once, as a second attempt could write twice.
    """
    names = [
        {"service": spec.full_name, "method": method.name}
        for spec in services
        for method in spec.methods.values()
        if method.idempotent
    ]
    config: dict[str, Any] = {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}] if names else []}
    return json.dumps(config)


def channel_options(services: Iterable[ServiceSpec], extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Retries, keepalive and reconnect settings; ``extra`` options win."""
    options: dict[str, Any] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": service_config(services),
        **dict(KEEPALIVE_OPTIONS),
        **dict(RECONNECT_OPTIONS),
    }
    options.update(dict(extra))
    return list(options.items())


def _read_pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(
    root_certificates: bytes | str | Path | None,
    private_key: bytes | str | Path | None = None,
    certificate_chain: bytes | str | Path | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM bytes or file paths (mutual TLS with a key and chain); ``None`` for plaintext."""
    if root_certificates is None and private_key is None and certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(root_certificates),
        private_key=_read_pem(private_key),
        certificate_chain=_read_pem(certificate_chain),
    )


# --------------------------------------------------------------------------- messages


def build_request(spec: ServiceSpec, method: RpcMethod, args: tuple[Any, ...], fields: dict[str, Any]) -> Message:
    """Return ``method``'s request from one request message, or from its fields as keywords.

    An unknown keyword is a ``TypeError`` raised before any call. ``None``
    leaves a field unset. A request with an ``update_mask`` the caller did not
    give gets one listing the keywords given (the key and control fields
    aside), so ``PartialUpdate(id=..., title="x")`` changes the title only. A
    write with a ``request_id`` field gets a new UUID there unless given, so
    that its retries are answered once.
    """
    request_class = method.request_class
    if args:
        if len(args) > 1 or fields or not isinstance(args[0], request_class):
            raise TypeError(
                f"{method.qualified_name}() takes one {request_class.DESCRIPTOR.full_name} or keyword arguments"
            )
        return args[0]
    message = request_class.DESCRIPTOR
    known = message.fields_by_name
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise TypeError(
            f"{method.qualified_name}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"its request {message.full_name} has {', '.join(known) or 'no fields'}"
        )
    values = {name: value for name, value in fields.items() if value is not None}
    if REQUEST_ID_FIELD not in values and method.idempotent and REQUEST_ID_FIELD in known:
        # One id per logical call: every attempt and every retry sends this same request.
        values[REQUEST_ID_FIELD] = str(uuid.uuid4())
    mask_field = known.get("update_mask")
    if mask_field is not None and mask_field.message_type is field_mask_pb2.FieldMask.DESCRIPTOR:
        mask = fields.get("update_mask")
        if mask is None:
            mask = [name for name in fields if name not in spec.key_fields and name not in CONTROL_FIELDS]
        if isinstance(mask, str):
            mask = [mask]
        if not isinstance(mask, field_mask_pb2.FieldMask):
            mask = field_mask_pb2.FieldMask(paths=list(mask))
        values["update_mask"] = mask
    try:
        return request_class(**values)
    except TypeError as exc:
        raise TypeError(f"{method.qualified_name}(): {exc}") from exc


def _item_field(response_class: type[Message]) -> str | None:
    """The one repeated message field of a List or Stream response (``posts``), if there is exactly one."""
    repeated = [
        f.name
        for f in response_class.DESCRIPTOR.fields
        if f.message_type is not None and _is_repeated(f) and not f.message_type.GetOptions().map_entry
    ]
    return repeated[0] if len(repeated) == 1 else None


def _is_repeated(field_descriptor: Any) -> bool:
    is_repeated = getattr(field_descriptor, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field_descriptor.label == descriptor.FieldDescriptor.LABEL_REPEATED)


def _items(response: Message, item_field: str | None) -> Sequence[Any]:
    return getattr(response, item_field) if item_field else (response,)


# --------------------------------------------------------------------------- tokens


def token_lifetime(token: str) -> tuple[float, float] | None:
    """Return a JWT's ``(iat, exp)`` claims, read without verifying it (the server does), or ``None``."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
        return float(claims.get("iat", exp)), exp
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return None


@dataclass(frozen=True)
class Tokens:
    """The tokens a client calls with; ``fixed`` when given as ``token=``, which is used as is."""

    access: str | None = None
    refresh: str | None = None
    fixed: bool = False

    def can_refresh(self) -> bool:
        return not self.fixed and bool(self.refresh)

    @functools.cached_property
    def access_lifetime(self) -> tuple[float, float] | None:
        """The access token's ``(iat, exp)``, decoded once: tokens are replaced, never changed."""
        return token_lifetime(self.access) if self.access else None

    def near_expiry(self, margin: float, now: float | None = None) -> bool:
        if not self.access or not self.can_refresh():
            return False
        lifetime = self.access_lifetime
        if lifetime is None:
            return False
        issued, expires = lifetime
        margin = min(margin, max(expires - issued, 0) / 4)
        return (now if now is not None else time.time()) >= expires - margin


class _Calls:
    """Options every call takes, kept apart from the request's fields."""

    @staticmethod
    def split(fields: dict[str, Any], default_timeout: float) -> tuple[float, tuple[tuple[str, str], ...]]:
        timeout = fields.pop("timeout", None)
        metadata = tuple(fields.pop("metadata", None) or ())
        timeout = default_timeout if timeout is None else float(timeout)
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        return timeout, metadata


class _ClientBase:
    """What ``Client`` and ``AsyncClient`` share: the services, the tokens, the channel's settings."""

    _services: dict[str, ServiceSpec]
    #: The channel ``_connect`` opens: grpc's (``Client``) or grpc.aio's (``AsyncClient``), whose factories match.
    _channel: Any

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        root_certificates: bytes | str | Path | None = None,
        private_key: bytes | str | Path | None = None,
        certificate_chain: bytes | str | Path | None = None,
        options: Sequence[tuple[str, Any]] = (),
        protos: str | ModuleType | Iterable[str | ModuleType] | None = None,
        refresh_margin: float = REFRESH_MARGIN,
        tracer_provider: Any = None,
    ):
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds: every call has a deadline")
        self.target = target
        self.timeout = float(timeout)
        self.refresh_margin = refresh_margin
        self._services = discover_services(protos)
        self._tokens = Tokens(access=token, fixed=token is not None)
        self._credentials = channel_credentials(root_certificates, private_key, certificate_chain)
        self._options = channel_options(self._services.values(), options)
        self._auth_spec = next(
            (spec for spec in self._services.values() if {"Login", "Refresh", "Logout"} <= set(spec.methods)), None
        )
        self._callables: dict[str, Any] = {}
        # CLIENT spans and traceparent: with this provider, else the global one once configured (OpenTelemetry).
        self._tracer = client_tracer(tracer_provider)
        self._connect()

    def _connect(self) -> None:
        """Open the channel and build the service objects (grpc or grpc.aio)."""
        raise NotImplementedError

    def _callable(self, method: RpcMethod) -> Any:
        """Return the channel's multicallable of ``method``, made once per client."""
        multicallable = self._callables.get(method.path)
        if multicallable is None:
            factory = self._channel.unary_stream if method.server_streaming else self._channel.unary_unary
            multicallable = factory(
                method.path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
            self._callables[method.path] = multicallable
        return multicallable

    def _unary(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """Call a unary RPC: its response (``Client``), or a coroutine of it (``AsyncClient``)."""
        raise NotImplementedError

    def _stream(
        self,
        spec: ServiceSpec,
        method: RpcMethod,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """Call a server-streaming RPC: an iterator of its responses (an async iterator on ``AsyncClient``)."""
        raise NotImplementedError

    @property
    def access_token(self) -> str | None:
        return self._tokens.access

    @property
    def refresh_token(self) -> str | None:
        return self._tokens.refresh

    def set_tokens(self, access: str, refresh: str | None = None) -> None:
        """Call with these tokens from now on, refreshed as after ``login`` (tokens kept from an earlier run)."""
        self._tokens = Tokens(access=access, refresh=refresh)

    @property
    def services(self) -> list[str]:
        """The labels ``client.<label>`` answers to."""
        return sorted(self._services)

    def _service_spec(self, name: str) -> ServiceSpec:
        spec = self._services.get(name)
        if spec is None:
            for candidate in self._services.values():
                if candidate.full_name == name:
                    return candidate
            raise AttributeError(f"No service {name!r}; the generated modules define {', '.join(self.services)}")
        return spec

    def _auth_method(self, name: str) -> tuple[ServiceSpec, RpcMethod]:
        if self._auth_spec is None:
            raise RuntimeError("No service with Login, Refresh and Logout in the generated modules")
        return self._auth_spec, self._auth_spec.methods[name]

    def _metadata(self, token: str | None, extra: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return ((("authorization", f"Bearer {token}"),) if token else ()) + extra

    def _store(self, pair: Any) -> None:
        self._tokens = Tokens(access=pair.access, refresh=pair.refresh or self._tokens.refresh)

    def _is_auth(self, spec: ServiceSpec) -> bool:
        return spec is self._auth_spec

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._services]


# --------------------------------------------------------------------------- client.<label>


class MethodCaller:
    """``client.<label>.<Rpc>``: call it with the request's fields as keywords (or one request message).

    ``timeout=`` (seconds) and ``metadata=`` are options of the call, not fields.
    On a ``Client`` it returns the response (an iterator of responses for a
    server-streaming RPC); on an ``AsyncClient`` a coroutine (an async iterator).
    """

    def __init__(self, client: _ClientBase, spec: ServiceSpec, method: RpcMethod):
        self._client, self._spec, self.method = client, spec, method
        self.__name__ = method.name
        self.__doc__ = f"{method.qualified_name}({method.request_class.DESCRIPTOR.full_name})"

    def __call__(self, *args: Any, **fields: Any) -> Any:
        timeout, metadata = _Calls.split(fields, self._client.timeout)
        request = build_request(self._spec, self.method, args, fields)
        invoke = self._client._stream if self.method.server_streaming else self._client._unary
        return invoke(self._spec, self.method, request, timeout=timeout, metadata=metadata)


class _ServiceClientBase:
    """What the synchronous and asynchronous ``client.<label>`` share: the RPCs by name, and requests built for them."""

    def __init__(self, client: _ClientBase, spec: ServiceSpec):
        self._client, self.spec = client, spec
        self._methods = {name: MethodCaller(client, spec, method) for name, method in spec.methods.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_methods"][name]
        except KeyError:
            raise AttributeError(f"{self.spec.full_name} has no RPC {name!r}") from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._methods]

    def _prepare(self, name: str, args: tuple[Any, ...], fields: dict[str, Any]) -> tuple[RpcMethod, Any, float, Any]:
        """Return the RPC ``name``, its request built from ``args``/``fields``, and the call's timeout and metadata."""
        try:
            method = self.spec.methods[name]
        except KeyError:
            raise AttributeError(f"{self.spec.full_name} has no RPC {name!r}") from None
        timeout, metadata = _Calls.split(fields, self._client.timeout)
        return method, build_request(self.spec, method, args, fields), timeout, metadata


def _with_page_token(request: Any, token: str) -> Any:
    following = type(request)()
    following.CopyFrom(request)
    following.page_token = token
    return following
