"""Turn measurements into the table, the targets, the JSON file and the chart."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import django


def machine() -> dict:
    """Describe the machine the numbers come from."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = f"{int(meminfo.read_text().split()[1]) // 1024 // 1024} GiB"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or numerator <= 0 or denominator <= 0:
        return None
    return numerator / denominator


#: The project's server on each transport: transport -> results key. The targets are the default's.
TRANSPORTS = {"aio": "grpc", "native": "grpc_native"}
DEFAULT_TRANSPORT = "aio"
#: Every server measured: results key -> column title.
SERVERS = {
    "grpc": "gRPC aio",
    "grpc_native": "gRPC native",
    "drf": "DRF",
    "floor": "grpcio floor",
    "aio_floor": "grpc.aio floor",
    "handwritten": "hand-written grpcio",
    "handwritten_native": "hand-written native",
    "connect": "Connect (web process)",
}

# (key, label, unit, higher is better)
ROWS = [
    ("retrieve_rps", "Retrieve, 1 process", "RPC/s", True),
    ("retrieve_p50_ms", "Retrieve p50", "ms", False),
    ("retrieve_p99_ms", "Retrieve p99", "ms", False),
    ("retrieve_server_cpu_us", "Retrieve: server CPU per call", "µs", False),
    ("retrieve_database_cpu_us", "Retrieve: PostgreSQL CPU per call (all its processes)", "µs", False),
    ("retrieve_django_half_cpu_us", "Retrieve: its Django half alone, in process, CPU per call", "µs", False),
    ("list_ms", "List of 1,000", "ms", False),
    ("list_per_s", "List of 1,000", "calls/s", True),
    ("create_rps", "Create", "RPC/s", True),
    ("batch_create_rows_per_s", "BatchCreate of 1,000", "rows/s", True),
    ("stream_rows_per_s", "Stream of all rows", "rows/s", True),
    ("stream_rss_growth_mb", "Stream: server RSS growth", "MB", False),
    ("retrieve_rps_untraced", "Retrieve, tracing off (paired with the next row)", "RPC/s", True),
    ("retrieve_rps_traced", "Retrieve, tracing on, 10 % sampled", "RPC/s", True),
]


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def times(value: float | None) -> str:
    return f"{fmt(value)}×" if value else "–"


def table(label: str, results: dict) -> str:
    """Return one database's results as a Markdown table: a column per server, then the ratios of each transport."""
    names = [name for name in SERVERS if name in results]
    lines = [
        f"**{label}**",
        "",
        "| Measure | "
        + " | ".join(SERVERS[name] for name in names)
        + " | aio ÷ hand-written | native ÷ hand-written |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for key, title, unit, higher in ROWS:
        values = [results[name].get(key) for name in names]
        if not any(values):
            continue
        cells = []
        for name in TRANSPORTS.values():
            ours, theirs = results.get(name, {}).get(key), results.get("handwritten", {}).get(key)
            cells.append(times(ratio(ours, theirs) if higher else ratio(theirs, ours)))
        lines.append(
            f"| {title} ({unit}) | " + " | ".join(fmt(value) for value in values) + " | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def targets(results: dict, name: str = "grpc") -> list[tuple[str, str, bool]]:
    """Return the issue's targets for the project's server ``name``: (what, the figure reached, met)."""
    grpc, drf, floor = results[name], results["drf"], results["floor"]
    handwritten, handwritten_native = results.get("handwritten", {}), results.get("handwritten_native", {})
    retrieve = grpc.get("retrieve_rps")
    checks = [
        (
            "Retrieve ≥ 1.0× the hand-written grpcio + driver server",
            ratio(retrieve, handwritten.get("retrieve_rps")),
            1.0,
        ),
        ("Retrieve ≥ 0.5× the grpcio no-database floor", ratio(retrieve, floor.get("retrieve_rps")), 0.5),
        (
            "Retrieve ≥ 0.5× the hand-written server on native",
            ratio(retrieve, handwritten_native.get("retrieve_rps")),
            0.5,
        ),
        (
            "Stream ≥ 1.0× the hand-written keyset Stream",
            ratio(grpc.get("stream_rows_per_s"), handwritten.get("stream_rows_per_s")),
            1.0,
        ),
        ("List of 1,000 ≥ 3× faster than DRF", ratio(drf.get("list_ms"), grpc.get("list_ms")), 3.0),
        ("Create ≥ 2× DRF per worker", ratio(grpc.get("create_rps"), drf.get("create_rps")), 2.0),
        ("Create ≥ 0.4× the insert floor", ratio(grpc.get("create_rps"), floor.get("create_rps")), 0.4),
        ("BatchCreate of 1,000 ≥ 20,000 rows/s", grpc.get("batch_create_rows_per_s"), 20_000),
        (
            "Connect JSON Retrieve (web process) ≥ 3× DRF per worker",
            ratio(results.get("connect", {}).get("retrieve_rps"), drf.get("retrieve_rps")),
            3.0,
        ),
        (
            "Connect binary List of 1,000 ≥ 3× faster than DRF",
            ratio(drf.get("list_ms"), results.get("connect", {}).get("list_ms")),
            3.0,
        ),
        (
            "Retrieve with tracing at 10 % ≥ 0.9× off",
            ratio(grpc.get("retrieve_rps_traced"), grpc.get("retrieve_rps_untraced")),
            0.9,
        ),
    ]
    out = [(what, shown(value, goal), value is not None and value >= goal) for what, value, goal in checks]
    growth = grpc.get("stream_rss_growth_mb")
    out.append(("Stream RSS growth ≤ 10 MB", fmt(growth), growth is not None and growth <= 10))
    return out


def tracing_summary(label: str, results: dict) -> str:
    """Return the tracing measure alone (``--tracing-only``): Retrieve traced at 10 % against off, and the target."""
    grpc = results["grpc"]
    traced, untraced = grpc.get("retrieve_rps_traced"), grpc.get("retrieve_rps_untraced")
    share = ratio(traced, untraced)
    met = share is not None and share >= 0.9
    cpu_on, cpu_off = grpc.get("retrieve_cpu_us_traced"), grpc.get("retrieve_cpu_us_untraced")
    return (
        f"**{label}**: Retrieve {fmt(traced)} RPC/s with tracing on (10 % sampled), {fmt(untraced)} off: "
        f"{fmt(share)}× ({'met' if met else 'MISS'}: ≥ 0.9×); server CPU per call {fmt(cpu_on)} µs against "
        f"{fmt(cpu_off)} µs off ({fmt(ratio(cpu_on, cpu_off))}×); {grpc.get('traced_spans_exported', 0):,} spans "
        f"exported for {grpc.get('traced_calls', 0):,} calls\n"
    )


def shown(value: float | None, goal: float) -> str:
    """Format ``value``, with the digits that tell it from ``goal`` when both would print the same."""
    text = fmt(value)
    if value is not None and value < goal and text == fmt(goal):
        return f"{value:.4f}"
    return text


def save_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def save_chart(path: Path, document: dict) -> None:
    """Draw both transports, DRF, the floor and the hand-written server side by side for each measure and database."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [
        ("retrieve_rps", "Retrieve (RPC/s, 1 process)"),
        ("list_per_s", "List of 1,000 (calls/s)"),
        ("create_rps", "Create (RPC/s)"),
        ("stream_rows_per_s", "Stream (rows/s)"),
    ]
    databases = list(document["databases"])
    figure, axes = plt.subplots(
        len(databases), len(measures), figsize=(4 * len(measures), 3.2 * len(databases)), squeeze=False
    )
    colours = {
        "grpc": "#2b7bba",
        "grpc_native": "#1b9e77",
        "drf": "#d95f02",
        "floor": "#999999",
        "handwritten": "#7570b3",
        "handwritten_native": "#b3b0e0",
    }
    labels = {
        "grpc": "aio",
        "grpc_native": "native",
        "drf": "DRF",
        "floor": "floor",
        "handwritten": "hand",
        "handwritten_native": "hand nat.",
    }
    for row, database in enumerate(databases):
        results = document["databases"][database]
        for column, (key, title) in enumerate(measures):
            axis = axes[row][column]
            names = [name for name in colours if name in results]
            values = [results[name].get(key) or 0 for name in names]
            bars = axis.bar([labels[name] for name in names], values, color=[colours[name] for name in names])
            axis.bar_label(bars, labels=[fmt(value) if value else "–" for value in values], fontsize=8)
            axis.set_title(f"{title}\n{database}", fontsize=9)
            axis.tick_params(labelsize=8)
            axis.set_yticks([])
    figure.suptitle(
        f"{document['machine']['cpu']}, {document['machine']['cores']} cores — higher is better", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
