from django.apps import AppConfig


class WebConfig(AppConfig):
    """The page at /app/: a browser client of the Connect endpoints (docs/guides/browser.md)."""

    name = "web"
