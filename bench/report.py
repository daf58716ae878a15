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
    if not numerator or not denominator:
        return None
    return numerator / denominator


# (key, label, unit, higher is better)
ROWS = [
    ("retrieve_rps", "Retrieve, 1 process", "RPC/s", True),
    ("retrieve_p50_ms", "Retrieve p50", "ms", False),
    ("retrieve_p99_ms", "Retrieve p99", "ms", False),
    ("retrieve_rps_2", "Retrieve, 2 processes", "RPC/s", True),
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


def table(label: str, results: dict) -> str:
    """Return one database's results as a Markdown table."""
    lines = [
        f"**{label}**",
        "",
        "| Measure | gRPC | DRF | floor | gRPC ÷ DRF | gRPC ÷ floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    aio_floor = results.get("aio_floor", {}).get("retrieve_rps")
    for key, name, unit, higher in ROWS:
        grpc_value = results["grpc"].get(key)
        drf_value = results["drf"].get(key)
        floor_value = results["floor"].get(key)
        if higher:
            versus_drf, versus_floor = ratio(grpc_value, drf_value), ratio(grpc_value, floor_value)
        else:
            versus_drf, versus_floor = ratio(drf_value, grpc_value), ratio(floor_value, grpc_value)
        lines.append(
            f"| {name} ({unit}) | {fmt(grpc_value)} | {fmt(drf_value)} | {fmt(floor_value)} "
            f"| {fmt(versus_drf)}{'×' if versus_drf else ''} | {fmt(versus_floor)}{'×' if versus_floor else ''} |"
        )
        connect_value = results.get("connect", {}).get(key)
        if connect_value is not None:
            versus = ratio(connect_value, drf_value) if higher else ratio(drf_value, connect_value)
            lines.append(
                f"| {name}, Connect (web process) ({unit}) | {fmt(connect_value)} | {fmt(drf_value)} | "
                f"| {fmt(versus)}{'×' if versus else ''} | |"
            )
        if key == "retrieve_rps" and aio_floor:
            versus_aio = ratio(grpc_value, aio_floor)
            lines.append(
                f"| Retrieve, 1 process, vs the grpc.aio floor (RPC/s) | {fmt(grpc_value)} | | {fmt(aio_floor)} "
                f"| | {fmt(versus_aio)}{'×' if versus_aio else ''} |"
            )
    return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """Return the issue's targets: (what, the figure reached, met)."""
    grpc, drf, floor = results["grpc"], results["drf"], results["floor"]
    checks = [
        ("Retrieve ≥ 3× DRF per process", ratio(grpc.get("retrieve_rps"), drf.get("retrieve_rps")), 3.0),
        ("Retrieve ≥ ½ the grpcio floor", ratio(grpc.get("retrieve_rps"), floor.get("retrieve_rps")), 0.5),
        (
            "Retrieve ≥ ½ the grpc.aio floor",
            ratio(grpc.get("retrieve_rps"), results.get("aio_floor", {}).get("retrieve_rps")),
            0.5,
        ),
        ("List of 1,000 ≥ 3× faster than DRF", ratio(drf.get("list_ms"), grpc.get("list_ms")), 3.0),
        ("Stream ≥ 100,000 rows/s", grpc.get("stream_rows_per_s"), 100_000),
        ("two processes ≥ 1.8× one", ratio(grpc.get("retrieve_rps_2"), grpc.get("retrieve_rps")), 1.8),
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
    out = [(name, shown(value, goal), value is not None and value >= goal) for name, value, goal in checks]
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


def two_process_ceiling(results: dict, cores: int | None) -> str | None:
    """Estimate what two processes can reach here: the cores over what one process's Retrieve load took.

    One loaded server process (held to about one core by the GIL), the
    database and the load generator share the machine; at the one-process
    run's CPU per call, two processes fill every core at this rate. An
    estimate: a run whose CPU per call differs (a noisy neighbour in the
    one-process run) lands on either side of it.
    """
    used = results["grpc"].get("retrieve_cores")
    if not used or not cores or "retrieve_rps_2" not in results["grpc"]:  # --quick: no h2load, no second process
        return None
    total = used["server"] + used["database"] + used["load_generator"]
    if not total:
        return None
    return (
        f"estimate: at the one-process run's CPU per call, two processes fill this machine at {cores / total:.2f}× "
        f"one; that run took {total:.2f} of its {cores} cores (server {used['server']:.2f}, "
        f"PostgreSQL {used['database']:.2f}, load generator {used['load_generator']:.2f})"
    )


def save_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def save_chart(path: Path, document: dict) -> None:
    """Draw gRPC, DRF and the floor side by side for each measure and database."""
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
    colours = {"grpc": "#2b7bba", "drf": "#d95f02", "floor": "#999999"}
    for row, database in enumerate(databases):
        results = document["databases"][database]
        for column, (key, title) in enumerate(measures):
            axis = axes[row][column]
            names = ["grpc", "drf", "floor"]
            values = [results[name].get(key) or 0 for name in names]
            bars = axis.bar(["gRPC", "DRF", "floor"], values, color=[colours[name] for name in names])
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
