"""Write every configured .proto from its serializer and compile the Python stubs."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from grpc_ext.protogen import ProtoContract, compile_protos
from grpc_ext.serializers import ModelProtoSerializer
from grpc_ext.settings import grpc_ext_settings


class Command(BaseCommand):
    help = (
        "Regenerate the protos listed in GRPC_FRAMEWORK['PROTOS'] from their serializers "
        "and compile the Python stubs in place. --model/--fields/--file generate one proto "
        "for a model, as djangogrpcframework's command did."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--model", help="Dotted path to a model class, for a one-off proto.")
        parser.add_argument("--fields", help="Comma-separated fields to include (with --model).")
        parser.add_argument("--file", help="Where to write the one-off proto (default: standard output).")

    def handle(self, *args, **options):
        if options["model"]:
            self.generate_one_off(options["model"], options["fields"], options["file"])
            return
        root = Path(settings.BASE_DIR)
        out_dir = root / grpc_ext_settings.PROTO_DIR
        written = []
        for contract in self.get_contracts():
            path = out_dir / f"{contract.package}.proto"
            path.write_text(contract.render())
            written.append(path)
            self.stdout.write(f"Wrote {path.relative_to(root)}")
        if not written:
            raise CommandError("No protos are configured: set GRPC_FRAMEWORK['PROTOS'].")
        try:
            compile_protos(written, root, out_dir)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Compiled {len(written)} proto(s) into {out_dir.relative_to(root)}/"))

    def get_contracts(self) -> list[ProtoContract]:
        """Return one contract per entry of ``GRPC_FRAMEWORK['PROTOS']``."""
        return [
            ProtoContract(package=package, serializer_class=import_string(path))
            for package, path in grpc_ext_settings.PROTOS.items()
        ]

    def generate_one_off(self, model_path: str, fields: str | None, file: str | None) -> None:
        try:
            model = import_string(model_path)
        except ImportError as exc:
            raise CommandError(f"Cannot import model {model_path!r}: {exc}") from exc
        package = Path(file).stem if file else model.__name__.lower()
        meta = type("Meta", (), {"model": model, "fields": fields.split(",") if fields else "__all__", "proto_class": None})
        serializer_class = type(f"{model.__name__}ProtoSerializer", (ModelProtoSerializer,), {"Meta": meta})
        proto = ProtoContract(package=package, serializer_class=serializer_class).render()
        if file:
            Path(file).write_text(proto)
            self.stdout.write(f"Wrote {file}")
        else:
            self.stdout.write(proto, ending="")
