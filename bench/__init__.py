"""The benchmark: the project's gRPC API against Django REST framework and a plain-grpcio floor.

``python manage.py benchmark`` runs it; see that command's help and the README.
"""
