"""Routes of the DRF baseline server."""

from django.urls import path

from bench.drf import PostListCreate, PostRetrieve

urlpatterns = [
    path("bench/posts/", PostListCreate.as_view()),
    path("bench/posts/<uuid:pk>/", PostRetrieve.as_view()),
]
