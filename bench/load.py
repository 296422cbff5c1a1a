"""Load benchmark of issue 7: the API under concurrent clients, in the production layout.

    .venv/bin/python -m bench.load [--workers 4] [--duration 10] [--clients 50 200] [--jobs 5]

Starts, in a temporary folder, a throw-away PostgreSQL and Redis (``bench/services.py``), runs
the migrations, then ``uvicorn slimforge.app.asgi:app --workers N`` and one Celery worker
(``slimforge worker``), all configured through ``SLIMFORGE_*`` variables like
production. Then:

1. Submit-to-start delay: with the worker idle, a handful of cheap jobs (a tiny random Llama,
   ``svd`` on 4096 calibration tokens, about a second each) are submitted one at a time; the
   delay is the job's ``started_at`` minus its ``created_at``, both stamped by the servers.
2. Throughput: for each client count, every client loops ``POST /v1/jobs`` for ``--duration``
   seconds, then ``GET /v1/jobs/{id}`` on the jobs its tenant submitted. The worker is stopped
   first, so these jobs stay queued: the worker would otherwise spend the 2 cores running
   thousands of jobs, and the API, not the worker, is what is measured here.

Prints a markdown report: settings, the table, the CPU split and the issue's bar. Every server
is stopped and the temporary folder removed at the end (the queued jobs go with them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from sqlalchemy import text

from bench.loadgen import Conn, Result, closed_loop, open_connections, open_loop
from bench.services import free_port, fresh_database, postgres_server, redis_server
from slimforge.app.auth.service import create_api_key
from slimforge.app.db import make_engine, make_session_factory, session_scope
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

TENANTS = 10  # a few shared keys: client i uses key i % TENANTS
TERMINAL = {"succeeded", "failed", "cancelled"}
# The bar.
READ_P99_MS = 50.0
START_DELAY_S = 1.0
# Well above the API's DB-pool checkout timeout, so a request stuck on the pool shows up as the
# server's own 503 rather than as a client timeout; the figure bounds how long a phase drains.
CLIENT_TIMEOUT_S = 35.0


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    keys: list[str]
    body: dict[str, Any]
    folder: Path
    max_connections: int  # PostgreSQL's
    pids: dict[str, int] = field(default_factory=dict)  # process group name -> root pid


def _pid_listening_on(port: int) -> int:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise RuntimeError(f"no process listens on port {port}")


def _make_inputs(folder: Path) -> dict[str, Any]:
    """A tiny model and calibration text the worker compresses in about a second."""
    from bench.tiny import save_tiny_llama  # imports torch: only here

    model = save_tiny_llama(folder / "tiny-llama")
    calib = folder / "calib.txt"
    calib.write_text((ROOT / "data" / "corpus" / "calibration.txt").read_text()[:40000])
    return {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(calib), "max_tokens": 4096, "seq_len": 128},
    }


def _env(folder: Path, database_url: str, broker_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "SLIMFORGE_HOME": str(folder / "home"),
        "SLIMFORGE_DATABASE_URL": database_url,
        "SLIMFORGE_BROKER_URL": broker_url,
        "SLIMFORGE_ARTIFACT_DIR": str(folder / "artifacts"),
        "SLIMFORGE_LOCAL_ROOTS": f'["{folder}"]',
        "SLIMFORGE_DEVICE": "cpu",
        # Off for the throughput measurement: 600/min per key per process would cap it.
        "SLIMFORGE_RATE_LIMIT_PER_MINUTE": "0",
    }


def _create_keys(database_url: str) -> tuple[list[str], int]:
    """API keys of the tenants, and the server's max_connections (for the report)."""
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            keys = [create_api_key(session, tenant_name=f"load-{i}") for i in range(TENANTS)]
            limit = int(session.execute(text("SHOW max_connections")).scalar_one())
            return keys, limit
    finally:
        engine.dispose()


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to a file; SIGTERM (a graceful stop) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_log(log: Path, text: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while log.read_text(errors="replace").count(text) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"'{text}' not seen {count} times in {log} after 120 s")
        time.sleep(0.2)


@contextmanager
def stack(workers: int) -> Iterator[tuple[Stack, Callable[[], subprocess.Popen[bytes]]]]:
    """Servers up; yields the stack and a function that starts the Celery worker."""
    with ExitStack() as es:
        folder = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="sf-load-")))
        redis_url = es.enter_context(redis_server())
        database_url = fresh_database(es.enter_context(postgres_server()), "slimforge")
        upgrade(Settings(home=folder / "home", database_url=database_url))
        env = _env(folder, database_url, redis_url)
        port = free_port()
        log = folder / "api.log"
        host = ["--host", "127.0.0.1", "--port", str(port)]
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "slimforge.app.asgi:app",
            *host,
            "--workers",
            str(workers),
        ]
        api = es.enter_context(_process(cmd, env, log))
        # Every worker process is serving before the clock starts.
        _wait_for_log(log, "Application startup complete", workers, api)
        keys, max_connections = _create_keys(database_url)
        s = Stack(
            base_url=f"http://127.0.0.1:{port}",
            env=env,
            keys=keys,
            body=_make_inputs(folder),
            folder=folder,
            max_connections=max_connections,
        )
        s.pids = {
            "API (uvicorn)": api.pid,
            "PostgreSQL": _pid_listening_on(int(database_url.rsplit(":", 1)[1].split("/")[0])),
            "Redis": _pid_listening_on(int(redis_url.rsplit(":", 1)[1].split("/")[0])),
        }

        def start_worker() -> subprocess.Popen[bytes]:
            wlog = folder / "worker.log"
            worker = [sys.executable, "-m", "slimforge.cli", "worker"]
            proc = es.enter_context(_process(worker, env, wlog))
            _wait_for_log(wlog, " ready.", 1, proc)  # Celery's banner line once consuming
            s.pids["worker (Celery)"] = proc.pid
            return proc

        yield s, start_worker


# --- CPU accounting --------------------------------------------------------------------------


def _group_cpu(pid: int) -> float:
    """CPU seconds of a process tree, reaped children included (PostgreSQL backends exit)."""
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: _group_cpu(pid) for name, pid in pids.items()}
    me = psutil.Process().cpu_times()  # not its children: they are the servers
    snap["load generator"] = me.user + me.system
    machine = psutil.cpu_times()
    snap["_busy"] = machine.user + machine.system + machine.nice + machine.irq + machine.softirq
    # Loopback TCP is mostly processed in soft interrupts, charged to no process.
    snap["_interrupts"] = machine.irq + machine.softirq
    snap["_wall"] = time.monotonic()
    return snap


def cpu_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Share of the machine's CPU per group over the interval, in % of all cores."""
    capacity = (after["_wall"] - before["_wall"]) * (os.cpu_count() or 1)
    names = [n for n in after if not n.startswith("_")]
    split = {n: 100 * (after[n] - before.get(n, 0.0)) / capacity for n in names}
    busy = 100 * (after["_busy"] - before["_busy"]) / capacity
    split["kernel interrupts"] = 100 * (after["_interrupts"] - before["_interrupts"]) / capacity
    split["other processes"] = max(0.0, busy - sum(split.values()))
    split["idle"] = max(0.0, 100 - busy)
    return split


# --- load ------------------------------------------------------------------------------------


async def _connections(s: Stack, count: int) -> list[Conn]:
    """``count`` keep-alive connections, client i with the key of tenant i mod TENANTS."""
    u = urlsplit(s.base_url)
    auth = [{"Authorization": f"Bearer {key}"} for key in s.keys]
    host, port = u.hostname or "", u.port or 80
    return await open_connections(
        host, port, lambda i: auth[i % TENANTS], count, timeout=CLIENT_TIMEOUT_S
    )


async def _phase(s: Stack, run: Awaitable[Result]) -> Result:
    """Run a phase and note the machine's CPU split over it."""
    before = cpu_snapshot(s.pids)
    result = await run
    result.cpu = cpu_split(before, cpu_snapshot(s.pids))
    return result


async def throughput(s: Stack, clients: int, duration: float, poll_interval: float) -> list[Result]:
    """Submissions, then status reads of the jobs just submitted (tenant-scoped, so by key):
    closed loops, then every client polling once per ``poll_interval`` (open loop)."""
    submitted: list[list[str]] = [[] for _ in range(TENANTS)]

    async def submit(c: Conn, i: int) -> tuple[int, bytes]:
        # Like the SDK, every submit carries an Idempotency-Key (one more lookup per submit).
        status, body = await c.request(
            "POST", "/v1/jobs", body=s.body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        if status == 202:
            submitted[i % TENANTS].append(json.loads(body)["id"])
        return status, body

    async def read(c: Conn, i: int) -> tuple[int, bytes]:
        return await c.request("GET", f"/v1/jobs/{random.choice(submitted[i % TENANTS])}")

    conns = await _connections(s, clients)
    try:
        writes = await _phase(s, closed_loop("submit `POST /v1/jobs`", conns, duration, submit))
        if not all(submitted):
            raise RuntimeError(f"some tenant submitted no job: {writes.errors}")
        status = "status `GET /v1/jobs/{id}`"
        reads = await _phase(s, closed_loop(status, conns, duration, read))
        polls = await _phase(s, open_loop(status, conns, duration, poll_interval, read))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return [writes, reads, polls]


async def warm_up(s: Stack) -> None:
    """Open connections, fill the DB pools and the shape cache before anything is timed."""
    conns = await _connections(s, 20)
    try:
        result = await closed_loop(
            "warm-up", conns, 2.0, lambda c, _: c.request("GET", "/v1/jobs?limit=1")
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    if result.error_count:
        raise RuntimeError(f"warm-up failed: {result.errors}")


async def start_delays(s: Stack, jobs: int) -> list[float]:
    """Submit-to-start delay of jobs submitted one at a time to the idle worker (seconds).

    One job runs first untimed: a fresh worker's first job pays for importing the ML stack.
    """
    headers = {"Authorization": f"Bearer {s.keys[0]}"}
    delays = []
    async with httpx.AsyncClient(base_url=s.base_url, headers=headers, timeout=60) as c:
        for n in range(jobs + 1):
            r = await c.post("/v1/jobs", json=s.body)
            r.raise_for_status()
            job = await _wait_terminal(c, r.json()["id"])
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
            if n:
                started = datetime.fromisoformat(job["started_at"])
                delays.append((started - datetime.fromisoformat(job["created_at"])).total_seconds())
    return delays


async def _wait_terminal(c: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = (await c.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not end within 120 s")


# --- report ----------------------------------------------------------------------------------


def print_report(
    args: argparse.Namespace,
    results: list[Result],
    delays: list[float],
    max_connections: int,
    log_errors: dict[str, int],
) -> None:
    print(f"# slimforge load benchmark (issue 7), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()}; uvicorn --workers "
        f"{args.workers}, one Celery worker (--pool solo), PostgreSQL, Redis — all on this "
        "machine, sharing its cores with the load generator.\n"
    )
    print("Settings:")
    print(
        "- SLIMFORGE_RATE_LIMIT_PER_MINUTE=0 (per-key rate limit **off** for the throughput "
        "measurement); tenant quotas unset (unlimited); everything else default (INFO JSON "
        "logs and uvicorn access log, to files)"
    )
    print(
        f"- {TENANTS} tenants, one API key each, shared by the clients (client i uses key "
        "i mod 10); one keep-alive HTTP/1.1 connection per client, opened before timing "
        "(bench/loadgen.py: a minimal client, so the generator takes little of the 2 cores)"
    )
    print(
        "- closed loop: each client sends its next request when the last answered (the most "
        "load N clients make; latency ≈ N / throughput by Little's law); "
        f"every {args.poll_interval:g} s: each client reads its job once per interval, as the "
        "SDK's and CLI's `wait` do (latency counted from the planned send time)"
    )
    print(
        f"- {args.duration:g} s per phase; submits carry an Idempotency-Key; reads pick a "
        "random job of the client's tenant; the worker is stopped during throughput, so "
        "submitted jobs stay queued"
    )
    print(
        "- PostgreSQL and Redis are throw-away servers (bench/services.py): PostgreSQL with "
        "fsync=off, Redis without persistence — commits are cheaper than on a durable server"
    )
    # The pool settings every API process gets (the benchmark does not override them).
    defaults = Settings(home=Path(tempfile.gettempdir()))
    pool = defaults.db_pool_size + defaults.db_max_overflow
    print(
        f"- DB pool per API process: {pool} connections ({defaults.db_pool_size} + "
        f"{defaults.db_max_overflow} overflow, {defaults.db_pool_timeout_seconds:g} s checkout "
        f"timeout, then 503); {args.workers} processes x {pool} = {args.workers * pool} vs "
        f"PostgreSQL max_connections {max_connections}"
    )
    print(f"- client timeout {CLIENT_TIMEOUT_S:g} s; job body: svd ratio 0.8 on a tiny Llama\n")

    print("| operation | clients | load | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        kinds = ", ".join(f"{n} x {kind}" for kind, n in sorted(r.errors.items()))
        errors = f"{r.error_count} ({kinds})" if r.errors else "0"
        print(
            f"| {r.operation} | {r.clients} | {r.mode} | {r.requests} | "
            f"{len(r.latencies) / r.seconds:.0f} | {r.percentile_ms(50):.1f} | "
            f"{r.percentile_ms(99):.1f} | {errors} |"
        )
    delays_ms = sorted(1000 * d for d in delays)
    print(
        f"| submit → worker start (idle worker, one at a time) | 1 | - | {len(delays)} | - | "
        f"{delays_ms[len(delays_ms) // 2]:.0f} | max {delays_ms[-1]:.0f} | 0 |\n"
    )
    print(f"Submit → start delays (ms): {', '.join(f'{d:.0f}' for d in delays_ms)}\n")

    names = list(results[0].cpu)
    print("CPU split during each phase (% of all cores):\n")
    print("| phase | clients | load | " + " | ".join(names) + " |")
    print("|---|---:|---|" + "---:|" * len(names))
    for r in results:
        cells = " | ".join(f"{r.cpu[n]:.0f}" for n in names)
        print(f"| {r.operation.split()[0]} | {r.clients} | {r.mode} | {cells} |")
    print()
    if log_errors:
        print(
            "Server-side errors in the API log: "
            + ", ".join(f"{n} x {k}" for k, n in log_errors.items())
        )
        print()
    print_limits(results)
    print_verdict(results, delays)


def print_limits(results: list[Result]) -> None:
    """What bounds the figures: CPU per request, and the closed loop's latency floor."""
    cores = os.cpu_count() or 1
    print("Per request (successful ones):")
    for r in results:
        done = max(1, len(r.latencies))
        api_ms = 1000 * r.cpu["API (uvicorn)"] / 100 * cores * r.seconds / done
        pg_ms = 1000 * r.cpu["PostgreSQL"] / 100 * cores * r.seconds / done
        line = (
            f"- {r.operation.split()[0]}, {r.clients} clients, {r.mode}: {api_ms:.2f} ms API "
            f"CPU + {pg_ms:.2f} ms PostgreSQL CPU"
        )
        if r.mode == "closed loop":
            # Little's law: a closed loop of N clients waits about N / throughput per request.
            line += f"; clients / throughput = {1000 * r.clients / (done / r.seconds):.0f} ms"
        print(line)
    print()


def print_verdict(results: list[Result], delays: list[float]) -> None:
    top = max(r.clients for r in results)
    reads = [r for r in results if r.clients == top and r.operation.startswith("status")]
    errors = sum(r.error_count for r in results)
    checks = [
        (
            f"status reads p99 < {READ_P99_MS:.0f} ms at {top} clients, {r.mode}",
            r.percentile_ms(99) < READ_P99_MS,
            f"{r.percentile_ms(99):.1f} ms",
        )
        for r in reads
    ]
    checks += [
        ("zero errors", errors == 0, f"{errors} errors"),
        (
            f"submit → start < {START_DELAY_S:g} s",
            max(delays) < START_DELAY_S,
            f"max {1000 * max(delays):.0f} ms",
        ),
    ]
    print("Issue 7 bar:")
    for name, ok, value in checks:
        print(f"- {name}: {'PASS' if ok else 'FAIL'} ({value})")


def api_log_errors(log: Path) -> dict[str, int]:
    """Why the server answered 5xx, from its log (the response bodies only say 'internal')."""
    text = log.read_text(errors="replace")
    found = {
        "DB pool checkout timeout (→ 503 busy)": text.count("database pool exhausted"),
        # The log names only the class; with more pooled connections than PostgreSQL's
        # max_connections this is "sorry, too many clients already".
        "'database unavailable' (psycopg OperationalError → 503)": text.count(
            "database unavailable"
        ),
    }
    return {k: n for k, n in found.items() if n}


# --- main ------------------------------------------------------------------------------------


async def measure(
    s: Stack, start_worker: Callable[[], subprocess.Popen[bytes]], args: argparse.Namespace
) -> tuple[list[Result], list[float]]:
    worker = start_worker()
    delays = await start_delays(s, args.jobs)
    stop(worker)  # from here on, submitted jobs stay queued (see the docstring)
    s.pids.pop("worker (Celery)")
    await warm_up(s)
    results = []
    for clients in args.clients:
        results += await throughput(s, clients, args.duration, args.poll_interval)
    return results, delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 4 like the Dockerfile's API image (`uvicorn ... --workers 4`).
    parser.add_argument("--workers", type=int, default=4, help="uvicorn worker processes")
    parser.add_argument("--duration", type=float, default=10, help="seconds per phase")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--jobs", type=int, default=5, help="jobs timed for submit → start")
    # The SDK's and CLI's default: `wait` polls its job once a second.
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between a polling client's reads"
    )
    args = parser.parse_args()
    with stack(args.workers) as (s, start_worker):
        results, delays = asyncio.run(measure(s, start_worker, args))
        log_errors = api_log_errors(s.folder / "api.log")  # read before the folder goes
    print_report(args, results, delays, s.max_connections, log_errors)


if __name__ == "__main__":
    main()
