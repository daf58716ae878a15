"""The page at /app/ in a real browser, served as in production (granian, DEBUG off, WhiteNoise).

Debian's chromium, driven by Playwright, signs in as a demo user through the
Connect endpoints, lists the user's posts, creates one, is shown a field
violation next to its field, renames a post that changed since the page read
it (the conflict is shown and nothing is overwritten), renames and deletes
it. The rows are checked in the database. Screenshots go to
``var/screenshots/web/``.
"""

from __future__ import annotations

import sqlite3

from tests.test_admin_browser import BASE_DIR, browser, playwright_api, production_site, rows

__all__ = ["browser", "production_site"]  # the fixtures of the admin's browser test, served the same way

SCREENSHOTS = BASE_DIR / "var" / "screenshots" / "web"
EMAIL, PASSWORD = "ada@example.com", "demo-password-123"  # made by seeddemo


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def post_item(page, title: str):
    return page.locator("#posts li").filter(has=page.locator(".title", has_text=title))


def test_page_signs_in_lists_creates_edits_with_a_stale_etag_and_deletes(production_site, browser):
    url, database = production_site
    expect = playwright_api.expect
    page = browser.new_page()
    connect_calls: list = []
    page.on("response", lambda response: "Controller/" in response.url and connect_calls.append(response))
    bundles: list = []
    page.on("response", lambda response: "/static/web/app." in response.url and bundles.append(response))

    # Sign in: the form posts nowhere; the page calls AuthController/Login over Connect.
    page.goto(f"{url}/app/")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("#signin-form button[type=submit]")
    titles = page.locator("#posts .title")
    expect(titles).to_have_count(2)
    assert sorted(titles.all_text_contents()) == ["Notes on the analytical engine", "On Bernoulli numbers"]
    screenshot(page, "01-signed-in")
    # The bundle came from WhiteNoise under its hashed name, with far-future caching; the calls are Connect's.
    (bundle,) = bundles
    assert bundle.status == 200 and bundle.url.rsplit("/", 1)[1].count(".") == 2, bundle.url
    assert "max-age=315360000" in bundle.headers["cache-control"]
    assert {call.url.removeprefix(url) for call in connect_calls} >= {
        "/auth.AuthController/Login",
        "/posts.PostController/List",
    }
    assert all(call.headers["content-type"] == "application/json" for call in connect_calls)

    # A field violation is shown next to its field; nothing is written.
    page.click("#create-form button[type=submit]")
    expect(page.locator('#create-form .error[data-field="title"]')).to_have_text("This field may not be blank.")
    screenshot(page, "02-field-violation")

    # Create.
    page.fill("#create-form input[name=title]", "Written in the page")
    page.fill("#create-form textarea[name=description]", "Through Connect.")
    page.click("#create-form button[type=submit]")
    expect(post_item(page, "Written in the page")).to_have_count(1)
    expect(page.locator('#create-form .error[data-field="title"]')).to_have_text("")
    created = rows(
        database,
        "SELECT p.description, u.email FROM posts_post p JOIN users_user u ON u.id = p.owner_id WHERE p.title = ?",
        "Written in the page",
    )
    assert created == [("Through Connect.", EMAIL)]
    screenshot(page, "03-created")

    # Someone else renames it after the page read it: the page's etag is stale, the rename is refused and shown.
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE posts_post SET title = ?, etag = ? WHERE title = ?",
            ("Changed elsewhere", "0123456789abcdef", "Written in the page"),
        )
    item = post_item(page, "Written in the page")
    item.locator("input[name=title]").fill("Renamed in the page")
    item.locator("button[type=submit]").click()
    expect(item.locator(".conflict")).to_contain_text("Conflict")
    screenshot(page, "04-stale-etag-conflict")
    assert rows(database, "SELECT title FROM posts_post WHERE etag = ?", "0123456789abcdef") == [("Changed elsewhere",)]

    # After a reload the page has the current etag: the rename goes through, then the post is deleted.
    page.reload()
    item = post_item(page, "Changed elsewhere")
    expect(item).to_have_count(1)
    item.locator("input[name=title]").fill("Renamed in the page")
    item.locator("button[type=submit]").click()
    renamed = post_item(page, "Renamed in the page")
    expect(renamed).to_have_count(1)
    assert rows(database, "SELECT COUNT(*) FROM posts_post WHERE title = ?", "Renamed in the page") == [(1,)]
    renamed.locator("button.delete").click()
    expect(post_item(page, "Renamed in the page")).to_have_count(0)
    expect(titles).to_have_count(2)
    screenshot(page, "05-deleted")
    assert rows(
        database, "SELECT COUNT(*) FROM posts_post WHERE title IN (?, ?)", "Renamed in the page", "Changed elsewhere"
    ) == [(0,)]
    page.close()
