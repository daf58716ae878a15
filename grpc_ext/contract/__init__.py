"""The proto contract: the ``.proto`` generator that reads the serializers (``protogen``), the services found in the
installed apps with their contracts (``discovery``) and the system checks that hold them together (``checks``).
"""
