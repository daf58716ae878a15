"""Run the local cluster (``python3 dev.py cluster``) or its drills (``python3 dev.py drill [name ...]``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from cluster.hosts import Cluster, ClusterError


def up(lb_port: int) -> int:
    """Start the cluster, print its endpoints, and stop everything it started on Ctrl-C or SIGTERM."""
    cluster = Cluster(lb_port=lb_port)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"Starting the cluster (logs in {cluster.run_dir}) ...", flush=True)
    try:
        cluster.start()
        width = max(len(what) for what, _ in cluster.endpoints())
        for what, where in cluster.endpoints():
            print(f"  {what:<{width}}  {where}")
        print("Ctrl-C or SIGTERM stops every process of the cluster.", flush=True)
        stopping.wait()
    except ClusterError as error:
        print(f"The cluster did not start: {error}", file=sys.stderr)
        return 1
    finally:
        print("Stopping the cluster ...", flush=True)
        cluster.stop()
        cluster.remove()
    return 0


def pgbouncer(postgres: str, port: int) -> int:
    """Run only a PgBouncer (``deploy/cluster/pgbouncer.ini``) in front of every database of ``postgres`` (host:port).

    For the test suite through PgBouncer (docs/guides/testing.md); stops on Ctrl-C or SIGTERM.
    """
    host, _, postgres_port = postgres.rpartition(":")
    cluster = Cluster()
    if port:
        cluster.pgbouncer_port = port
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        cluster.start_pgbouncer(databases=f"* = host={host} port={postgres_port}")
        print(
            f"PgBouncer (transaction mode) in front of {postgres}: postgres://postgres@127.0.0.1:{cluster.pgbouncer_port}/"
        )
        print("Ctrl-C or SIGTERM stops it.", flush=True)
        stopping.wait()
    except ClusterError as error:
        print(f"PgBouncer did not start: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        cluster.remove()
    return 0


def drill(names: list[str]) -> int:
    """Run the drills ``names`` (every one if none) against a new cluster; 1 if any failed."""
    from cluster.drills import DRILLS, run_drills

    unknown = [name for name in names if name not in DRILLS]
    if unknown:
        print(f"Unknown drill(s): {', '.join(unknown)}; the drills are {', '.join(DRILLS)}", file=sys.stderr)
        return 2
    results = run_drills(names or list(DRILLS), report=lambda line: print(line, flush=True))
    return 0 if all(result.passed for result in results) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the cluster until Ctrl-C or SIGTERM")
    start.add_argument("--port", type=int, default=0, help="port of the balancer on 127.0.0.1 (default: a free one)")
    drills = commands.add_parser("drill", help="run drills against a new cluster")
    drills.add_argument("names", nargs="*", help="drills to run (default: every one)")
    bouncer = commands.add_parser("pgbouncer", help="run only a PgBouncer in front of a PostgreSQL")
    bouncer.add_argument("--postgres", default="127.0.0.1:5432", help="host:port of PostgreSQL (default: %(default)s)")
    bouncer.add_argument("--port", type=int, default=6432, help="PgBouncer's port on 127.0.0.1 (default: %(default)s)")
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        return up(arguments.port)
    if arguments.command == "pgbouncer":
        return pgbouncer(arguments.postgres, arguments.port)
    return drill(arguments.names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
