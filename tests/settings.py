"""The project's settings plus the test-only app whose model has every mapped field type."""

import tempfile

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.typesapp"]

# A cache of the test run's own, shared with the server processes the tests start.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": tempfile.mkdtemp(prefix="grpcdemo-test-cache-"),
    },
}
