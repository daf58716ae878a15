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
    # Adds every service found in the installed apps' servicers.py (grpc_ext.contract.discovery).
    "ROOT_HANDLERS_HOOK": "grpc_ext.contract.discovery.add_services",
    # Dotted paths of server interceptor classes, instantiated once per server.
    "SERVER_INTERCEPTORS": [],
    # List paging (AIP-132): default and maximum page_size.
    "PAGE_SIZE": 50,
    "MAX_PAGE_SIZE": 1000,
    # Largest List response in bytes: a page is cut short (with a token for the
    # rest) rather than exceed the 4 MiB message limit clients have by default.
    "MAX_LIST_RESPONSE_BYTES": 3 * 1024 * 1024,
    # Stream: rows per response message by default, and the largest batch_size a client may ask for.
    "STREAM_BATCH_SIZE": 1000,
    "MAX_STREAM_BATCH_SIZE": 5000,
    # BatchCreate (AIP-233): most items one call may create.
    "MAX_BATCH_SIZE": 1000,
    # Seconds a Create's request_id (AIP-155) is remembered at least; `clearidempotencyrecords` deletes older ones.
    "IDEMPOTENCY_TTL": 24 * 3600,
    # Directory the protos and stubs are written to, relative to BASE_DIR, and the
    # Python package they are imported from (a serializer without proto_class means
    # <PROTO_PACKAGE>.<app_label>_pb2.<Model>).
    "PROTO_DIR": "protos",
    "PROTO_PACKAGE": "protos",
    # Build messages with converters compiled per serializer class (grpc_ext.wire.builders);
    # False uses the reference path (DRF .data + json_format) everywhere.
    "FAST_PATH": True,
    # Seconds in-flight RPCs get to finish after SIGTERM or SIGINT.
    "SHUTDOWN_GRACE": 10.0,
    # Hand-written .proto files in PROTO_DIR that generateproto compiles with the generated ones.
    "STATIC_PROTOS": [],
    # What a service uses when it does not say (as DRF's DEFAULT_* settings).
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["grpc_ext.services.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": [],
    # Seconds JWTAuthentication keeps a validated token (never past its expiry) and the user it
    # read, per process; saving or deleting a user drops it at once in that process, other
    # processes see the change within the TTL. 0 validates and reads on every call.
    "AUTH_CACHE_TTL": 5.0,
    # Seconds a draining server still accepts RPCs while health says NOT_SERVING,
    # so that load balancers stop routing to it first.
    "SHUTDOWN_DRAIN_DELAY": 0.0,
    # Seconds between probes of the database (health turns NOT_SERVING while it fails; 0: no probe),
    # and seconds after which a probe that has not answered counts as failed.
    "DATABASE_PROBE_INTERVAL": 1.0,
    "DATABASE_PROBE_TIMEOUT": 2.0,
    # Longest value of a List filter, in characters, for fields without a max_length of their own;
    # checked before any query (SQLite refuses LIKE patterns past 50,000 bytes).
    "MAX_FILTER_LENGTH": 256,
    # Threads per server process that run the Django part of calls (the event loop reads
    # requests and writes responses); --max-workers overrides it.
    "MAX_WORKERS": 10,
    # Longest a statement of a call may run on PostgreSQL (statement_timeout), whatever the call's
    # deadline, or without one; then the call fails DEADLINE_EXCEEDED. 0 or None: only the deadline bounds it.
    "QUERY_TIMEOUT": 30.0,
    # Seconds a call's request message may take to arrive after its headers; then DEADLINE_EXCEEDED.
    "REQUEST_TIMEOUT": 10.0,
    # The HTTP/2 transport under the services: "aio" (grpc.aio) or "native" (pygrpc-native: HTTP/2
    # and gRPC framing in Rust, outside the GIL; plaintext, connections not aged). grpc_ext.server.transport.
    "TRANSPORT": "aio",
    # Seconds a new connection may take to complete its handshake (TLS, the HTTP/2 preface and
    # settings); then it is closed. A client that connects and says nothing holds a socket that long.
    # None: the transport's own (aio: 10; native: 120, fixed, which refuses another value).
    "HANDSHAKE_TIMEOUT": None,
    # Concurrent calls (HTTP/2 streams) one connection may have open.
    "MAX_CONCURRENT_STREAMS": 100,
    # The server pings a connection after this many seconds without activity, and closes
    # it when no answer comes within KEEPALIVE_TIMEOUT: dead peers are found.
    "KEEPALIVE_TIME": 60.0,
    "KEEPALIVE_TIMEOUT": 20.0,
    # Shortest interval at which a client may ping without calls in flight; pinging more
    # often gets its connection closed (GOAWAY too_many_pings). None: 10 on aio; native does not
    # enforce one (and refuses a value).
    "KEEPALIVE_MIN_CLIENT_PING_INTERVAL": None,
    # A connection gets GOAWAY after this many seconds (+-10% jitter), so clients reconnect
    # and an L4 load balancer spreads them over new backends; calls in flight then get
    # MAX_CONNECTION_AGE_GRACE more seconds. Idle connections close after MAX_CONNECTION_IDLE.
    # None: the transport's default (aio: 300, 60 and 300; native ages and idles out no
    # connection, and refuses to start with a value set).
    "MAX_CONNECTION_AGE": None,
    "MAX_CONNECTION_AGE_GRACE": None,
    "MAX_CONNECTION_IDLE": None,
    # A persistent database connection is checked (SELECT 1, with CONN_HEALTH_CHECKS) at most
    # once per this many seconds, and always after an error, instead of before every call.
    "DB_HEALTH_CHECK_INTERVAL": 1.0,
    # Server reflection (grpcurl, buf curl); None means on when DEBUG is on.
    "REFLECTION": None,
    # grpc channel options as (name, value) pairs, e.g. message size limits.
    "SERVER_OPTIONS": [
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ],
    # PEM files: serve TLS when TLS_CERT and TLS_KEY are set; with TLS_CLIENT_CA,
    # require client certificates signed by it (mutual TLS).
    "TLS_CERT": None,
    "TLS_KEY": None,
    "TLS_CLIENT_CA": None,
    # L7 proxies in front of the server (a gRPC-aware balancer) that append the caller's address
    # to the x-forwarded-for metadata: the client address of rate limits is the one the outermost
    # of them appended. 0: the peer's address, and the metadata is ignored (a client could set it).
    "NUM_PROXIES": 0,
    # Port of the Prometheus metrics endpoint (grpc_ext.server.metrics); None serves no metrics.
    "METRICS_PORT": None,
    "METRICS_ADDRESS": "0.0.0.0",
}

# Interceptors are instantiated by grpc_ext.server.transport, so they stay dotted paths here.
IMPORT_STRINGS = [
    "ROOT_HANDLERS_HOOK",
    "DEFAULT_AUTHENTICATION_CLASSES",
    "DEFAULT_PERMISSION_CLASSES",
    "DEFAULT_THROTTLE_CLASSES",
]

grpc_ext_settings = GRPCSettings(None, DEFAULTS, IMPORT_STRINGS)


def reload_grpc_ext_settings(*args, setting: str, **kwargs) -> None:
    if setting in {"GRPC_FRAMEWORK", "ROOT_URLCONF"}:
        grpc_ext_settings.reload()


setting_changed.connect(reload_grpc_ext_settings)
