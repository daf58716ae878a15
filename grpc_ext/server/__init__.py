"""The transport and a call's runtime: the gRPC server on grpc.aio or the native transport, built, run and drained
(``transport``); the Django half of a call in the thread pool (``calls``); request timeout, drain gate and the
observing interceptors' base (``limits``); lenient request decoding (``decoding``); health, database availability,
reflection, metrics, tracing and the access log; the fail-fast Redis cache. Imports nothing of the wings above it.
"""
