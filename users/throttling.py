"""Rate limits on the unauthenticated entry points, per client address, for REST and gRPC."""

from grpc_ext.throttling import ClientRateThrottle


class SignupThrottle(ClientRateThrottle):
    scope = "signup"


class LoginThrottle(ClientRateThrottle):
    scope = "login"
