"""Count the calls a server under test answered with a status other than OK.

h2load counts HTTP 200 responses as succeeded, and a gRPC error is an HTTP
200 too (its status is in the trailers), so the server counts them: each
process writes its counts to ``<BENCH_STATUS_DIR>/<pid>.json`` when one
changes, and the benchmark adds them up before and after a run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from grpc_ext.limits import ObservingInterceptor, outcome_code


class StatusCountInterceptor(ObservingInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        directory = os.environ.get("BENCH_STATUS_DIR")
        self.path = Path(directory) / f"{os.getpid()}.json" if directory else None

    def record(self, context, begun: None, exc: BaseException | None) -> None:
        """Count, by the code the client got, each call whose handler raised, and write the counts."""
        if exc is None:
            return
        self.counts[outcome_code(context, exc).name] += 1
        if self.path is not None:  # replaced whole, so a reader never sees half a file
            partial = self.path.with_suffix(".tmp")
            partial.write_text(json.dumps(self.counts))
            os.replace(partial, self.path)

    def observers(self, method: str):
        return (lambda context: None), self.record


def failed_calls(directory: Path) -> int:
    """Return how many calls the servers writing to ``directory`` have failed so far.

    CANCELLED is the client's doing: h2load abandons the calls in flight when
    its duration ends.
    """
    counts: Counter[str] = Counter()
    for path in directory.glob("*.json"):
        counts.update(json.loads(path.read_text()))
    counts.pop("CANCELLED", None)
    return sum(counts.values())
