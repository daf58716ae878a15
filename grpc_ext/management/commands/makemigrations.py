"""Django's ``makemigrations``, with a contract not regenerated yet a warning (see ``grpc_ext.contract.checks``).

A model changes first, then its migration, then ``generateproto``: until that
last step the proto is stale by design, and must not stop the schema commands.
"""

from django.core.management.commands.makemigrations import Command as DjangoCommand

from grpc_ext.contract.checks import RelaxedContractChecks


class Command(RelaxedContractChecks, DjangoCommand):
    pass
