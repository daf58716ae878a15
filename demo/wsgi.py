"""WSGI entry point of the web process: the admin, the REST perimeter, the page, and every service over Connect.

``runserver`` (``WSGI_APPLICATION``) and granian both serve this application;
``/<package>.<Service>/<Method>`` calls go to ``grpc_ext.gateway.connect``, the rest to Django.
"""

import os

from django.core.wsgi import get_wsgi_application

from grpc_ext.tracing import configure_web_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
# Traces of requests (OpenTelemetry), when OTEL_EXPORTER_OTLP_ENDPOINT is set; before the middleware loads.
configure_web_tracing()
django_application = get_wsgi_application()

from grpc_ext.connect import with_connect  # noqa: E402 - needs the settings configured above

application = with_connect(django_application)
