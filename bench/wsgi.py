"""WSGI entry point of the DRF baseline server (``granian --interface wsgi bench.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.drf_settings")
application = get_wsgi_application()
