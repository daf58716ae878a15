"""The tutorial "Adding a model" (docs/tutorial/adding-a-model.md), followed word for word in a copy of the project.

It runs in the environment a newcomer's new shell has (no DEBUG), then calls the new service over gRPC.
"""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import pytest

from tests.support.project_copy import ROOT, ProjectCopy, free_port


def tutorial_blocks() -> list[tuple[str, str]]:
    """Return the (language, code) blocks of the tutorial "Adding a model", in order."""
    tutorial = (ROOT / "docs" / "tutorial" / "adding-a-model.md").read_text()
    return re.findall(r"```(\w+)\n(.*?)```", tutorial, re.DOTALL)


@pytest.fixture
def project(tmp_path):
    copy = ProjectCopy(tmp_path / "project")
    yield copy
    copy.close()


def follow(project: ProjectCopy, blocks: list[tuple[str, str]]) -> None:
    """Do what each block says: write the files, add the app to the settings, run the commands."""
    for language, code in blocks:
        first, _, body = code.partition("\n")
        if language == "python" and first == "# demo/settings.py":
            apps = re.findall(r'^\s+("\w+",)$', body, re.MULTILINE)
            project.edit(
                "demo/settings.py",
                "INSTALLED_APPS = [\n",
                "INSTALLED_APPS = [\n" + "".join(f"    {app}\n" for app in apps),
            )
        elif language == "python":
            target = first.removeprefix("# ").strip()
            (project.path / target).write_text(body)
        elif language == "sh":
            for line in code.splitlines():
                command = line.split("#", 1)[0].split()
                if not command or command[-1].endswith("call_notes.py"):
                    continue  # the client is run against the test's own port below
                if command[0] == "export":
                    name, _, value = command[1].partition("=")
                    project.env[name] = value
                    continue
                assert command[0] == ".venv/bin/python", line
                project.run(sys.executable, *command[1:])


def test_the_tutorial_serves_a_new_model_from_a_shell_without_debug(project):
    for name in ("DEBUG", "SECRET_KEY"):
        project.env.pop(name, None)  # a newcomer's new shell sets neither; the tutorial says what to set
    follow(project, tutorial_blocks())
    assert (project.path / "protos" / "notes_pb2_grpc.py").exists()
    project.manage("check", "--fail-level", "WARNING")
    project.manage("seeddemo")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{port}"],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        result = project.run(sys.executable, "-c", f"import call_notes; call_notes.main('127.0.0.1:{port}')")
        assert re.match(r"notes: \[\('[0-9a-f-]{36}', 'Hello', False\)\] [0-9a-f-]{36}$", result.stdout.strip())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


USER_FIELD = '    display_name = models.CharField(max_length=50, blank=True, default="")\n'
USER_ANCHOR = "    date_joined = models.DateTimeField(default=timezone.now)\n"
USER_FIELDS = '"is_superuser", "date_joined"]'
POST_FIELD = '    summary = models.CharField(max_length=50, blank=True, default="")\n'
POST_ANCHOR = "    created = models.DateTimeField(auto_now_add=True, db_index=True)\n"
POST_FIELDS = '"description", "created"'


def regenerate(project: ProjectCopy) -> None:
    """The three commands a field change needs, then the CI check that they agree."""
    for command in (["makemigrations"], ["migrate"], ["generateproto"]):
        project.manage(*command)
    project.manage("check", "--fail-level", "WARNING")


def test_a_field_added_then_removed_follows_the_model_everywhere(project):
    """Model + serializer ``fields``, then the three commands: gRPC, REST and admin follow; no other file."""
    project.edit("posts/models.py", POST_ANCHOR, POST_FIELD + POST_ANCHOR)
    project.edit("posts/serializers.py", POST_FIELDS, '"description", "summary", "created"')
    project.edit("users/models.py", USER_ANCHOR, USER_FIELD + USER_ANCHOR)
    project.edit("users/serializers.py", USER_FIELDS, '"is_superuser", "date_joined", "display_name"]')
    regenerate(project)
    assert "added: ok" in project.run(sys.executable, "tests/support/evolved_post_client.py", "added").stdout

    project.edit("posts/models.py", POST_FIELD, "")
    project.edit("posts/serializers.py", '"description", "summary", "created"', POST_FIELDS)
    project.edit("users/models.py", USER_FIELD, "")
    project.edit("users/serializers.py", '"is_superuser", "date_joined", "display_name"]', USER_FIELDS)
    regenerate(project)
    assert "removed: ok" in project.run(sys.executable, "tests/support/evolved_post_client.py", "removed").stdout
