"""The web process's faces of the services: Connect and gRPC-Web calls on the same request cycle as gRPC's
(``connect``), and the REST views' idempotent creates and etags (``rest``).
"""
