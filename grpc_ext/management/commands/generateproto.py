"""Write every configured .proto from its serializer and compile the Python stubs.

Each .proto on disk is read first, so that every field keeps its number and
removed fields stay reserved (see ``grpc_ext.contract.protogen``).
"""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from grpc_ext.contract.discovery import project_contracts
from grpc_ext.contract.protogen import SECRET_FIELD_NAME, ContractError, ProtoContract, compile_protos
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.serializers import ModelProtoSerializer


class Command(BaseCommand):
    help = (
        "Regenerate the protos of the services found in the installed apps' servicers.py from their "
        "serializers and compile the Python stubs in place. Field numbers are read from the .proto on disk "
        "and kept; removed fields are reserved. --model/--fields/--file generate one proto "
        "for a model, as djangogrpcframework's command did."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--model", help="Dotted path to a model class, for a one-off proto.")
        parser.add_argument("--fields", help="Comma-separated fields to include (with --model).")
        parser.add_argument("--file", help="Where to write the one-off proto (default: standard output).")
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; print a diff and exit 1 if the committed protos or stubs are out of date.",
        )

    def handle(self, *args, **options):
        if options["model"]:
            self.generate_one_off(options["model"], options["fields"], options["file"])
            return
        contracts = self.get_contracts()
        if not contracts:
            raise CommandError("No model service found in any installed app's servicers.py.")
        out_dir = Path(settings.BASE_DIR) / grpc_ext_settings.PROTO_DIR
        generated = self.generate(contracts, out_dir)
        if options["check"]:
            self.check_up_to_date(generated, out_dir)
            return
        for name, text in generated.items():
            (out_dir / name).write_text(text)
            self.stdout.write(f"Wrote {grpc_ext_settings.PROTO_DIR}/{name}")
        # Count what was written: the hand-written STATIC_PROTOS are compiled and written too.
        protos = sum(name.endswith(".proto") for name in generated)
        self.stdout.write(self.style.SUCCESS(f"Wrote {len(generated)} files: {protos} proto(s) and their stubs."))

    def generate(self, contracts: list[ProtoContract], out_dir: Path) -> dict[str, str]:
        """Render and compile every contract in a scratch directory; return file name -> text."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            scratch = root / out_dir.name
            scratch.mkdir()
            proto_files = []
            for contract in contracts:
                path = scratch / f"{contract.package}.proto"
                path.write_text(self.render(contract, out_dir / path.name))
                proto_files.append(path)
            proto_files.extend(self.copy_static_protos(out_dir, scratch))
            try:
                compile_protos(proto_files, root, scratch)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc
            return {path.name: path.read_text() for path in sorted(scratch.iterdir())}

    def render(self, contract: ProtoContract, existing: Path | None) -> str:
        """Render a contract, keeping the field numbers of the file already at ``existing``."""
        previous = existing.read_text() if existing is not None and existing.exists() else None
        try:
            return contract.render(previous)
        except (ContractError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc

    def copy_static_protos(self, out_dir: Path, scratch: Path) -> list[Path]:
        """Copy the hand-written protos of ``GRPC_FRAMEWORK['STATIC_PROTOS']`` to be compiled too."""
        copies = []
        for name in grpc_ext_settings.STATIC_PROTOS:
            source = out_dir / name
            if not source.is_file():
                raise CommandError(f"STATIC_PROTOS names {name}, but {source} does not exist.")
            copy = scratch / name
            copy.write_text(source.read_text())
            copies.append(copy)
        return copies

    def check_up_to_date(self, generated: dict[str, str], out_dir: Path) -> None:
        """Print a unified diff of every stale file and fail if there is one."""
        stale = []
        for name, text in generated.items():
            path = out_dir / name
            committed = path.read_text() if path.exists() else ""
            if committed != text:
                stale.append(name)
                label = f"{grpc_ext_settings.PROTO_DIR}/{name}"
                diff = difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"{label} (committed)",
                    tofile=f"{label} (generated)",
                )
                self.stdout.write("".join(diff), ending="")
        if stale:
            raise CommandError(
                f"{len(stale)} generated file(s) are out of date: {', '.join(stale)}. "
                "Run `.venv/bin/python manage.py generateproto` and commit the result."
            )
        self.stdout.write(self.style.SUCCESS("Protos and stubs are up to date."))

    def get_contracts(self) -> list[ProtoContract]:
        """Return one contract per serializer of a discovered service whose message lives in ``PROTO_PACKAGE``."""
        try:
            return project_contracts()
        except ContractError as exc:
            raise CommandError(str(exc)) from exc

    def one_off_serializer(self, model, fields: list[str] | str) -> type[ModelProtoSerializer]:
        """Return a serializer of ``fields``, where a field named like a secret is write-only."""
        names = fields if isinstance(fields, list) else [field.name for field in model._meta.concrete_fields]
        secret = {name: {"write_only": True} for name in names if SECRET_FIELD_NAME.search(name)}
        meta = type("Meta", (), {"model": model, "fields": fields, "extra_kwargs": secret, "proto_class": None})
        return type(f"{model.__name__}ProtoSerializer", (ModelProtoSerializer,), {"Meta": meta})

    def generate_one_off(self, model_path: str, fields: str | None, file: str | None) -> None:
        try:
            model = import_string(model_path)
        except ImportError as exc:
            raise CommandError(f"Cannot import model {model_path!r}: {exc}") from exc
        package = Path(file).stem if file else model.__name__.lower()
        serializer_class = self.one_off_serializer(model, fields.split(",") if fields else "__all__")
        contract = ProtoContract(package=package, serializer_class=serializer_class)
        proto = self.render(contract, Path(file) if file else None)
        if file:
            Path(file).write_text(proto)
            self.stdout.write(f"Wrote {file}")
        else:
            self.stdout.write(proto, ending="")
