"""Settings to run the benchmark: the project's, plus the ``bench`` app and its ``benchmark`` command.

The benchmark is not part of the product, so ``demo.settings`` does not install it:
``python manage.py benchmark`` (``manage.py`` picks these settings for it). The
servers it measures run with the project's own settings (``bench/grpc_settings.py``
adds only a status-counting interceptor; the DRF baseline's are ``bench/drf_settings.py``).
"""

import os

# The command's own process is a development tool (the servers it measures run
# with DEBUG off and a secret of their own), so it needs no production secret.
os.environ.setdefault("DEBUG", "true")

from demo.settings import *  # noqa: E402, F403
from demo.settings import INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
