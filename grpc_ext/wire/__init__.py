"""Messages from and to Django: the serializers, their codec (``codec``: instances and rows to messages, requests to
data) and its parts (``fastpath``, ``rows``, ``protojson``), related keys (``relations``), prepared Retrieve lookups
(``lookups``) and bulk inserts (``bulk``). Needs nothing of the services or the server.
"""
