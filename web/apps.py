from django.apps import AppConfig


class WebConfig(AppConfig):
    """The page at /app/: a browser client of the Connect endpoints (README, "From a browser")."""

    name = "web"
