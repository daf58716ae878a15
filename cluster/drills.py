"""Drills: break one part of a running cluster under the mixed load of ``cluster.load``, and check what clients saw.

Each drill returns a ``DrillResult``: its figures (printed) and the failures
found, each a sentence; a drill passes when there are none. Every drill leaves
the cluster as it found it (every host back and SERVING), so that drills run
one after the other on one cluster: ``run_drills``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from cluster.hosts import GRPC_HOSTS, Cluster, health_status
from cluster.load import OK, PASSWORD, Deadlines, Load, Outcome
from protos import posts_pb2, posts_pb2_grpc

#: Seconds after the start of the load before a host is broken, so that every kind of call runs first.
WARM_UP = 3.0
#: Seconds a call may end after its deadline (the client's clock against the server's) without counting as a hang.
DEADLINE_SLACK = 0.5
#: Parameters PgBouncer itself sets per client on each server connection it lends (its tracked parameters).
PGBOUNCER_TRACKED = ("client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name")


@dataclass
class DrillResult:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def check(self, holds: bool, failure: str) -> None:
        if not holds:
            self.failures.append(failure)

    def lines(self) -> list[str]:
        width = max((len(name) for name in self.figures), default=0)
        lines = [f"== drill {self.name}: {'passed' if self.passed else 'FAILED'}"]
        lines += [f"   {name:<{width}}  {value}" for name, value in self.figures.items()]
        lines += [f"   FAILURE: {failure}" for failure in self.failures]
        return lines


def summary(outcomes: list[Outcome]) -> str:
    """``"OK 812, UNAVAILABLE 3"``: the codes of ``outcomes``, most frequent first."""
    return ", ".join(f"{code} {count}" for code, count in Counter(o.code for o in outcomes).most_common()) or "none"


def succeeded(outcome: Outcome) -> bool:
    """An OK gRPC call, or a 2xx REST answer."""
    return outcome.code == OK or outcome.code.startswith("HTTP 2")


def failed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not succeeded(o)]


def examples(outcomes: list[Outcome], limit: int = 3) -> str:
    shown = [
        f"{o.method} ({deadline_name(o.deadline)}) {o.code} after {o.seconds:.2f} s: {one_line(o.details)}"
        for o in outcomes[:limit]
    ]
    return "; ".join(shown)


def one_line(text: str, length: int = 160) -> str:
    return " ".join(text.split())[:length]


def deadline_name(deadline: float | None) -> str:
    return "no deadline" if deadline is None else f"{deadline:g} s deadline"


def hung(outcomes: list[Outcome]) -> list[Outcome]:
    """Calls that ran past their deadline, or ended DEADLINE_EXCEEDED: a client waited as long as it could."""
    return [
        o
        for o in outcomes
        if o.code == "DEADLINE_EXCEEDED" or (o.deadline is not None and o.seconds > o.deadline + DEADLINE_SLACK)
    ]


def check_writes(cluster: Cluster, load: Load, result: DrillResult) -> None:
    """Every acknowledged Create is in the database once under its id, no Create is there twice, no update lost."""
    with cluster.postgres() as cursor:
        cursor.execute("SELECT id::text, title FROM posts_post WHERE title LIKE %s", [f"{load.label}-%"])
        rows = cursor.fetchall()
    by_title: dict[str, list[str]] = {}
    for post_id, title in rows:
        by_title.setdefault(title, []).append(post_id)
    written = load.written
    present = {post_id for ids in by_title.values() for post_id in ids}
    lost = [title for title, post_id in written.acknowledged.items() if post_id not in present]
    # A Create done twice leaves a second row under its title (an update renames only the acknowledged one).
    twice = [
        title
        for title, ids in by_title.items()
        if len(ids) > 1 or (title in written.acknowledged and ids != [written.acknowledged[title]])
    ]
    current = {post_id: title for title, ids in by_title.items() for post_id in ids}
    lost_updates = [
        post_id
        for post_id, title in written.titles.items()
        if current.get(post_id) not in {title, *written.pending_titles.get(post_id, set())}
    ]
    in_doubt_present = sum(1 for title in written.in_doubt if title in by_title)
    result.figures["acknowledged Creates"] = len(written.acknowledged)
    result.figures["Creates in doubt (failed), present"] = f"{len(written.in_doubt)}, {in_doubt_present}"
    result.figures["acknowledged writes lost"] = len(lost) + len(lost_updates)
    result.figures["writes done twice"] = len(twice)
    result.check(not lost, f"{len(lost)} acknowledged Create(s) missing from the database: {lost[:3]}")
    result.check(not lost_updates, f"{len(lost_updates)} post(s) lost an acknowledged PartialUpdate")
    result.check(not twice, f"{len(twice)} Create(s) written twice: {twice[:3]}")


def wait_balancer_state(cluster: Cluster, server: str, state: str, timeout: float = 30) -> float:
    """Wait until HAProxy reports ``server`` (``grpc1``...) in ``state``; return the seconds it took."""

    def reached() -> bool:
        try:
            return bool(cluster.balancer_servers()[server]["status"].startswith(state))
        except OSError:
            return False

    return cluster.wait_for(reached, f"{server} {state} in HAProxy", timeout=timeout)


def restore(cluster: Cluster) -> None:
    """Bring back every host a drill left down, and wait until the balancer has them all again."""
    if not cluster.processes["postgres"].running():
        cluster.start_postgres()
    if not cluster.processes["redis"].running():
        cluster.start_redis()
    for index in range(len(GRPC_HOSTS)):
        if not cluster.grpc(index).running():
            cluster.start_grpc(index)
    cluster.wait_for(lambda: cluster.balanced() == {"UP"}, "every gRPC host UP in HAProxy")


# --------------------------------------------------------------------------- the drills


def drill_kill(cluster: Cluster) -> DrillResult:
    """SIGKILL one gRPC host mid-load: no failed read, every acknowledged write there once, none twice;
    the balancer stops sending to it within its health interval (a check every 1 s, 1 s to answer)."""
    result = DrillResult("kill")
    victim, server = 1, "grpc2"
    with Load(cluster.lb_address, "kill") as load:
        time.sleep(WARM_UP)
        killed = time.monotonic()
        cluster.grpc(victim).send(signal.SIGKILL)
        out_after = wait_balancer_state(cluster, server, "DOWN")
        sent_at_down = int(cluster.balancer_servers()[server]["stot"])
        time.sleep(WARM_UP)
        sent_later = int(cluster.balancer_servers()[server]["stot"]) - sent_at_down
    reads = [o for o in load.outcomes if o.is_read]
    failed_reads = failed(reads)
    around = load.between(killed - 1, killed + out_after + 1)
    result.figures["calls"] = f"{len(load.outcomes)}: {summary(load.outcomes)}"
    result.figures["calls around the kill"] = f"{len(around)}: {summary(around)}"
    result.figures["reads, failed"] = f"{len(reads)}, {len(failed_reads)}"
    result.figures["writes failed"] = summary(failed([o for o in load.outcomes if not o.is_read]))
    result.figures["seconds until the balancer took the host out"] = f"{out_after:.2f}"
    result.figures["calls sent to the host after it was out"] = sent_later
    result.check(not failed_reads, f"{len(failed_reads)} read(s) failed: {examples(failed_reads)}")
    result.check(out_after <= 2.5, f"the balancer took {out_after:.1f} s to take the host out (checks: 1 s + 1 s)")
    result.check(sent_later == 0, f"the balancer sent {sent_later} call(s) to the host after taking it out")
    check_writes(cluster, load, result)
    cluster.start_grpc(victim)
    back = wait_balancer_state(cluster, server, "UP")
    result.figures["seconds from SERVING to back in the balancer"] = f"{back:.2f}"
    return result


def drill_rolling(cluster: Cluster) -> DrillResult:
    """Restart every gRPC host in turn (SIGTERM: drain; start again; wait for SERVING) under load: 0 failed calls."""
    result = DrillResult("rolling")
    timings = []
    # Short deadlines of 2 s: a host starting up (Django, the checks) takes for a few seconds the CPU its
    # neighbours serve with, which on one machine of two cores can hold a 1 s call past its deadline.
    with Load(cluster.lb_address, "rolling", deadlines=Deadlines(short=2.0)) as load:
        time.sleep(WARM_UP)
        for index in range(len(GRPC_HOSTS)):
            server, process = f"grpc{index + 1}", cluster.grpc(index)
            stopping = time.monotonic()
            process.send(signal.SIGTERM)
            out_after = wait_balancer_state(cluster, server, "DOWN")
            exited = process.wait(60)
            stopped_after = time.monotonic() - stopping
            cluster.start_grpc(index)
            back_after = wait_balancer_state(cluster, server, "UP")
            timings.append(
                f"{server}: out {out_after:.1f} s, exit {exited} after {stopped_after:.1f} s, back {back_after:.1f} s"
            )
        time.sleep(1)
    failures = failed(load.outcomes)
    result.figures["calls"] = f"{len(load.outcomes)}: {summary(load.outcomes)}"
    result.figures["hosts restarted"] = "; ".join(timings)
    result.check(not failures, f"{len(failures)} call(s) failed: {examples(failures)}")
    check_writes(cluster, load, result)
    return result


def drill_pgbouncer(cluster: Cluster, seconds: float = 8.0) -> DrillResult:
    """PgBouncer in transaction mode: no session state of one call reaches another.

    Short-deadline (0.2 s) Retrieves run beside long and no-deadline calls, and
    a probe asks, through PgBouncer, what state the server connection it is
    lent has: settings changed for the session (a statement timeout...),
    prepared statements, cursors kept open, temporary tables, advisory locks,
    LISTENs. Long and no-deadline calls must never end DEADLINE_EXCEEDED or
    by a statement timeout, and the probe must find nothing.
    """
    result = DrillResult("pgbouncer")
    mix = ("Retrieve", "Retrieve", "Stream", "Retrieve", "List", "Retrieve", "PartialUpdate", "Create")
    probes: list[tuple[int, str]] = []
    stop = threading.Event()

    def probe() -> None:
        import psycopg2

        connection = psycopg2.connect(cluster.pgbouncer_url, connect_timeout=3)
        try:
            while not stop.is_set():
                with connection.cursor() as cursor:
                    cursor.execute(LEAK_PROBE, [list(PGBOUNCER_TRACKED)])
                    pid, state = cursor.fetchone()
                connection.commit()
                probes.append((pid, state or ""))
                time.sleep(0.02)
        finally:
            connection.close()

    prober = threading.Thread(target=probe, name="leak-probe")
    with Load(cluster.lb_address, "pgbouncer", deadlines=Deadlines(short=0.2, long=10.0), mix=mix) as load:
        time.sleep(1)
        prober.start()
        time.sleep(seconds)
        stop.set()
        prober.join(10)
    patient = [o for o in load.outcomes if o.deadline is None or o.deadline >= 10.0]
    cut_short = [o for o in patient if o.code == "DEADLINE_EXCEEDED" or "statement timeout" in o.details.lower()]
    leaks = [(pid, state) for pid, state in probes if state]
    result.figures["calls"] = f"{len(load.outcomes)}: {summary(load.outcomes)}"
    result.figures["short-deadline calls (0.2 s)"] = summary([o for o in load.outcomes if o.deadline == 0.2])
    result.figures["long and no-deadline calls"] = summary(patient)
    result.figures["probes through PgBouncer, server connections"] = f"{len(probes)}, {len({p for p, _ in probes})}"
    result.figures["probes finding session state"] = f"{len(leaks)}" + (f" (e.g. {leaks[0][1]})" if leaks else "")
    result.check(bool(probes), "the probe never got through PgBouncer")
    result.check(
        not cut_short,
        f"{len(cut_short)} long or no-deadline call(s) ended by a deadline or statement timeout: {examples(cut_short)}",
    )
    result.check(
        not leaks,
        f"{len(leaks)} of {len(probes)} probes found session state left by a call: {leaks[0][1] if leaks else ''}",
    )
    check_writes(cluster, load, result)
    return result


#: Run through PgBouncer in a transaction of its own: the backend's pid, and every piece of session
#: state the server connection holds that an earlier transaction (another client's) may have left.
LEAK_PROBE = """
SELECT pg_backend_pid(), concat_ws('; ',
  (SELECT 'settings: ' || string_agg(name || '=' || setting, ', ') FROM pg_settings
    WHERE source = 'session' AND name <> ALL(%s)),
  (SELECT 'prepared statements: ' || count(*) FROM pg_prepared_statements HAVING count(*) > 0),
  (SELECT 'open cursors: ' || count(*) FROM pg_cursors HAVING count(*) > 0),
  (SELECT 'temporary tables: ' || count(*) FROM pg_class WHERE relpersistence = 't'
     AND relnamespace = pg_my_temp_schema() HAVING count(*) > 0),
  (SELECT 'advisory locks: ' || count(*) FROM pg_locks WHERE locktype = 'advisory'
     AND pid = pg_backend_pid() HAVING count(*) > 0),
  (SELECT 'listening: ' || string_agg(channel, ', ') FROM pg_listening_channels() AS channel)
)
"""


def drill_redis(cluster: Cluster, outage: float = 20.0, hang: bool = False) -> DrillResult:
    """Redis stopped for ``outage`` seconds mid-load (or frozen with SIGSTOP: ``hang``), then back.

    Every call, gRPC and REST, those that use the cache (signup, login) and
    those that do not: OK, or UNAVAILABLE / HTTP 503 JSON with Retry-After and
    a clear message; never INTERNAL, UNKNOWN or HTTP 500; none past its
    deadline. Health stays SERVING (docs/guides/api.md: only the database makes a
    host NOT_SERVING). Calls succeed again by themselves after Redis returns.
    """
    result = DrillResult("redis-hung" if hang else "redis")
    mix = ("Login", "Retrieve", "RestLogin", "Signup", "List", "RestSignup", "Create", "Stream", "PartialUpdate")
    redis = cluster.processes["redis"]
    health: list[str] = []
    with Load(cluster.lb_address, result.name, mix=mix, web_url=cluster.web_url) as load:
        time.sleep(WARM_UP)
        broken = time.monotonic()
        redis.send(signal.SIGSTOP if hang else signal.SIGTERM)
        if not hang:
            redis.wait(10)
        while time.monotonic() - broken < outage:
            health += [health_status(address) for address in cluster.grpc_addresses]
            time.sleep(1)
        if hang:
            redis.send(signal.SIGCONT)
        else:
            cluster.start_redis()
        back = time.monotonic()
        time.sleep(8)
    during = load.between(broken, back)
    settled = [o for o in load.outcomes if o.started >= back + 5]
    bad_codes = [o for o in load.outcomes if o.code not in {OK, "UNAVAILABLE"} and not o.code.startswith("HTTP ")]
    bad_rest = [o for o in load.outcomes if o.code.startswith("HTTP ") and not rest_acceptable(o)]
    late = hung(load.outcomes)
    unclear = [o for o in load.outcomes if o.code == "UNAVAILABLE" and not o.details.strip()]
    by_method = {
        method: summary([o for o in during if o.method == method]) for method in sorted({o.method for o in during})
    }
    result.figures["calls"] = f"{len(load.outcomes)}: {summary(load.outcomes)}"
    for method, codes in by_method.items():
        result.figures[f"  while Redis was {'frozen' if hang else 'down'}: {method}"] = codes
    result.figures["health of the hosts while it was"] = dict(Counter(health))
    result.figures["calls started 5 s after its return"] = summary(settled)
    result.figures["longest call, s"] = f"{max((o.seconds for o in load.outcomes), default=0):.2f}"
    result.check(
        not bad_codes, f"{len(bad_codes)} gRPC call(s) ended neither OK nor UNAVAILABLE: {examples(bad_codes)}"
    )
    result.check(not bad_rest, f"{len(bad_rest)} REST call(s) answered neither 2xx nor 503 JSON: {examples(bad_rest)}")
    result.check(not late, f"{len(late)} call(s) ended DEADLINE_EXCEEDED or past their deadline: {examples(late)}")
    result.check(not unclear, f"{len(unclear)} UNAVAILABLE call(s) without a message")
    result.check(set(health) <= {"SERVING"}, f"health was {dict(Counter(health))}, the docs say SERVING")
    result.check(bool(settled) and not failed(settled), f"after Redis returned: {summary(settled)}")
    check_writes(cluster, load, result)
    return result


def rest_acceptable(outcome: Outcome) -> bool:
    """A REST answer a client can act on: a success, or 503 in JSON with Retry-After (the cache is down)."""
    status = outcome.code.removeprefix("HTTP ")
    if status.startswith("2"):
        return True
    return status == "503" and "application/json" in outcome.details and "Retry-After: None" not in outcome.details


def drill_redis_hung(cluster: Cluster) -> DrillResult:
    """As ``redis``, Redis frozen (SIGSTOP) instead of stopped: a hung cache must not take the pool."""
    return drill_redis(cluster, hang=True)


def drill_postgres(cluster: Cluster, outage: float = 5.0) -> DrillResult:
    """PostgreSQL restarted mid-load: UNAVAILABLE while it is down, OK within 5 s of its return, no write lost."""
    result = DrillResult("postgres")
    postgres = cluster.processes["postgres"]
    probes: list[tuple[float, str]] = []
    stop = threading.Event()
    with Load(cluster.lb_address, "postgres") as load:
        # A Retrieve every 0.2 s on a channel without retries: when service is back, whatever the backoff
        # the load's clients happen to be in.
        prober = threading.Thread(target=probe_retrieve, args=(cluster, load, probes, stop), name="probe")
        prober.start()
        time.sleep(WARM_UP)
        stopping = time.monotonic()
        postgres.send(signal.SIGINT)  # a fast shutdown, as `pg_ctl restart -m fast` does
        postgres.wait(30)
        down = time.monotonic()
        time.sleep(outage)
        cluster.start_postgres()
        back = time.monotonic()
        time.sleep(10)
        stop.set()
        prober.join(10)
    while_down = load.between(down, back)
    first_ok = min((ended for ended, code in probes if ended >= back and code == OK), default=None)
    probed_down = Counter(code for ended, code in probes if down <= ended <= back)
    settled = [o for o in load.outcomes if o.started >= back + 5]
    wrong_down = [
        o
        for o in while_down
        if o.code not in {OK, "UNAVAILABLE"}
        and not (o.code == "DEADLINE_EXCEEDED" and o.deadline == load.deadlines.short)
    ]
    short_expired = [o for o in while_down if o.code == "DEADLINE_EXCEEDED" and o not in wrong_down]
    result.figures["calls"] = f"{len(load.outcomes)}: {summary(load.outcomes)}"
    result.figures["seconds to stop PostgreSQL"] = f"{down - stopping:.2f}"
    result.figures["calls while it was down"] = summary(while_down)
    if short_expired:
        result.figures["  of which short deadlines that passed while retrying"] = examples(short_expired, 1)
    result.figures["probes (no retries) while it was down"] = ", ".join(f"{c} {n}" for c, n in probed_down.items())
    result.figures["first OK probe after its return, s"] = "none" if first_ok is None else f"{first_ok - back:.2f}"
    result.figures["calls started 5 s after its return"] = summary(settled)
    result.check(
        not wrong_down,
        f"{len(wrong_down)} call(s) while PostgreSQL was down ended otherwise than UNAVAILABLE "
        f"(or a short deadline while retrying it): {examples(wrong_down)}",
    )
    result.check(set(probed_down) <= {"UNAVAILABLE"}, f"probes while PostgreSQL was down: {dict(probed_down)}")
    result.check(first_ok is not None and first_ok - back <= 5, "no call succeeded within 5 s of PostgreSQL's return")
    result.check(bool(settled) and not failed(settled), f"calls 5 s after the return: {examples(failed(settled))}")
    check_writes(cluster, load, result)
    return result


def connections_by_pid(port: int) -> Counter[int]:
    """Return how many established TCP connections each process has to ``127.0.0.1:port`` (from ``ss``)."""
    output = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"], capture_output=True, text=True
    ).stdout
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", output))


def host_pids(cluster: Cluster) -> dict[str, list[int]]:
    """The pids of each Django host: a gRPC host's process, the web host's granian workers."""
    hosts = {f"gRPC host {index + 1}": [cluster.grpc(index).pid] for index in range(len(GRPC_HOSTS))}
    web = cluster.processes["web"].pid
    children = Path(f"/proc/{web}/task/{web}/children").read_text().split()
    hosts["web host (2 workers x 4 threads)"] = [int(pid) for pid in children]
    return hosts


def rest_load(cluster: Cluster, email: str, running: threading.Event) -> None:
    """Read the post list over REST until ``running`` is cleared, as a browser of the API would."""
    token = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"{cluster.web_url}/api/users/login/",
                data=json.dumps({"email": email, "password": PASSWORD}).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        ).read()
    )["access"]
    while running.is_set():
        request = urllib.request.Request(f"{cluster.web_url}/api/posts/", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def measure_connections(cluster: Cluster, seconds: float) -> dict[str, str]:
    """Count each host's database connections idle, then their peak under a load that keeps every thread busy."""
    port = cluster.postgres_port if cluster.direct else cluster.pgbouncer_port
    hosts = host_pids(cluster)
    time.sleep(2)
    idle = connections_by_pid(port)
    server_idle = sum(connections_by_pid(cluster.postgres_port).values())
    peak: Counter[str] = Counter()
    server_peak = 0
    with Load(cluster.lb_address, "sizing", workers=36, pause=0, mix=("Stream", "List", "Retrieve", "Create")) as load:
        running = threading.Event()
        running.set()
        readers = [
            threading.Thread(target=rest_load, args=(cluster, load.workers[0].email, running)) for _ in range(10)
        ]
        for reader in readers:
            reader.start()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            now = connections_by_pid(port)
            for host, pids in hosts.items():
                peak[host] = max(peak[host], sum(now[pid] for pid in pids))
            server_peak = max(server_peak, sum(connections_by_pid(cluster.postgres_port).values()))
            time.sleep(0.2)
        running.clear()
        for reader in readers:
            reader.join(60)
    time.sleep(3)
    after = connections_by_pid(port)
    figures = {
        host: f"{sum(idle[pid] for pid in pids)} at start, {peak[host]} at most under load, "
        f"{sum(after[pid] for pid in pids)} 3 s after"
        for host, pids in hosts.items()
    }
    figures["load"] = f"{len(load.outcomes)} gRPC calls by 36 clients + REST reads by 10: {summary(load.outcomes)}"
    if not cluster.direct:
        server_after = sum(connections_by_pid(cluster.postgres_port).values())
        figures["PgBouncer to PostgreSQL"] = (
            f"{server_idle} at start, {server_peak} at most under load, {server_after} 3 s after"
        )
    return figures


def drill_sizing(cluster: Cluster, seconds: float = 10.0) -> DrillResult:
    """Measure the database connections each host opens, idle and under load: behind PgBouncer, then at the
    defaults (straight to PostgreSQL, persistent connections). A gRPC host opens at most one per pool thread
    plus the health probe's; a web host one per thread of each worker."""
    result = DrillResult("sizing")
    for direct in (False, True):
        restart_hosts(cluster, direct)
        mode = "defaults, straight to PostgreSQL" if direct else "behind PgBouncer (CONN_MAX_AGE=0)"
        for what, value in measure_connections(cluster, seconds).items():
            result.figures[f"{mode}: {what}"] = value
    restart_hosts(cluster, direct=False)
    return result


def restart_hosts(cluster: Cluster, direct: bool) -> None:
    """Restart the Django hosts pointed at PostgreSQL itself (``direct``) or at PgBouncer."""
    if cluster.direct == direct:
        return
    for name in ["web", *(f"grpc{index + 1}" for index in range(len(GRPC_HOSTS)))]:
        cluster.processes[name].stop()
    cluster.direct = direct
    for index in range(len(GRPC_HOSTS)):
        cluster.start_grpc(index, wait=False)
    for index in range(len(GRPC_HOSTS)):
        cluster.wait_grpc_serving(index)
    cluster.start_web()
    cluster.wait_for(lambda: cluster.balanced() == {"UP"}, "every gRPC host UP in HAProxy")


def probe_retrieve(cluster: Cluster, load: Load, probes: list[tuple[float, str]], stop: threading.Event) -> None:
    """Retrieve a post of the load every 0.2 s through the balancer, never retried; note when each ended and how."""
    worker = load.workers[0]
    post_id = next(iter(worker.posts))
    request = posts_pb2.PostRetrieveRequest(id=post_id)
    with grpc.insecure_channel(cluster.lb_address, options=[("grpc.enable_retries", 0)]) as channel:
        stub = posts_pb2_grpc.PostControllerStub(channel)
        while not stop.is_set():
            try:
                stub.Retrieve(request, metadata=worker.metadata(), timeout=2)
                code = OK
            except grpc.RpcError as error:
                code = error.code().name
            probes.append((time.monotonic(), code))
            time.sleep(0.2)


DRILLS: dict[str, Callable[[Cluster], DrillResult]] = {
    "kill": drill_kill,
    "rolling": drill_rolling,
    "pgbouncer": drill_pgbouncer,
    "redis": drill_redis,
    "redis-hung": drill_redis_hung,
    "postgres": drill_postgres,
    "sizing": drill_sizing,
}
#: The drills CI runs (tests/test_cluster_drills.py): the others take 20 s of outage each.
QUICK = ("kill", "rolling", "pgbouncer", "postgres")


def run_drills(
    names: list[str], report: Callable[[str], None] = print, cluster: Cluster | None = None
) -> list[DrillResult]:
    """Run the drills ``names`` one after the other on ``cluster`` (a new one, stopped at the end, if none)."""
    own = cluster is None
    if cluster is None:
        cluster = Cluster()
        report(f"Starting a cluster (logs in {cluster.run_dir}) ...")
        cluster.start()
    results = []
    try:
        for name in names:
            report(f"-- drill {name} ...")
            result = DRILLS[name](cluster)
            for line in result.lines():
                report(line)
            results.append(result)
            restore(cluster)
    finally:
        if own:
            cluster.stop()
            if all(result.passed for result in results):
                cluster.remove()
            else:
                report(f"Logs kept in {cluster.run_dir}")
    return results
