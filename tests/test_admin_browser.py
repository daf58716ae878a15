"""The admin in a real browser, served as in production: DEBUG off, granian, static files from WhiteNoise.

Follows the production guide's steps (migrate, collectstatic, createsuperuser,
granian) on a scratch SQLite database, then drives Debian's chromium with
Playwright: log in, add and edit a user, add a post whose owner is picked with
the autocomplete, edit it. Screenshots go to ``var/screenshots/admin/``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import running_web

BASE_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = BASE_DIR / "var" / "screenshots" / "admin"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "an-admin-passphrase-42"
# Debian's chromium, headless and quiet: no sandbox (root in CI), no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by requirements-dev.txt")
if not Path(CHROMIUM).exists():
    # dev.py test installs Debian's chromium when it runs as root with apt-get; CI must have it.
    message = "chromium is not installed and could not be (needs root and apt-get): the admin's browser test"
    if os.environ.get("CI"):
        pytest.fail(f"{message} cannot run in CI", pytrace=False)
    pytest.skip(f"{message} is skipped", allow_module_level=True)


@pytest.fixture(scope="module")
def production_site(tmp_path_factory):
    """Run the web process as the production guide does; yield its URL and database file."""
    root = tmp_path_factory.mktemp("production-site")
    database = root / "db.sqlite3"
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}
    env = {
        **{name: value for name, value in os.environ.items() if name in keep},
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DEBUG": "false",
        "SECRET_KEY": "browser-test-secret-" + "s" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{database}",
        "CACHE_LOCATION": str(root / "cache"),
        "STATIC_ROOT": str(root / "static"),
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    for command in (
        ["manage.py", "migrate", "--noinput", "-v", "0"],
        ["manage.py", "collectstatic", "--noinput", "-v", "0"],
        ["manage.py", "createsuperuser", "--noinput", "--email", ADMIN_EMAIL],
        ["manage.py", "seeddemo"],
    ):
        result = subprocess.run(
            [sys.executable, *command], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    with running_web(env, "--blocking-threads", "4", "--access-log") as (url, _):
        yield url, database


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def rows(database: Path, query: str, *params) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(query, params).fetchall()


def test_admin_in_chromium_logs_in_adds_and_edits_users_and_posts(production_site, browser):
    url, database = production_site
    page = browser.new_page()
    static_responses = []
    page.on("response", lambda response: "/static/" in response.url and static_responses.append(response))

    # Log in: the page is styled, from hashed, compressed, long-cached static files.
    page.goto(f"{url}/admin/")
    page.fill("#id_username", ADMIN_EMAIL)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    screenshot(page, "01-logged-in")
    stylesheets = [response for response in static_responses if response.url.endswith(".css")]
    assert stylesheets and all(response.status == 200 for response in stylesheets)
    base_css = next(response for response in stylesheets if "/admin/css/base." in response.url)
    assert base_css.url.rsplit("/", 1)[1].count(".") == 2, "no content hash in the name: " + base_css.url
    assert "max-age=315360000" in base_css.headers["cache-control"]
    background = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), "the admin is unstyled"

    # Add a user, then edit it.
    page.goto(f"{url}/admin/users/user/add/")
    page.fill("#id_email", "Browser.User@Example.com")
    page.fill("#id_password1", "a-browser-passphrase-7")
    page.fill("#id_password2", "a-browser-passphrase-7")
    screenshot(page, "02-user-add")
    page.click("input[name=_save]")
    page.wait_for_selector("#id_is_verified")
    page.check("#id_is_verified")
    screenshot(page, "03-user-change")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    screenshot(page, "04-user-saved")
    assert rows(
        database, "SELECT is_verified, is_staff FROM users_user WHERE email = ?", "browser.user@example.com"
    ) == [(1, 0)]

    # Add a post, its owner found by the autocomplete, then edit it.
    page.goto(f"{url}/admin/posts/post/add/")
    page.click(".field-owner .select2-selection")
    page.fill(".select2-search__field", "browser.user")
    # The search went to the server: only the matching user is offered.
    options = page.locator(".select2-results__option")
    playwright_api.expect(options).to_have_text(["browser.user@example.com"])
    screenshot(page, "05-post-owner-autocomplete")
    options.first.click()
    page.fill("#id_title", "Written in a browser")
    page.fill("#id_description", "Through the admin's autocomplete.")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    page.fill("#id_title", "Edited in a browser")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    screenshot(page, "06-post-saved")
    saved = rows(
        database,
        "SELECT p.title, u.email FROM posts_post p JOIN users_user u ON u.id = p.owner_id WHERE p.title LIKE ?",
        "% in a browser",
    )
    assert saved == [("Edited in a browser", "browser.user@example.com")]
    page.close()
