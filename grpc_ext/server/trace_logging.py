"""Trace ids in log records: the ``LOGGING`` filter of the console handler.

A module of its own, importing only ``logging`` and OpenTelemetry's API, since
the logging configuration loads it before Django's apps are ready.
"""

from __future__ import annotations

import logging

from opentelemetry import trace


class TraceContextFilter(logging.Filter):
    """Give every record ``trace_context``: `` trace_id=<32 hex> span_id=<16 hex>`` within a traced call, else ``""``.

    A handler's filter (``LOGGING``), so that a format can always name
    ``%(trace_context)s``: with tracing off, or outside a call, it is empty.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            trace_id, span_id = format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
            record.__dict__.update(
                trace_id=trace_id, span_id=span_id, trace_context=f" trace_id={trace_id} span_id={span_id}"
            )
        else:
            record.trace_context = ""
        return True
