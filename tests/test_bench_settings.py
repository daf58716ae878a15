"""The benchmark stays out of the product: only its own settings install it."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings

from tests.support.project_copy import ROOT


def test_the_product_settings_do_not_install_the_benchmark():
    import demo.settings

    assert "bench" not in demo.settings.INSTALLED_APPS
    assert "bench" not in settings.INSTALLED_APPS


def test_the_benchmark_command_runs_with_its_own_settings():
    def help_of(settings_module: str) -> subprocess.CompletedProcess:
        # The product's settings need DEBUG on (or a secret) to load at all.
        env = {"DJANGO_SETTINGS_MODULE": settings_module, "PATH": "/usr/bin:/bin", "DEBUG": "true"}
        return subprocess.run(
            [sys.executable, "manage.py", "benchmark", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
        )

    assert help_of("bench.settings").returncode == 0
    assert "Unknown command: 'benchmark'" in help_of("demo.settings").stderr
    # With no settings named, manage.py picks the benchmark's for this one command.
    env = {"PATH": "/usr/bin:/bin"}
    command = [sys.executable, "manage.py", "benchmark", "--help"]
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True).returncode == 0
