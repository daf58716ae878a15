"""Draw one call's trace, as a tracing backend receives it: ``python -m bench.trace_picture [OUTPUT_DIR]``.

On a scratch SQLite database: start ``grpcrunserver`` exporting over OTLP/gRPC to
a collector in this process (``bench.collector``), make one Create with the
Python client (whose CLIENT span goes to the same collector), stop the server
so that it flushes, then draw the trace's spans on a time line with matplotlib.
Writes ``trace.json`` (the spans as exported) and ``trace.png`` (default
directory: ``bench/results``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
CLIENT_SERVICE = "python-client"
SERVER_SERVICE = "posts-api"


def main(output: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="trace-picture-"))
    database_url = f"sqlite:///{directory / 'db.sqlite3'}"
    os.environ.update({"DJANGO_SETTINGS_MODULE": "demo.settings", "DEBUG": "true", "DATABASE_URL": database_url})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from bench.collector import SpanCollector
    from bench.processes import free_port, wait_for_port
    from grpc_ext.testing import access_token
    from users.models import User

    user = User.objects.create_user(email="ada@example.com", password="demo-password-123", is_verified=True)
    with SpanCollector(keep=True) as collector:
        port = free_port()
        env = {
            **os.environ,
            "CACHE_LOCATION": str(directory / "cache"),
            **collector.env("grpc"),
            "OTEL_SERVICE_NAME": SERVER_SERVICE,
            "OTEL_TRACES_SAMPLER": "always_on",
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{port}"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, [server])
            trace_id = one_call(
                f"127.0.0.1:{port}", access_token(user), collector.env("grpc")["OTEL_EXPORTER_OTLP_ENDPOINT"]
            )
        finally:
            server.send_signal(signal.SIGTERM)  # drains, then flushes its spans
            server.wait(timeout=30)
        spans = [span for span in collector.spans if span["trace_id"] == trace_id]
    output.mkdir(parents=True, exist_ok=True)
    (output / "trace.json").write_text(json.dumps(spans, indent=2, sort_keys=True) + "\n")
    draw(spans, output / "trace.png")
    print(f"Wrote {output / 'trace.json'} and {output / 'trace.png'} ({len(spans)} spans)")


def one_call(address: str, token: str, endpoint: str) -> str:
    """Make one Create with a client that exports its own span to ``endpoint``; return the trace id."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from grpc_ext.client import Client

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with Client(address, token=token, tracer_provider=provider) as client:
        client.posts.Create(title="Traced", description="One call, from the client to SQLite")
    provider.shutdown()
    (span,) = memory.get_finished_spans()
    return format(span.context.trace_id, "032x")


def ordered(spans: list[dict]) -> list[tuple[int, dict]]:
    """Return ``(depth, span)`` depth first, children by start time."""
    children: dict[str, list[dict]] = {}
    ids = {span["span_id"] for span in spans}
    for span in spans:
        children.setdefault(span["parent_span_id"] if span["parent_span_id"] in ids else "", []).append(span)
    out: list[tuple[int, dict]] = []

    def visit(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda item: item["start_ns"]):
            out.append((depth, span))
            visit(span["span_id"], depth + 1)

    visit("", 0)
    return out


def draw(spans: list[dict], path: Path) -> None:
    """Draw the spans as bars on a time line (ms from the first span's start), one row each, nested by parent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ordered(spans)
    start = min(span["start_ns"] for span in spans)
    colours = {CLIENT_SERVICE: "#7570b3", SERVER_SERVICE: "#2b7bba"}
    figure, axis = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.4))
    for index, (depth, span) in enumerate(rows):
        left = (span["start_ns"] - start) / 1e6
        width = max((span["end_ns"] - span["start_ns"]) / 1e6, 0.01)
        is_sql = "db.system" in span["attributes"]
        colour = "#1b9e77" if is_sql else colours.get(span["service"], "#999999")
        axis.barh(index, width, left=left, height=0.6, color=colour)
        label = f"{'  ' * depth}{span['name']}  ({width:.2f} ms)"
        if span["attributes"].get("rpc.grpc.status_code") is not None:
            label += f"  status {span['attributes']['rpc.grpc.status_code']}"
        axis.text(left + width, index, " " + label, va="center", fontsize=8)
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels([f"{span['service']}" for _, span in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("ms since the client's span began")
    end = max((span["end_ns"] - start) / 1e6 for span in spans)
    axis.set_xlim(0, end * 1.9)
    axis.set_title(
        "One Create, as exported over OTLP: client span → server span (traceparent) → SQL spans (pool thread)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else BASE_DIR / "bench" / "results")
