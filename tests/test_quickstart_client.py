"""The quickstart's client example (examples/quickstart_client.py) works against a real server with the demo data."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings
from django.core.management import call_command

from posts.models import Post
from users.models import User


def test_quickstart_client_signs_up_posts_lists_retrieves_and_reads_field_violations(grpc_address, transactional_db):
    call_command("seeddemo")
    users_before, posts_before = User.objects.count(), Post.objects.count()

    result = subprocess.run(
        [sys.executable, "-m", "examples.quickstart_client", grpc_address],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert (User.objects.count(), Post.objects.count()) == (users_before + 1, posts_before + 1)
    assert "post: Hello" in result.stdout
    assert "renamed: Hello / Renamed" in result.stdout
    assert "ada@example.com" in result.stdout
    assert "refused: INVALID_ARGUMENT {'title': ['This field may not be blank.']}" in result.stdout
