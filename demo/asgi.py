"""ASGI entry point for the REST perimeter and the admin."""

import os

from django.core.asgi import get_asgi_application

from grpc_ext.tracing import configure_web_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
# Traces of requests (OpenTelemetry), when OTEL_EXPORTER_OTLP_ENDPOINT is set; before the middleware loads.
configure_web_tracing()
application = get_asgi_application()
