"""The API layer: services and their request cycle (``generics``), the handlers (``mixins``), BatchCreate, retries
and etags (``writes``, ``idempotency``), paging (``pagination``), filters, authentication, permissions and throttling.
Built on ``server`` (a call's runtime) and ``wire`` (messages from and to Django).
"""
