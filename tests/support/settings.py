"""The project's settings plus the test-only app whose model has every mapped field type."""

import os
import tempfile

# Development settings, also for the servers the tests start as subprocesses
# (they inherit the environment): the project's default is production, DEBUG off.
os.environ.setdefault("DEBUG", "true")

from demo.settings import *  # noqa: E402, F403
from demo.settings import INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.support.typesapp"]

# A cache of the test run's own, shared with the server processes the tests start.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": tempfile.mkdtemp(prefix="grpcdemo-test-cache-"),
    },
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's shared-cache in-memory database: there, concurrent writers (the server's
    # threads racing in the tests) fail at once with "database table is locked" instead of queueing.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.mkdtemp(prefix="grpcdemo-test-db-")) / "test.sqlite3")}  # noqa: F405

# Collected static files are a production build step; the tests' admin pages use the apps' files.
STATIC_ROOT = tempfile.mkdtemp(prefix="grpcdemo-test-static-")
