#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    # The benchmark is no app of the product; its own settings add it (bench/settings.py).
    default = "bench.settings" if sys.argv[1:2] == ["benchmark"] else "demo.settings"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
