"""The documentation agrees with the code: the settings reference names every GRPC_FRAMEWORK key; the README is short.

The site itself is built by ``python3 dev.py docs`` (strict: a broken link or anchor fails it), which CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from grpc_ext.settings import DEFAULTS

BASE_DIR = Path(__file__).resolve().parent.parent
DOCS = BASE_DIR / "docs"


def reference_keys() -> list[str]:
    """Return the keys of the ``GRPC_FRAMEWORK`` tables of the settings reference, in order."""
    reference = (DOCS / "reference" / "settings.md").read_text()
    section = reference.split("## `GRPC_FRAMEWORK`", 1)[1].split("\n## ", 1)[0]
    keys = []
    for cell in re.findall(r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \|", section, re.MULTILINE):
        keys += re.findall(r"`([A-Z_]+)`", cell)
    return keys


def test_the_settings_reference_documents_every_grpc_framework_key_once_and_no_other():
    keys = reference_keys()
    assert sorted(set(DEFAULTS) - set(keys)) == [], "keys of grpc_ext.settings.DEFAULTS the reference lacks"
    assert sorted(set(keys) - set(DEFAULTS)) == [], "keys in the reference that grpc_ext.settings.DEFAULTS lacks"
    assert len(keys) == len(set(keys)), "a key documented twice"


def test_the_readme_stays_short_and_its_links_lead_to_files_that_exist():
    readme = (BASE_DIR / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "python3 dev.py serve" in readme and "python3 dev.py test" in readme
    links = [link.split("#", 1)[0] for link in re.findall(r"\]\(([^)]+)\)", readme) if "://" not in link]
    assert links and [link for link in links if not (BASE_DIR / link).exists()] == []
