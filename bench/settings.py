"""Settings to run the benchmark: the project's, plus the ``bench`` app and its ``benchmark`` command.

The benchmark is not part of the product, so ``demo.settings`` does not install it:
``DJANGO_SETTINGS_MODULE=bench.settings python manage.py benchmark``. The servers it
measures run with the project's own settings (``bench.processes.server_env``).
"""

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
