"""Drive a server and measure it: h2load (gRPC over h2c), wrk (HTTP/1.1), or small Python clients.

Every run returns a ``Run``: how many calls succeeded and failed, calls per
second, and latency percentiles. A failed call makes the benchmark stop.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

INSTALL_HINT = "apt-get install -y nghttp2-client wrk"


@dataclass
class Run:
    calls: int
    failed: int
    seconds: float
    latencies_ms: list[float]
    #: Bytes of DATA frames received (h2load only).
    data_bytes: int = 0

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def must_search(pattern: str, output: str) -> re.Match[str]:
    """Return the match of ``pattern`` in a load generator's report; fail clearly if its format changed."""
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"Unexpected load generator output (no {pattern!r}):\n{output}")
    return match


def missing_tools() -> list[str]:
    return [tool for tool in ("h2load", "wrk") if shutil.which(tool) is None]


def grpc_frame(message: Message) -> bytes:
    """Return ``message`` as one gRPC length-prefixed frame (uncompressed)."""
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def h2load(
    url: str,
    body: bytes,
    *,
    connections: int,
    streams: int,
    duration: float | None = None,
    requests: int | None = None,
    http1: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
) -> Run:
    """Run h2load against ``url`` (a gRPC method when ``body`` is a frame) and parse its report."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file, log_file = Path(tmp) / "body", Path(tmp) / "log"
        command = ["h2load", "-c", str(connections), "-m", str(streams), "--log-file", str(log_file)]
        if http1:
            command.append("--h1")
        else:
            body_file.write_bytes(body)
            command += ["-d", str(body_file), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        for name, value in headers:
            command += ["-H", f"{name}: {value}"]
        if duration:
            command += ["-D", f"{duration:g}", "--warm-up-time", "1"]
        else:
            command += ["-n", str(requests or 1)]
        output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
        latencies = [int(line.split("\t")[2]) / 1000 for line in log_file.read_text().splitlines() if line]
    finished = must_search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", output)
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done = must_search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", output
    )
    two_xx = int(must_search(r"status codes: (\d+) 2xx", output).group(1))
    succeeded = int(done.group(2))
    if duration and float(finished.group(3)):
        # The report's time includes the warm-up; its rate counts the main duration only.
        seconds = succeeded / float(finished.group(3))
    # A call cut off by the deadline may have had its 2xx headers without finishing.
    failed = int(done.group(3)) + int(done.group(4)) + max(0, succeeded - two_xx)
    data = re.search(r"traffic: .*\((\d+)\) data", output)
    data_bytes = int(data.group(1)) if data else 0
    return Run(calls=succeeded, failed=failed, seconds=seconds, latencies_ms=latencies, data_bytes=data_bytes)


WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def lua_string(body: str | bytes | None) -> str:
    """Return ``body`` as a Lua literal (bytes escaped one by one, so a protobuf body survives)."""
    if body is None:
        return "nil"
    data = body.encode() if isinstance(body, str) else body
    return '"' + "".join(f"\\{byte}" for byte in data) + '"'


def wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    method: str = "GET",
    body: str | bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Run:
    """Run wrk against ``url`` and parse its report (latency percentiles from ``--latency``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT.format(method=method, body=lua_string(body)))
        for name, value in headers:
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        script.flush()
        command = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{duration:.0f}s",
            "--latency",
            "-s",
            script.name,
            url,
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    calls = int(must_search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    percentiles = {p: _wrk_ms(v, unit) for p, v, unit in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", output)}
    seconds = float(must_search(r"requests in ([\d.]+)s", output).group(1))
    # wrk prints percentiles only; a two-point list keeps Run.percentile meaningful.
    latencies = [percentiles["50"]] * 98 + [percentiles["99"]] * 2
    return Run(calls=calls - failed, failed=failed, seconds=seconds, latencies_ms=latencies)


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def python_calls(call: Callable[[], object], *, requests: int) -> Run:
    """Call ``call`` ``requests`` times in this process (quick mode: proves the harness, not speed)."""
    latencies, failed = [], 0
    started = time.perf_counter()
    for _ in range(requests):
        begun = time.perf_counter()
        try:
            call()
        except Exception:
            failed += 1
        latencies.append((time.perf_counter() - begun) * 1000)
    return Run(calls=requests - failed, failed=failed, seconds=time.perf_counter() - started, latencies_ms=latencies)


def http_call(
    port: int, method: str, path: str, body: str | bytes | None = None, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """Make one HTTP request; raise unless it answers 2xx."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **dict(headers)})
        response = connection.getresponse()
        content = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path} answered {response.status}: {content[:200]!r}")
        return content
    finally:
        connection.close()


def median_run(runs: list[Run]) -> Run:
    """Return the run with the median throughput."""
    ordered = sorted(runs, key=lambda run: run.per_second)
    return ordered[len(ordered) // 2]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
