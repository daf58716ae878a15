"""Django settings for the demo project, read from the environment.

DEBUG is off unless the environment turns it on (``python3 dev.py serve`` and
``python3 dev.py test`` do, for themselves); with DEBUG off, the development
secret is refused at start-up, so an unconfigured server never accepts tokens
signed with a key that is in the repository. Without other configuration: a
SQLite file in the project and a file cache on local disk.
``deploy/production.env.example`` lists every production variable.
"""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-never-use-in-production"


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on")."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str) -> float | None:
    """Read a number from an environment variable; ``None`` when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DEBUG is off but SECRET_KEY is the development secret. "
        "In production, set the SECRET_KEY environment variable to a long random value "
        "(deploy/production.env.example lists every variable); in development, set DEBUG=true "
        "(python3 dev.py serve and python3 dev.py test do)."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    # djangogrpcframework is a library here, not an app: grpc_ext's generateproto
    # and grpcrunserver are the only commands of those names, whatever the order.
    "grpc_ext",
    "users",
    "posts",
    # The page at /app/ (a Connect client built from the protos; see docs/guides/browser.md).
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT (collected at build time) with far-future caching of the hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Answers preflights and adds the Access-Control-* headers (CORS_ALLOWED_ORIGINS), before CommonMiddleware.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo.wsgi.application"
ASGI_APPLICATION = "demo.asgi.application"

# Persistent connections with health checks: without them every RPC opens a
# new PostgreSQL connection, which costs about five times the throughput.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "600")),
        conn_health_checks=env_bool("CONN_HEALTH_CHECKS", True),
    )
}

# Behind PgBouncer in transaction mode, server-side cursors (Stream's) must be off.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DISABLE_SERVER_SIDE_CURSORS", False)

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (the gRPC server's threads) queue for the write lock
    # instead of failing with "database is locked" when a transaction that
    # has read tries to write; WAL lets readers run during a write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that does not answer fails a new connection (UNAVAILABLE) after this many
    # seconds, instead of holding the RPC until the kernel gives up, minutes later.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT", "5"))
    )
    # A connection whose network goes silent (a host gone, a partition) is dropped by the kernel after
    # about this many seconds, freeing the thread that waits on it (the call fails UNAVAILABLE), instead
    # of the hours of the kernel's defaults: TCP keepalives while waiting for an answer, and a bound on
    # how long sent data may stay unacknowledged.
    DB_TCP_TIMEOUT = int(os.environ.get("DB_TCP_TIMEOUT", "30"))
    if DB_TCP_TIMEOUT > 0:
        for option, value in {
            "keepalives": 1,
            "keepalives_idle": max(1, DB_TCP_TIMEOUT // 3),
            "keepalives_interval": max(1, DB_TCP_TIMEOUT // 9),
            "keepalives_count": 3,
            "tcp_user_timeout": DB_TCP_TIMEOUT * 1000,
        }.items():
            DATABASES["default"]["OPTIONS"].setdefault(option, value)

AUTH_USER_MODEL = "users.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "static"))
# Compressed files with content hashes in their names (cache-busting), made by
# `manage.py collectstatic`; in DEBUG the files are served from the apps as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# HTTPS, for the web process (admin and REST). Behind a proxy that ends TLS,
# SECURE_PROXY_SSL_HEADER names the header it sets, e.g. "HTTP_X_FORWARDED_PROTO,https".
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes reach the pods over plain HTTP; they must not be redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER is 'HEADER,value', e.g. 'HTTP_X_FORWARDED_PROTO,https'.")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None

# Front ends on these origins ("https://app.example.com") may call the Connect and gRPC-Web endpoints
# (grpc_ext.gateway.connect) and the REST API from their pages; none by default. Their requests may carry the
# headers of both protocols, and their pages may read the status headers gRPC-Web answers with.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_ALLOW_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_ALLOW_HEADERS = [
    "accept",
    "accept-encoding",
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
    "x-grpc-web",
    "x-user-agent",
]
CORS_EXPOSE_HEADERS = ["grpc-status", "grpc-message", "grpc-status-details-bin", "etag", "retry-after"]


def cache_from_url(url: str | None) -> dict:
    """Return the default cache: Django's Redis backend for ``redis://`` / ``rediss://`` URLs, else a directory.

    Rate-limit counters live in the cache, so every process that serves a
    client must share it: the file cache (no server needed) is shared by the
    processes of one host, Redis by every host.
    """
    if not url:
        return {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": os.environ.get("CACHE_LOCATION", str(BASE_DIR / "var" / "cache")),
        }
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {
            # Django's Redis backend that fails fast while Redis is down or hung (grpc_ext.server.cache): calls that
            # need it answer UNAVAILABLE / HTTP 503 at once instead of holding a thread for socket timeouts.
            "BACKEND": "grpc_ext.server.cache.FailFastRedisCache",
            "LOCATION": url,
            # Keys of several deployments (or test runs) sharing one Redis database stay apart.
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", ""),
            "OPTIONS": {
                "socket_connect_timeout": float(os.environ.get("CACHE_SOCKET_TIMEOUT") or 0.5),
                "socket_timeout": float(os.environ.get("CACHE_SOCKET_TIMEOUT") or 0.5),
                "FAIL_FAST_SECONDS": float(os.environ.get("CACHE_FAIL_FAST_SECONDS") or 1),
            },
        }
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// or rediss:// URL, not {url!r}.")


CACHES = {"default": cache_from_url(os.environ.get("CACHE_URL"))}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["grpc_ext.services.authentication.UserCheckingJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": int(os.environ.get("API_PAGE_SIZE", "50")),
    "EXCEPTION_HANDLER": "demo.api.exception_handler",
    # Rates of the throttles shared by REST and gRPC (users/throttling.py), per client address.
    "DEFAULT_THROTTLE_RATES": {
        "signup": os.environ.get("SIGNUP_RATE", "10/hour"),
        "login": os.environ.get("LOGIN_RATE", "10/minute"),
    },
    # The client address is REMOTE_ADDR; raise this behind that many trusted proxies.
    "NUM_PROXIES": int(os.environ.get("NUM_PROXIES", "0")),
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_ACCESS_LIFETIME", "300"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_REFRESH_LIFETIME", "86400"))),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
}

# djangogrpcframework's namespace, extended by grpc_ext (see grpc_ext/settings.py).
GRPC_FRAMEWORK: dict[str, Any] = {
    "SERVER_INTERCEPTORS": ["grpc_ext.server.interceptors.AccessLogInterceptor"],
    "PAGE_SIZE": int(os.environ.get("GRPC_PAGE_SIZE", "50")),
    "MAX_PAGE_SIZE": int(os.environ.get("GRPC_MAX_PAGE_SIZE", "1000")),
    "MAX_WORKERS": env_int("GRPC_MAX_WORKERS", 10),
    "SHUTDOWN_GRACE": float(os.environ.get("GRPC_SHUTDOWN_GRACE") or 10),
    "SHUTDOWN_DRAIN_DELAY": float(os.environ.get("GRPC_SHUTDOWN_DRAIN_DELAY") or 0),
    # None: reflection on when DEBUG is.
    "REFLECTION": env_bool("GRPC_REFLECTION", False) if os.environ.get("GRPC_REFLECTION") else None,
    # Prometheus metrics on this port (all interfaces); None serves none.
    "METRICS_PORT": env_int("GRPC_METRICS_PORT", 0) or None,
    "METRICS_ADDRESS": os.environ.get("GRPC_METRICS_ADDRESS", "0.0.0.0"),
    # L7 proxies in front of the gRPC servers that append to x-forwarded-for (the rate limits' client address).
    "NUM_PROXIES": env_int("GRPC_NUM_PROXIES", 0),
    # The HTTP/2 transport: "aio" (grpc.aio) or "native" (pygrpc-native); see docs/guides/transports.md.
    "TRANSPORT": os.environ.get("GRPC_TRANSPORT", "").strip() or "aio",
    # Connections close after this age (GOAWAY; calls in flight get the grace), so that
    # clients reconnect and spread over the servers a scale-up added. Unset: the transport's
    # default (aio: 300 and 60; native ages no connection and refuses a value).
    "MAX_CONNECTION_AGE": env_float("GRPC_MAX_CONNECTION_AGE"),
    "MAX_CONNECTION_AGE_GRACE": env_float("GRPC_MAX_CONNECTION_AGE_GRACE"),
    "STATIC_PROTOS": ["auth.proto"],
    # Every RPC needs an access token unless its service says otherwise.
    "DEFAULT_AUTHENTICATION_CLASSES": ["grpc_ext.services.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["grpc_ext.services.permissions.IsAuthenticated"],
}

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # trace_context: " trace_id=... span_id=..." for a record within a traced call, else empty.
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(trace_context)s"},
    },
    "filters": {
        "trace_context": {"()": "grpc_ext.server.trace_logging.TraceContextFilter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["trace_context"]},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "grpc_ext": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
