"""The container image and the Kubernetes manifests run the production commands the docs give, and lint clean.

The commands and variables are read from the production guide and the settings reference in docs/.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
K8S = BASE_DIR / "deploy" / "k8s"
BIN = Path(sys.executable).parent
# The image keeps the project in /app: /app/.venv/bin/python is the docs' .venv/bin/python.
IMAGE_ROOT = "/app/"


def readme_commands() -> dict[str, list[str]]:
    """Return the commands of the production guide's "Process types and commands" block, by what they run."""
    guide = (BASE_DIR / "docs" / "guides" / "production.md").read_text()
    section = guide.split("## Process types and commands", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith(".venv/bin/")]
    by_name = {}
    for command in commands:
        name = command[2]  # .venv/bin/python manage.py <command>, .venv/bin/python -m granian
        by_name[name] = command
    assert set(by_name) == {"grpcrunserver", "granian", "migrate", "collectstatic"}, by_name
    return by_name


def in_project(command: list[str]) -> list[str]:
    """A command run in the image, with its paths as the docs write them (relative to the project)."""
    return [part.removeprefix(IMAGE_ROOT) for part in command]


def manifests() -> list[dict]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def containers(kind: str, name: str) -> list[dict]:
    (resource,) = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return resource["spec"]["template"]["spec"]["containers"]


def test_the_image_serves_grpc_with_the_readme_command_and_collects_static_at_build_time():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    commands = readme_commands()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert in_project(json.loads(cmd)) == commands["grpcrunserver"]
    runs = [shlex.split(run) for run in re.findall(r"^RUN (.*)$", dockerfile.replace("\\\n", " "), re.MULTILINE)]
    collectstatic = commands["collectstatic"]
    assert any(in_project(run[-len(collectstatic) :]) == collectstatic for run in runs), runs
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE), "the image must not run as root"
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2, "a multi-stage build"


def test_the_manifests_run_the_readme_commands():
    commands = readme_commands()
    (grpc,) = containers("Deployment", "grpcdemo-grpc")
    (web,) = containers("Deployment", "grpcdemo-web")
    (migrate,) = containers("Job", "grpcdemo-migrate")
    assert in_project(grpc["command"]) == commands["grpcrunserver"]
    assert in_project(web["command"]) == commands["granian"]
    assert in_project(migrate["command"]) == commands["migrate"]
    for container in (grpc, web, migrate):
        assert container["workingDir"] == IMAGE_ROOT.rstrip("/")
        refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"configMapRef": "grpcdemo-config", "secretRef": "grpcdemo-secrets"}


def test_the_grpc_deployment_probes_health_and_covers_the_drain():
    (deployment,) = [
        doc for doc in manifests() if doc["metadata"]["name"] == "grpcdemo-grpc" and doc["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (grpc,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert grpc[probe]["grpc"]["port"] == 50051
    assert grpc["livenessProbe"]["grpc"]["service"] == "liveness"
    (config,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    pre_stop = int(grpc["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config["data"]["GRPC_SHUTDOWN_DRAIN_DELAY"]) + float(config["data"]["GRPC_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    assert grpc["resources"]["requests"] and grpc["resources"]["limits"]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests()}
    for name in ("grpcdemo-grpc", "grpcdemo-web"):
        assert {("Service", name), ("PodDisruptionBudget", name), ("HorizontalPodAutoscaler", name)} <= kinds


def test_every_production_variable_of_the_configmap_is_in_the_example_environment():
    example = (BASE_DIR / "deploy" / "production.env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    (config,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    (secret,) = [doc for doc in manifests() if doc["kind"] == "Secret"]
    assert set(config["data"]) | set(secret["stringData"]) == names


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "hadolint"), "Dockerfile"],
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", *sorted(str(p) for p in K8S.glob("*.yaml"))],
    ],
    ids=["hadolint", "kubernetes-validate"],
)
def test_the_dockerfile_and_manifests_lint_clean(command):
    result = subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_settings_reference_names_every_variable_the_settings_read():
    settings_source = (BASE_DIR / "demo" / "settings.py").read_text()
    read = set(re.findall(r'(?:env_bool|env_int|env_float|env_list|os\.environ\.get)\(\s*"(\w+)"', settings_source))
    reference = (BASE_DIR / "docs" / "reference" / "settings.md").read_text()
    tables = reference.split("## Environment variables", 1)[1]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", tables))
    assert read - documented == set(), "variables the settings reference does not list"
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", tables, re.MULTILINE))
    tracing = (BASE_DIR / "grpc_ext" / "server" / "tracing.py").read_text()
    read_elsewhere = {name for name in listed - read if name in tracing}
    assert listed - read - read_elsewhere == set(), "variables the settings reference lists that nothing reads"
    example = (BASE_DIR / "deploy" / "production.env.example").read_text()
    assert {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")} <= read


def test_the_production_environment_copy_has_one_path_and_git_and_the_image_ignore_it():
    """The copy holds the secret key: the example, the guide and the ignore files agree on where it is."""
    example = (BASE_DIR / "deploy" / "production.env.example").read_text()
    guide = (BASE_DIR / "docs" / "guides" / "production.md").read_text()
    assert "Copy to deploy/production.env" in example and "set -a; . deploy/production.env; set +a" in example
    assert "cp deploy/production.env.example deploy/production.env" in guide
    assert "set -a; . deploy/production.env; set +a" in guide
    assert "deploy/*.env" in (BASE_DIR / ".dockerignore").read_text().splitlines()
    if (BASE_DIR / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/production.env"], cwd=BASE_DIR)
        assert ignored.returncode == 0, "git would commit deploy/production.env"
