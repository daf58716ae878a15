"""The benchmark: the project's gRPC API against Django REST framework and a plain-grpcio floor.

``.venv/bin/python manage.py benchmark`` runs it; see that command's help and docs/benchmark.md.
"""
