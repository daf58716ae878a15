"""The project's settings plus the test-only app whose model has every mapped field type."""

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.typesapp"]
