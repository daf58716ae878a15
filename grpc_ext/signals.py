"""The RPC life cycle, as Django's request cycle has it.

``grpc_request_started`` and ``grpc_request_finished`` are djangogrpcframework's
(connected to ``reset_queries`` and ``close_old_connections``, as Django
connects ``request_started``/``request_finished``); they are re-exported here
so that receivers import every RPC signal from one place.
``grpc_got_request_exception`` is Django's ``got_request_exception`` for RPCs:
sent, inside the ``except`` block, for an error that maps to no status and
so ends the RPC as INTERNAL.
``database_unavailable`` is sent by the error map (``grpc_ext.exceptions``) when a
call failed on a connection error; the health check's monitors
(``grpc_ext.server.database_availability``) receive it, so that the error map,
below every wing, needs nothing of the server's.
"""

from django.dispatch import Signal
from django_grpc_framework.signals import grpc_request_finished, grpc_request_started

__all__ = ["database_unavailable", "grpc_got_request_exception", "grpc_request_finished", "grpc_request_started"]

#: Sent with ``sender`` (the service class), ``request``, ``context`` and ``exception``.
grpc_got_request_exception = Signal()

#: Sent with ``sender`` (the error's class) and ``reason`` (the first line of its message).
database_unavailable = Signal()
