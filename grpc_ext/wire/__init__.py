"""Messages from and to Django: the serializers (``serializers``) and their codec (``codec``), the one interface
the services encode and decode through. The codec's parts: compiled message builders (``builders``: instances and
rows to messages), rows read raw from the database (``rows``), request readers (``readers``: requests to the dict
DRF validates). Beside them: a batch's item validation (``item_validation``), bulk inserts (``bulk``), related keys
(``relations``) and prepared Retrieve lookups (``lookups``). Needs nothing of the services or the server.
"""
