#!/usr/bin/env python3
"""Set up a local virtualenv and run the project: ``python3 dev.py COMMAND`` (``COMMANDS``, at the end, lists them).

Needs only Python 3.11+ (and npm for ``buf`` and ``web``). Installs ``requirements-dev.txt``
into ``.venv`` (again only when the requirements change), then runs inside it;
``docs`` adds ``requirements-docs.txt`` the same way.
``buf`` installs the pinned buf CLI into ``.tools/`` the same way; ``web`` runs
``npm ci`` in ``web/`` (again only when its lockfile changes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
REQUIREMENTS = ["requirements.txt", "requirements-dev.txt"]
STAMP = VENV / ".requirements.sha256"
DOCS_REQUIREMENTS = ROOT / "requirements-docs.txt"
DOCS_STAMP = VENV / ".requirements-docs.sha256"
BUF_VERSION = "1.75.0"
ACCEPTED_BREAKS = ROOT / "buf.accepted-breaks.txt"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / ("buf.cmd" if os.name == "nt" else "buf")
WEB = ROOT / "web"
#: What ``python3 dev.py web`` writes in ``web/``: the TypeScript protoc-gen-es generates, and the page's bundle.
WEB_OUTPUTS = ("src/gen", "static/web/app.js")


def run(*args: str, **env: str) -> None:
    """Run a command in the project directory; stop with its exit code if it fails."""
    result = subprocess.run(args, cwd=ROOT, env={**os.environ, **env})
    if result.returncode:
        sys.exit(result.returncode)


def ensure_virtualenv() -> None:
    """Create ``.venv`` and install the requirements unless they are already installed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself runs on whatever python3 the user has
        sys.exit("Python 3.11 or newer is required.")
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PYTHON.exists():
        print("Creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing requirements into .venv ...", flush=True)
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "-r", "requirements-dev.txt")
    STAMP.write_text(digest)


def manage(*args: str) -> None:
    run(str(PYTHON), "manage.py", *args)


def development_mode() -> None:
    """Turn DEBUG on for this command and its children: the settings default it to off (production)."""
    os.environ.setdefault("DEBUG", "true")


def serve(address: str = "127.0.0.1:50051") -> None:
    """Migrate, load the demo data and serve gRPC (SQLite unless DATABASE_URL says otherwise), DEBUG on."""
    development_mode()
    manage("migrate", "--noinput", "-v", "0")
    manage("seeddemo")
    # The server replaces this process, so that Ctrl-C and SIGTERM reach it
    # directly and it drains as it should, instead of being killed by a parent.
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), "manage.py", "grpcrunserver", address])


def ensure_browser() -> None:
    """Install Debian's chromium for the admin's browser test, if missing and this is root with apt-get.

    Playwright drives it; Playwright's own browser download is never used.
    """
    if shutil.which("chromium"):
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("chromium is missing and needs root and apt-get to install: the browser test will skip.", flush=True)
        return
    print("Installing chromium (Debian package) for the admin's browser test ...", flush=True)
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(command, env=apt, stdout=subprocess.DEVNULL).returncode:
            print(f"{' '.join(command)} failed: the browser test will skip (and fail in CI).", flush=True)
            return


#: Debian packages of the local cluster (``cluster``, ``drill`` and their test), by a program each installs.
CLUSTER_PACKAGES = {
    "haproxy": "haproxy",
    "pgbouncer": "pgbouncer",
    "redis-server": "redis-server",
    "/usr/lib/postgresql/15/bin/postgres": "postgresql-15",
}


def ensure_cluster_packages() -> None:
    """Install the Debian packages the local cluster runs, if missing and this is root with apt-get."""
    missing = [package for program, package in CLUSTER_PACKAGES.items() if not shutil.which(program)]
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"{', '.join(missing)} missing; installing needs root and apt-get: the cluster cannot start.", flush=True)
        return
    print(f"Installing {', '.join(missing)} (Debian packages) for the local cluster ...", flush=True)
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        if subprocess.run(command, env=apt, stdout=subprocess.DEVNULL).returncode:
            print(f"{' '.join(command)} failed: the cluster cannot start.", flush=True)
            return


def cluster(*args: str) -> None:
    """Start the local cluster (three gRPC hosts behind HAProxy, web, PgBouncer, PostgreSQL, Redis) until Ctrl-C."""
    ensure_cluster_packages()
    os.chdir(ROOT)
    # Replaces this process, so that Ctrl-C and SIGTERM reach the cluster, which stops what it started.
    os.execv(str(PYTHON), [str(PYTHON), "-m", "cluster", "up", *args])


def drill(*names: str) -> None:
    """Run the drills (every one, or those named) against a new local cluster, under load; print their figures."""
    ensure_cluster_packages()
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), "-m", "cluster", "drill", *names])


def test(*pytest_args: str) -> None:
    """Check the generated protos, then run the test suite (DEBUG on, as in development)."""
    development_mode()
    ensure_browser()
    ensure_cluster_packages()
    manage("generateproto", "--check")
    run(str(PYTHON), "-m", "pytest", *pytest_args)


def ensure_buf() -> str:
    """Install the pinned buf CLI into ``.tools/`` unless it is already there; return its path."""
    if BUF.exists():
        installed = subprocess.run([str(BUF), "--version"], capture_output=True, text=True).stdout.strip()
        if installed == BUF_VERSION:
            return str(BUF)
    if shutil.which("npm") is None:
        sys.exit("buf is installed with npm, which was not found. Install Node.js, then run this again.")
    print(f"Installing buf {BUF_VERSION} into .tools ...", flush=True)
    package = f"@bufbuild/buf@{BUF_VERSION}"
    run("npm", "install", "--silent", "--prefix", ".tools", "--no-save", "--no-package-lock", package)
    return str(BUF)


def git(*args: str) -> str | None:
    """Return git's output, or None if the command fails."""
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def breaking_baseline() -> str | None:
    """Return the commit whose protos are the contract to keep, or None if there is none.

    ``BUF_BREAKING_AGAINST`` wins; on a branch, the commit it forked from main;
    on main, the previous commit. A first commit or a one-commit shallow clone
    has nothing to compare against.
    """
    if os.environ.get("BUF_BREAKING_AGAINST"):
        return os.environ["BUF_BREAKING_AGAINST"]
    head = git("rev-parse", "HEAD")
    for branch in ("origin/main", "main"):
        fork_point = git("merge-base", "HEAD", branch)
        if fork_point and fork_point != head:
            return fork_point
    return "HEAD~1" if git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}") else None


def buf() -> None:
    """Lint the protos, then check that they keep the wire contract of the baseline commit's protos."""
    buf_path = ensure_buf()
    run(buf_path, "lint")
    print("buf lint: protos pass.", flush=True)
    baseline = breaking_baseline()
    if baseline is None:
        print("buf breaking: skipped, no earlier commit to compare against.", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", baseline, "protos"], cwd=ROOT, capture_output=True)
        if archive.returncode:
            print(f"buf breaking: skipped, {baseline} has no protos/.", flush=True)
            return
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        # A buf.yaml of its own, so that buf never picks up a stray one above the scratch directory.
        Path(tmp, "buf.yaml").write_text("version: v2\nmodules:\n  - path: protos\n")
        result = subprocess.run(
            [buf_path, "breaking", "--against", tmp, "--error-format", "json"], cwd=ROOT, capture_output=True, text=True
        )
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if result.returncode and not findings:
        sys.exit(result.stderr.strip() or f"buf breaking failed with exit code {result.returncode}.")
    accepted = accepted_breaks()
    refused = [finding for finding in findings if (finding["type"], finding["message"]) not in accepted]
    for finding in findings:
        verdict = "refused" if finding in refused else f"accepted in {ACCEPTED_BREAKS.name}"
        print(f"{finding['path']}:{finding['start_line']}: {finding['message']} ({verdict})", flush=True)
    if refused:
        sys.exit(f"buf breaking: {len(refused)} change(s) break the wire contract of {baseline}.")
    print(f"buf breaking: protos keep the wire contract of {baseline}.", flush=True)


def accepted_breaks() -> set[tuple[str, ...]]:
    """Return the (rule, message) pairs of the deliberate breaks listed in ``buf.accepted-breaks.txt``."""
    if not ACCEPTED_BREAKS.exists():
        return set()
    lines = [line.strip() for line in ACCEPTED_BREAKS.read_text().splitlines()]
    return {tuple(line.split(" ", 1)) for line in lines if line and not line.startswith("#")}


def lint() -> None:
    """Check the code: ruff (lint and format), mypy (types), import-linter (no import cycle); see pyproject.toml."""
    development_mode()  # mypy's Django plugin loads the settings
    run(str(PYTHON), "-m", "ruff", "check", ".")
    run(str(PYTHON), "-m", "ruff", "format", "--check", ".")
    run(str(PYTHON), "-m", "mypy")
    run(str(PYTHON), "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-logo")


def lint_deploy() -> None:
    """Lint the Dockerfile with hadolint and validate every Kubernetes manifest against the API schemas."""
    bin_dir = PYTHON.parent
    run(str(bin_dir / "hadolint"), "Dockerfile")
    print("hadolint: Dockerfile passes.", flush=True)
    manifests = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    run(str(bin_dir / "kubernetes-validate"), "--strict", "--quiet", *manifests)
    print(f"kubernetes-validate: {len(manifests)} manifests pass.", flush=True)


def ensure_web_packages() -> None:
    """Install ``web/``'s npm packages exactly as its lockfile says (``npm ci``), unless they already are."""
    if shutil.which("npm") is None:
        sys.exit("The page is built with npm, which was not found. Install Node.js, then run this again.")
    stamp = WEB / "node_modules" / ".lock.sha256"
    digest = hashlib.sha256((WEB / "package-lock.json").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("Installing the page's npm packages into web/node_modules (npm ci) ...", flush=True)
    result = subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=WEB)
    if result.returncode:
        sys.exit(result.returncode)
    stamp.write_text(digest)


def web(*args: str) -> None:
    """Generate the page's TypeScript from the protos and bundle the page; ``--check``: fail if either is stale.

    Works on a scratch copy of ``web/``: ``buf generate`` (protoc-gen-es) on the
    protos and ``google/rpc/error_details.proto`` into ``src/gen``, then
    ``npm run build`` (type check, esbuild) into ``static/web/app.js``. Then the
    outputs replace the committed ones, or, with ``--check``, are compared to them.
    """
    check = "--check" in args
    ensure_web_packages()
    rpc_protos = subprocess.run(
        [str(PYTHON), "-c", "import google.rpc; print(list(google.rpc.__path__)[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        protos = Path(tmp, "protos")
        (protos / "google" / "rpc").mkdir(parents=True)
        for proto in (ROOT / "protos").glob("*.proto"):
            shutil.copy(proto, protos / proto.name)
        shutil.copy(Path(rpc_protos, "error_details.proto"), protos / "google" / "rpc" / "error_details.proto")
        work = Path(tmp, "web")
        shutil.copytree(WEB, work, ignore=shutil.ignore_patterns("node_modules", "gen", "static", "__pycache__"))
        (work / "node_modules").symlink_to(WEB / "node_modules")
        for command in (["npm", "run", "--silent", "generate", "--", str(protos)], ["npm", "run", "--silent", "build"]):
            result = subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL if check else None)
            if result.returncode:
                sys.exit(result.returncode)
        stale = [name for name in WEB_OUTPUTS if not same_tree(work / name, WEB / name)]
        if check:
            if stale:
                sys.exit(f"Out of date in web/: {', '.join(stale)}. Run `python3 dev.py web` and commit the result.")
            print("web: the generated TypeScript and the page's bundle are up to date.", flush=True)
            return
        for name in WEB_OUTPUTS:
            target = WEB / name
            if target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (work / name).is_dir() else shutil.copy)(work / name, target)
        print(f"web: wrote {', '.join(f'web/{name}' for name in WEB_OUTPUTS)}.", flush=True)


def ensure_docs_packages() -> None:
    """Install ``requirements-docs.txt`` (MkDocs, Material) into ``.venv`` unless it already is."""
    digest = hashlib.sha256(DOCS_REQUIREMENTS.read_bytes()).hexdigest()
    if DOCS_STAMP.exists() and DOCS_STAMP.read_text() == digest:
        return
    print("Installing the documentation's requirements into .venv ...", flush=True)
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "-r", DOCS_REQUIREMENTS.name)
    DOCS_STAMP.write_text(digest)


def docs(*args: str) -> None:
    """Build the documentation site (``docs/``, ``mkdocs.yml``) into ``var/site``; warnings are errors.

    ``--serve [ADDRESS]`` serves it instead, rebuilt on every change (default ``127.0.0.1:8001``).
    """
    ensure_docs_packages()
    quiet = {"NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor, printed on every build
    if args and args[0] == "--serve":
        address = args[1] if len(args) > 1 else "127.0.0.1:8001"
        run(str(PYTHON), "-m", "mkdocs", "serve", "--strict", "--dev-addr", address, **quiet)
        return
    # Not --quiet: it hides the warnings from the count that makes a strict build fail.
    run(str(PYTHON), "-m", "mkdocs", "build", "--strict", "--site-dir", "var/site", *args, **quiet)
    print("docs: built var/site (strict: no warning).", flush=True)


def same_tree(built: Path, committed: Path) -> bool:
    """Tell whether two files, or two directories file by file, have the same bytes."""
    if built.is_file() or committed.is_file():
        return built.is_file() and committed.is_file() and built.read_bytes() == committed.read_bytes()
    files = {path.relative_to(built) for path in built.rglob("*") if path.is_file()}
    if files != {path.relative_to(committed) for path in committed.rglob("*") if path.is_file()}:
        return False
    return all((built / name).read_bytes() == (committed / name).read_bytes() for name in files)


COMMANDS: dict[str, Callable[..., None]] = {
    "serve": serve,
    "test": test,
    "buf": buf,
    "lint": lint,
    "lint-deploy": lint_deploy,
    "web": web,
    "docs": docs,
    "cluster": cluster,
    "drill": drill,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    ensure_virtualenv()
    COMMANDS[sys.argv[1]](*sys.argv[2:])
