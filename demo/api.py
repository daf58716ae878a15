"""The REST API's error contract: DRF's JSON errors, for domain errors too."""

from __future__ import annotations

import logging
import math

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from grpc_ext.exceptions import (
    is_contention,
    is_database_unavailable,
    is_service_unreachable,
    report_database_unavailable,
    unreachable_service_error,
)

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    """Turn a domain service's Django ``ValidationError`` into DRF's 400, then answer as DRF does.

    A database or a cache (the rate limits' counters) that cannot be reached is a 503 with
    ``Retry-After``, as it is UNAVAILABLE over gRPC.
    """
    if is_database_unavailable(exc):
        if not is_contention(exc):
            report_database_unavailable(exc)
        return Response(
            {"detail": "The database is unavailable; retry later."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    if is_service_unreachable(exc):
        logger.warning("Service unavailable: %s: %s", type(exc).__name__, exc)
        error = unreachable_service_error(exc)
        return Response(
            {"detail": error.detail},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(max(1, math.ceil(error.retry_after or 1)))},
        )
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)
    return drf_exception_handler(exc, context)
