"""Delete remembered request ids older than ``IDEMPOTENCY_TTL`` (as ``clearsessions`` does for sessions)."""

from django.core.management.base import BaseCommand

from grpc_ext.services.idempotency import clear_expired
from grpc_ext.settings import grpc_ext_settings


class Command(BaseCommand):
    help = (
        "Delete the responses remembered for request_id / Idempotency-Key retries once they are older than "
        "GRPC_FRAMEWORK['IDEMPOTENCY_TTL'] seconds. Run it periodically (cron)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--ttl", type=float, help="Seconds to keep records (default: IDEMPOTENCY_TTL).")

    def handle(self, *args, **options):
        ttl = options["ttl"] if options["ttl"] is not None else grpc_ext_settings.IDEMPOTENCY_TTL
        deleted = clear_expired(ttl)
        self.stdout.write(f"Deleted {deleted} idempotency record(s) older than {ttl:g} seconds.")
