"""What the tests stand on, apart from the tests: their settings (``settings``; ``server_settings`` and
``server_hooks`` for the servers they start as subprocesses, with ``interceptors``), rows built through the domain
services (``factories``), assertions and ways to call (``helpers``), misbehaving peers (``rawh2``, ``tcp_proxy``),
a throwaway copy of the project (``project_copy``, ``evolved_post_client``) and ``typesapp``, a model with every
field type the proto generator maps.
"""
