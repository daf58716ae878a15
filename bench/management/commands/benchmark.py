"""Benchmark the gRPC API, on both transports, against Django REST framework, the floors and a hand-written server.

For each database: create a scratch database, seed it, start the servers one
at a time (``grpcrunserver`` on the ``aio`` and on the ``native`` transport,
granian (DRF and the web process), the plain grpcio floors, the hand-written grpcio + driver server on
grpcio and on pygrpc-native), drive them with h2load (gRPC over h2c) and wrk
(HTTP/1.1), check every call succeeded, then print the table and save it as
JSON and a chart. On 2 cores a second server process has no core of its own,
so Retrieve's cost is reported as CPU per call (server and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from bench import loadgen, measure, report
from bench.collector import SpanCollector
from bench.processes import (
    CpuMeter,
    Server,
    access_token,
    cpu_seconds,
    server_env,
    start_drf,
    start_floor,
    start_grpc,
    start_handwritten,
    start_insert_floor,
    start_web,
)
from posts.models import Post
from users.models import User

ALIAS = "benchmark"
#: The sampling ratio of the tracing measure (OTEL_TRACES_SAMPLER_ARG of parentbased_traceidratio).
TRACING_SAMPLE_RATIO = 0.1


class Command(BaseCommand):
    help = (
        "Seed a scratch database, serve it over gRPC and DRF, load both (and the grpcio floor) "
        "and print one table; save it as JSON and PNG."
    )
    requires_system_checks: list[str] = []

    rows = 100_000
    page_size = 1000
    duration = 5.0
    repeat = 3

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            metavar="URL",
            help="'sqlite' (a file in a temporary directory) or postgres://user@host:port/NAME, a database "
            "that must not exist: it is created and dropped. Repeat for several (default: sqlite).",
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="Seconds, not minutes: 1,000 rows, Python clients, one run each (for CI).",
        )
        parser.add_argument(
            "--tracing-only",
            action="store_true",
            help="Only Retrieve with tracing on (10 %% sampled) against off, in turn on two servers (minutes).",
        )
        parser.add_argument(
            "--tracing-protocol",
            choices=["http/protobuf", "grpc"],
            default="http/protobuf",
            help="OTEL_EXPORTER_OTLP_PROTOCOL of the traced server (default: http/protobuf, the server's default).",
        )
        parser.add_argument("--rows", type=int, help=f"Posts to seed and stream (default {self.rows:,}).")
        parser.add_argument("--duration", type=float, help=f"Seconds per load run (default {self.duration:.0f}).")
        parser.add_argument("--repeat", type=int, help=f"Runs per measure; the median is kept (default {self.repeat}).")
        parser.add_argument("--connections", type=int, default=4, help="Client connections for Retrieve.")
        parser.add_argument("--output", default="bench/results", help="Directory for results.json and results.png.")

    def handle(self, *args, **options):
        self.quick = options["quick"]
        self.tracing_only = options["tracing_only"]
        self.tracing_protocol = options["tracing_protocol"]
        if self.quick:
            self.rows, self.page_size, self.repeat = 1000, 100, 1
        self.rows = options["rows"] or self.rows
        self.duration = options["duration"] or self.duration
        self.repeat = options["repeat"] or self.repeat
        self.connections = options["connections"]
        self.check_tools()
        document: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": report.machine(),
            "settings": {
                "rows": self.rows,
                "page_size": self.page_size,
                "duration_s": self.duration,
                "repeat": self.repeat,
                "quick": self.quick,
                "connections": self.connections,
            },
            "databases": {},
        }
        # Scratch databases are dropped after the results are saved: a DROP can wait on other sessions.
        with contextlib.ExitStack() as scratch:
            for url in options["databases"] or ["sqlite"]:
                label = "PostgreSQL" if url.startswith("postgres") else "SQLite"
                self.stdout.write(f"== {label}")
                with self.scratch_database(url, scratch) as server_url:
                    try:
                        document["databases"][label] = self.run_all(server_url)
                    except measure.Failure as exc:
                        raise CommandError(f"{label}: {exc}") from exc
            self.write_results(document, Path(options["output"]))

    # Set-up ---------------------------------------------------------------------------------

    def check_tools(self) -> None:
        missing = [] if self.quick else loadgen.missing_tools()
        if missing:
            raise CommandError(
                f"{' and '.join(missing)} not found. Install them with `{loadgen.INSTALL_HINT}` "
                "(Debian/Ubuntu), or use --quick."
            )

    @contextlib.contextmanager
    def scratch_database(self, url: str, scratch: contextlib.ExitStack) -> Iterator[str]:
        """Create the database (dropped when ``scratch`` closes), register it as ``benchmark``, migrate it."""
        if url == "sqlite":
            directory = scratch.enter_context(tempfile.TemporaryDirectory(prefix="benchmark-"))
            url = f"sqlite:///{directory}/benchmark.sqlite3"
        else:
            scratch.enter_context(postgres_database(url))
        config = dj_database_url.parse(url, conn_max_age=600)
        connections.settings[ALIAS] = connections.configure_settings(
            {"default": connections.settings["default"], ALIAS: config}
        )[ALIAS]
        try:
            call_command("migrate", database=ALIAS, verbosity=0)
            yield url
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]  # the next database gets a new connection object
            del connections.settings[ALIAS]

    def seed(self) -> tuple[str, str]:
        """Write 10 verified users and ``rows`` posts; return the id of one post and of its owner."""
        users = User.objects.using(ALIAS).bulk_create(
            [User(email=f"bench{index}@example.com", password="!", is_verified=True) for index in range(10)]
        )
        batch = 5000
        for start in range(0, self.rows, batch):
            Post.objects.using(ALIAS).bulk_create(
                Post(owner=users[index % len(users)], title=f"Benchmark post {index}", description="x" * 120)
                for index in range(start, min(start + batch, self.rows))
            )
        post = Post.objects.using(ALIAS).order_by("created", "id").first()
        if post is None:
            raise CommandError("Seeding wrote no post.")
        return str(post.id), str(post.owner_id)

    # The runs ----------------------------------------------------------------------------------

    def run_all(self, server_url: str) -> dict:
        self.stdout.write(f"Seeding {self.rows:,} posts ...")
        post_id, owner_id = self.seed()
        # Every call is authenticated the same way on both sides: as the post's owner, with a JWT.
        self.token = access_token(User.objects.using(ALIAS).get(pk=owner_id))
        results: dict[str, dict] = {name: {} for name in report.SERVERS}
        if self.tracing_only:
            self.run_tracing(server_url, results["grpc"], post_id)
            return results
        self.run_raw_floor(results["floor"])
        for transport, name in report.TRANSPORTS.items():
            with self.serving(start_grpc(server_url, 1, self.token, transport)) as server:
                measure.verify_grpc(server, post_id, self.page_size)
                self.run_grpc(server, results[name], post_id, owner_id)
                if not self.quick:
                    measure.verify_stream(server, Post.objects.using(ALIAS).count())
        self.run_tracing(server_url, results["grpc"], post_id)
        results["grpc"]["retrieve_django_half_cpu_us"] = self.django_half(server_url, post_id)
        with self.serving(start_drf(server_url, 1, self.token)) as server:
            self.run_drf(server, results["drf"], post_id, owner_id)
        with self.serving(start_web(server_url, 1, self.token)) as server:
            measure.verify_connect(server, post_id, self.page_size)
            self.run_connect(server, results["connect"], post_id)
        with self.serving(start_floor(self.rows)) as server:
            self.run_floor_server(server, results["floor"], post_id)
        with self.serving(start_floor(self.rows, aio=True)) as server:
            retrieve = self.median_of(
                lambda: measure.grpc_retrieve(
                    server, post_id, connections_=self.connections, duration=self.duration, quick=self.quick
                )
            )
            results["aio_floor"]["retrieve_rps"] = retrieve.per_second
        for native, name in ((False, "handwritten"), (True, "handwritten_native")):
            with self.serving(start_handwritten(server_url, native=native)) as server:
                self.run_handwritten(server, results[name], post_id)
        with self.serving(start_insert_floor(server_url, owner_id)) as server:
            self.run_insert_floor(server, results["floor"])
        self.check_creates(results)
        return results

    @contextlib.contextmanager
    def serving(self, server: Server) -> Iterator[Server]:
        self.stdout.write(f"-- {server.name} on port {server.port}")
        try:
            yield server
        finally:
            server.stop()

    def median_of(self, run_once) -> loadgen.Run:
        return loadgen.median_run([self.attempt(run_once) for _ in range(self.repeat)])

    def attempt(self, run_once) -> loadgen.Run:
        """Run once; after a failed call, say so and run again once (a second failure stops the benchmark)."""
        try:
            return run_once()
        except measure.Failure as exc:
            self.stdout.write(f"   {exc}; running it again")
            return run_once()

    def measure_retrieve(self, server: Server, out: dict, post_id: str) -> loadgen.Run:
        """Run Retrieve; note the cores each party used and the CPU per call of the server and of PostgreSQL."""
        kwargs = {"duration": self.duration, "quick": self.quick}
        with CpuMeter(server) as cpu:
            retrieve = self.median_of(
                lambda: measure.grpc_retrieve(server, post_id, connections_=self.connections, **kwargs)
            )
        out["retrieve_cores"] = {
            "server": cpu.server,
            "database": cpu.database,
            "load_generator": cpu.load_generator,
        }
        if retrieve.per_second:
            out["retrieve_server_cpu_us"] = cpu.server / retrieve.per_second * 1e6
            if connections[ALIAS].vendor == "postgresql":  # SQLite runs inside the server
                out["retrieve_database_cpu_us"] = cpu.database / retrieve.per_second * 1e6
        return retrieve

    def run_handwritten(self, server: Server, out: dict, post_id: str) -> None:
        """Retrieve and Stream on the hand-written grpcio + driver server (no Django, no token check)."""
        retrieve = self.measure_retrieve(server, out, post_id)
        out["retrieve_rps"] = retrieve.per_second
        out["retrieve_p50_ms"] = retrieve.percentile(0.5)
        out["retrieve_p99_ms"] = retrieve.percentile(0.99)
        streams = [measure.grpc_stream(server, self.rows, quick=self.quick) for _ in range(self.repeat)]
        out["stream_rows_per_s"] = loadgen.median([run.per_second for run, _ in streams])
        out["stream_rss_growth_mb"] = max(growth for _, growth in streams) / 1024

    def run_grpc(self, server: Server, out: dict, post_id: str, owner_id: str) -> None:
        kwargs = {"duration": self.duration, "quick": self.quick}
        retrieve = self.measure_retrieve(server, out, post_id)
        listed = self.median_of(lambda: measure.grpc_list(server, self.page_size, **kwargs))
        create = self.measure_create(out, lambda: measure.grpc_create(server, **kwargs))
        out["batch_create_rows_per_s"] = self.measure_batch_create(server).per_second
        streams = [measure.grpc_stream(server, self.rows, quick=self.quick) for _ in range(self.repeat)]
        self.store(out, retrieve, listed, create, streams)

    def django_half(self, server_url: str, post_id: str) -> float:
        """Return the CPU per call (µs) of a Retrieve's Django half in process, no transport (``bench.django_half``)."""
        calls = "300" if self.quick else "5000"
        command = [sys.executable, "-m", "bench.django_half", post_id, self.token, calls]
        output = subprocess.run(command, env=server_env(server_url), capture_output=True, text=True, check=False)
        if output.returncode:
            raise CommandError(f"bench.django_half failed: {output.stderr.strip() or output.stdout.strip()}")
        cpu_us = float(output.stdout.split()[-1])
        self.stdout.write(f"-- the Django half of Retrieve in process: {cpu_us:.0f} µs of CPU per call")
        return cpu_us

    def run_tracing(self, server_url: str, out: dict, post_id: str) -> None:
        """Retrieve with tracing on at 10 % sampling against off: two servers started together, loaded in turn.

        The traced one exports over OTLP/gRPC to a collector in this process
        (``bench.collector``), as to an agent on the host; its spans are counted
        once the server has stopped and flushed them. Besides the calls per
        second, the server's CPU time per call is kept for each run: on a
        machine others share, it moves less than the throughput.
        """
        kwargs = {"duration": self.duration, "quick": self.quick, "connections_": self.connections}

        def retrieve(server: Server) -> tuple[loadgen.Run, float]:
            before = cpu_seconds(server.serving_pids())
            run = self.attempt(lambda: measure.grpc_retrieve(server, post_id, **kwargs))
            return run, (cpu_seconds(server.serving_pids()) - before) / run.calls * 1e6

        with SpanCollector() as collector:
            traced_env = {
                **collector.env(self.tracing_protocol),
                "OTEL_SERVICE_NAME": "benchmark",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(TRACING_SAMPLE_RATIO),
            }
            off, on = [], []
            with (
                self.serving(start_grpc(server_url, 1, self.token)) as untraced,
                self.serving(start_grpc(server_url, 1, self.token, env=traced_env)) as traced,
            ):
                for _ in range(self.repeat):  # alternated, so that a drift of the machine touches both alike
                    off.append(retrieve(untraced))
                    on.append(retrieve(traced))
        out["retrieve_rps_untraced"] = loadgen.median_run([run for run, _ in off]).per_second
        out["retrieve_rps_traced"] = loadgen.median_run([run for run, _ in on]).per_second
        out["retrieve_cpu_us_untraced"] = loadgen.median([cpu for _, cpu in off])
        out["retrieve_cpu_us_traced"] = loadgen.median([cpu for _, cpu in on])
        out["retrieve_pairs"] = [
            {"off_rps": first.per_second, "on_rps": second.per_second, "off_cpu_us": off_cpu, "on_cpu_us": on_cpu}
            for (first, off_cpu), (second, on_cpu) in zip(off, on, strict=True)
        ]
        out["tracing_protocol"] = self.tracing_protocol
        out["traced_calls"] = sum(run.calls for run, _ in on)
        out["traced_spans_exported"] = collector.count
        self.stdout.write(
            f"   tracing at {TRACING_SAMPLE_RATIO:.0%}: Retrieve {report.fmt(out['retrieve_rps_traced'])} RPC/s "
            f"against {report.fmt(out['retrieve_rps_untraced'])} off, server CPU per call "
            f"{report.fmt(out['retrieve_cpu_us_traced'])} against {report.fmt(out['retrieve_cpu_us_untraced'])} us; "
            f"{out['traced_spans_exported']:,} spans exported for {out['traced_calls']:,} calls"
        )

    def measure_create(self, out: dict, run_once) -> loadgen.Run:
        """Run Create; remember rows written and calls answered, then delete the new rows."""
        before = Post.objects.using(ALIAS).count()
        runs = [self.attempt(run_once) for _ in range(self.repeat)]
        time.sleep(1)  # calls the load generator abandoned at the deadline may still be writing
        out["_created"] = (Post.objects.using(ALIAS).count() - before, sum(run.calls for run in runs))
        self.delete_created()
        return loadgen.median_run(runs)

    def measure_batch_create(self, server: Server) -> loadgen.Run:
        """Run BatchCreate (1,000 rows per call); check every row counted was written, then delete them."""
        before = Post.objects.using(ALIAS).count()
        runs = [
            self.attempt(lambda: measure.grpc_batch_create(server, duration=self.duration, quick=self.quick))
            for _ in range(self.repeat)
        ]
        time.sleep(1)  # calls the load generator abandoned at the deadline may still be writing
        written, counted = Post.objects.using(ALIAS).count() - before, sum(run.calls for run in runs)
        self.delete_created()
        if written < counted:
            raise measure.Failure(f"gRPC BatchCreate: {counted} rows answered but {written} written")
        return loadgen.median_run(runs)

    def delete_created(self) -> None:
        """Delete the rows a write measure created; on PostgreSQL vacuum them away at once.

        BatchCreate leaves hundreds of thousands of dead rows behind: left to
        autovacuum, its work lands in whichever measure runs next, on the
        cores the servers share.
        """
        Post.objects.using(ALIAS).filter(title="Created by the benchmark").delete()
        database = connections[ALIAS]
        if database.vendor == "postgresql":
            with database.cursor() as cursor:
                cursor.execute(f"VACUUM (ANALYZE) {database.ops.quote_name(Post._meta.db_table)}")

    def run_insert_floor(self, server: Server, out: dict) -> None:
        """Create through the plain grpcio servicer that runs the INSERT itself: the floor of Create."""
        run = self.median_of(lambda: measure.grpc_create(server, duration=self.duration, quick=self.quick))
        out["create_rps"] = run.per_second
        self.delete_created()

    def run_drf(self, server: Server, out: dict, post_id: str, owner_id: str) -> None:
        kwargs = {"duration": self.duration, "quick": self.quick}
        retrieve = self.median_of(
            lambda: measure.drf_retrieve(server, post_id, connections_=self.connections, **kwargs)
        )
        listed = self.median_of(lambda: measure.drf_list(server, self.page_size, **kwargs))
        create = self.measure_create(out, lambda: measure.drf_create(server, owner_id, **kwargs))
        exports = [measure.drf_export(server, self.rows) for _ in range(self.repeat)]
        self.store(out, retrieve, listed, create, exports)

    def run_connect(self, server: Server, out: dict, post_id: str) -> None:
        """Retrieve (Connect JSON) and List (Connect binary) through the production web command, one worker."""
        kwargs = {"duration": self.duration, "quick": self.quick}
        retrieve = self.median_of(
            lambda: measure.connect_retrieve(server, post_id, connections_=self.connections, **kwargs)
        )
        listed = self.median_of(lambda: measure.connect_list(server, self.page_size, **kwargs))
        out["retrieve_rps"] = retrieve.per_second
        out["retrieve_p50_ms"] = retrieve.percentile(0.5)
        out["retrieve_p99_ms"] = retrieve.percentile(0.99)
        out["list_ms"] = listed.percentile(0.5)
        out["list_per_s"] = listed.per_second
        self.stdout.write("   " + ", ".join(f"{key} {report.fmt(value)}" for key, value in out.items()))

    def run_floor_server(self, server: Server, out: dict, post_id: str) -> None:
        kwargs = {"duration": self.duration, "quick": self.quick}
        retrieve = self.median_of(
            lambda: measure.grpc_retrieve(server, post_id, connections_=self.connections, **kwargs)
        )
        out["retrieve_rps"] = retrieve.per_second
        out["retrieve_p50_ms"] = retrieve.percentile(0.5)
        out["retrieve_p99_ms"] = retrieve.percentile(0.99)
        wire_list = self.median_of(lambda: measure.grpc_list(server, 1000, **kwargs))
        out["list_over_wire_ms"] = wire_list.percentile(0.5)
        stream, _ = measure.grpc_stream(server, self.rows, quick=self.quick)
        out["stream_over_wire_rows_per_s"] = stream.per_second

    def run_raw_floor(self, out: dict) -> None:
        """Time a raw cursor fetch plus protobuf encoding in this process."""
        listed = measure.raw_list(ALIAS, self.page_size, repeat=max(5, self.repeat * 5))
        out["list_ms"] = listed.percentile(0.5)
        out["list_per_s"] = 1000 / out["list_ms"]
        streams = [measure.raw_stream(ALIAS) for _ in range(self.repeat)]
        out["stream_rows_per_s"] = loadgen.median([run.per_second for run, _ in streams])

    def store(self, out: dict, retrieve, listed, create, streams) -> None:
        out["retrieve_rps"] = retrieve.per_second
        out["retrieve_p50_ms"] = retrieve.percentile(0.5)
        out["retrieve_p99_ms"] = retrieve.percentile(0.99)
        out["list_ms"] = listed.percentile(0.5)
        out["list_per_s"] = listed.per_second
        out["create_rps"] = create.per_second
        out["stream_rows_per_s"] = loadgen.median([run.per_second for run, _ in streams])
        out["stream_rss_growth_mb"] = max(growth for _, growth in streams) / 1024
        figures = {key: value for key, value in out.items() if key[0] != "_" and not isinstance(value, dict)}
        self.stdout.write("   " + ", ".join(f"{key} {report.fmt(value)}" for key, value in figures.items()))

    def check_creates(self, results: dict) -> None:
        """Every Create the load generator counted as done must have written its row."""
        for name in (*report.TRANSPORTS.values(), "drf"):
            written, counted = results[name].pop("_created")
            if written < counted:
                raise measure.Failure(f"{name} Create: {counted} calls answered but {written} rows written")

    # Output ------------------------------------------------------------------------------------

    def write_results(self, document: dict, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        saved = ["tracing.json"] if self.tracing_only else ["results.json", "results.png"]
        report.save_json(directory / saved[0], document)  # --tracing-only leaves the full run's files alone
        if not self.tracing_only:
            report.save_chart(directory / saved[1], document)
        machine = document["machine"]
        self.stdout.write(
            f"\nMachine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, {machine['os']}, "
            f"Python {machine['python']}\n"
        )
        for label, results in document["databases"].items():
            if self.tracing_only:
                self.stdout.write(report.tracing_summary(label, results))
                continue
            self.stdout.write(report.table(label, results) + "\n")
            for transport, name in report.TRANSPORTS.items():
                default = " (the default)" if transport == report.DEFAULT_TRANSPORT else ""
                self.stdout.write(f"  Targets on the {transport} transport{default}:")
                for target, value, met in report.targets(results, name):
                    self.stdout.write(f"  {'met ' if met else 'MISS'}  {target}: {value}")
            self.stdout.write("")
        self.stdout.write(f"Saved {' and '.join(str(directory / name) for name in saved)}.")


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[None]:
    """Create the PostgreSQL database named in ``url`` and drop it afterwards; refuse one that exists."""
    import psycopg2
    from psycopg2 import sql

    config = dj_database_url.parse(url)
    name = config["NAME"]
    admin = psycopg2.connect(
        dbname="postgres",
        user=config["USER"],
        password=config["PASSWORD"] or None,
        host=config["HOST"] or None,
        port=config["PORT"] or None,
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                raise CommandError(
                    f"Database {name!r} already exists. Name a scratch database the benchmark may create and drop."
                )
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield
        finally:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()
