"""HTTP routes: the Django admin, the REST perimeter under /api/ and the page at /app/.

Every gRPC service is served over Connect and gRPC-Web in front of these routes (``demo/wsgi.py``).
"""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from posts.api import PostDetailView, PostListView
from users.api import LoginView, LogoutView, SignupView, TokenRefreshView
from web.views import app_page


def healthz(request: HttpRequest) -> HttpResponse:
    """Answer the web process's liveness and readiness probes; touches no database, so an outage restarts nothing."""
    return HttpResponse("ok", content_type="text/plain")


# The admin's "View site" link: the page at /app/ (the site has no page at /).
admin.site.site_url = "/app/"

urlpatterns = [
    path("healthz/", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("app/", app_page, name="app"),
    path("api/users/signup/", SignupView.as_view(), name="signup"),
    path("api/users/login/", LoginView.as_view(), name="login"),
    path("api/users/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("api/users/logout/", LogoutView.as_view(), name="logout"),
    path("api/posts/", PostListView.as_view(), name="post-list"),
    # Any string: a key that is not a UUID is a JSON 404 from the view, not an HTML one from the router.
    path("api/posts/<str:pk>/", PostDetailView.as_view(), name="post-detail"),
]
