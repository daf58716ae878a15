"""Settings to run the benchmark: the project's, plus the ``bench`` app and its ``benchmark`` command.

The benchmark is not part of the product, so ``demo.settings`` does not install it:
``python manage.py benchmark`` (``manage.py`` picks these settings for it). The
servers it measures run with the project's own settings (``bench/grpc_settings.py``
adds only a status-counting interceptor; the DRF baseline's are ``bench/drf_settings.py``).
"""

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
