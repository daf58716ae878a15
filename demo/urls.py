"""HTTP routes: the Django admin (the REST perimeter mounts under /api/)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
