"""The project's layer over djangogrpcframework 0.2.1.

The framework's own pieces break on Django 5.2, protobuf 6+ and grpcio 1.7x;
each class here subclasses, overrides or replaces one of them, and adds what a
production gRPC API needs (paging, field masks, one error contract, a server
with a clean shutdown, a proto generator that reads the serializers).
"""
