"""Interceptors that only the tests enable, to observe a server from outside."""

from __future__ import annotations

import os

import grpc

from grpc_ext.server.limits import wrap_handler

PID_KEY = "x-server-pid"


class ServerPidInterceptor(grpc.aio.ServerInterceptor):
    """Send the serving process id as trailing metadata ``x-server-pid``."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        def wrap_unary(behavior):
            async def with_pid(request, context):
                context.set_trailing_metadata(((PID_KEY, str(os.getpid())),))
                return await behavior(request, context)

            return with_pid

        return wrap_handler(handler, wrap_unary, lambda behavior: behavior)
