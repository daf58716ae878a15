"""The ``GRPC_FRAMEWORK`` settings namespace, extended with this layer's keys.

djangogrpcframework's settings object raises ``AttributeError`` for keys it
does not know, so this module builds a second instance of the same class with
the extended defaults; both read the same ``settings.GRPC_FRAMEWORK`` dict
lazily.
"""

from django.test.signals import setting_changed
from django_grpc_framework.settings import DEFAULTS as FRAMEWORK_DEFAULTS
from django_grpc_framework.settings import GRPCSettings

DEFAULTS = {
    **FRAMEWORK_DEFAULTS,
    # Dotted paths of server interceptor classes, instantiated once per server.
    "SERVER_INTERCEPTORS": [],
    # List paging (AIP-132): default and maximum page_size.
    "PAGE_SIZE": 50,
    "MAX_PAGE_SIZE": 1000,
    # Proto file stem -> dotted path of the ModelProtoSerializer it is generated from.
    "PROTOS": {},
    # Directory the protos and stubs are written to, relative to BASE_DIR.
    "PROTO_DIR": "protos",
    # Build messages with converters compiled per serializer class (grpc_ext.fastpath);
    # False uses the reference path (DRF .data + json_format) everywhere.
    "FAST_PATH": True,
    # Seconds in-flight RPCs get to finish after SIGTERM or SIGINT.
    "SHUTDOWN_GRACE": 10.0,
}

# Interceptors are instantiated by grpc_ext.server, so they stay dotted paths here.
IMPORT_STRINGS = ["ROOT_HANDLERS_HOOK"]

grpc_ext_settings = GRPCSettings(None, DEFAULTS, IMPORT_STRINGS)


def reload_grpc_ext_settings(*args, setting: str, **kwargs) -> None:
    if setting in {"GRPC_FRAMEWORK", "ROOT_URLCONF"}:
        grpc_ext_settings.reload()


setting_changed.connect(reload_grpc_ext_settings)
