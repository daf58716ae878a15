"""The client ships type hints: mypy accepts the client guide's example and refuses a misuse of it."""

from __future__ import annotations

import re
import subprocess
import sys

from django.conf import settings


def readme_example() -> str:
    """The first Python block of the client guide, docs/guides/client.md ("The client: calling it from Python")."""
    guide = (settings.BASE_DIR / "docs" / "guides" / "client.md").read_text()
    section = guide.split("calling it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


#: What a caller's project would check with: strict, and nothing of this project's own mypy settings.
CALLER_MYPY = ["--strict", "--ignore-missing-imports", "--follow-imports=silent", "--no-warn-unused-ignores"]
#: The client package (every module of it), the plugin and the example, as paths from the project directory.
SHIPPED = [
    *(f"grpc_ext/client/{module.name}" for module in sorted((settings.BASE_DIR / "grpc_ext" / "client").glob("*.py"))),
    "grpc_ext/testing.py",
    "examples/quickstart_client.py",
]


def mypy(tmp_path, source: str | None = None) -> subprocess.CompletedProcess:
    """Run mypy as a caller would on ``source``, or on the client, the plugin and the quickstart example."""
    files = SHIPPED
    if source is not None:
        files = [str(tmp_path / "readme_example.py")]
        (tmp_path / "readme_example.py").write_text(source)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    command = ["-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), "--cache-dir", str(tmp_path / ".mypy_cache")]
    return subprocess.run(
        [sys.executable, *command, *CALLER_MYPY, *files],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mypy_accepts_the_readme_example(tmp_path):
    example = readme_example()
    assert "ClientError" in example and "field_violations" in example

    result = mypy(tmp_path, example)

    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_refuses_a_misuse_of_the_client(tmp_path):
    misuse = readme_example().replace("error.field_violations", "error.field_violations.upper()")

    result = mypy(tmp_path, misuse)

    assert result.returncode == 1
    assert '"dict[str, list[str]]" has no attribute "upper"' in result.stdout


def test_the_client_the_plugin_and_the_quickstart_example_type_check_strictly(tmp_path):
    result = mypy(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SHIPPED)} source files" in result.stdout
