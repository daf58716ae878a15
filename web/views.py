"""The page at /app/: one HTML document; everything else is the bundle (static/web/app.js) calling Connect."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def app_page(request: HttpRequest) -> HttpResponse:
    """Return the page; it signs in and works on posts through the Connect endpoints, not through Django views."""
    return render(request, "web/index.html")
