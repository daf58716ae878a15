"""The ``ROOT_HANDLERS_HOOK`` of the servers the tests start: the project's services, with test knobs."""

from __future__ import annotations

import os

from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from grpc_ext.contract.discovery import add_services as add_project_services
from posts.servicers import PostService


def add_services(server) -> None:
    """Add the project's services; with ``TEST_SLOW_STREAM_SECONDS`` set, each query of a Stream batch takes that long.

    The delay is a condition PostgreSQL evaluates once per statement, so every
    batch's keyset query runs that long on the server, as a large export would.
    """
    seconds = float(os.environ.get("TEST_SLOW_STREAM_SECONDS") or 0)
    if seconds:
        get_queryset = PostService.get_queryset

        def slow_stream_queryset(service):
            queryset = get_queryset(service)
            if service.action != "Stream":
                return queryset
            slow = RawSQL("SELECT true FROM pg_sleep(%s)", [seconds], BooleanField())
            return queryset.alias(slow=slow).filter(slow=True)

        PostService.get_queryset = slow_stream_queryset  # type: ignore[method-assign]
    add_project_services(server)
