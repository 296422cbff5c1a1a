"""Client commands of ``slimforge``: talk to a running service through the SDK only.

    slimforge config [--url U] [--api-key K]     set / show the server and key
    slimforge submit SPEC|flags [--wait]          submit a job (YAML/JSON body, or flags)
    slimforge status ID | wait ID | cancel ID     one job
    slimforge events ID [--follow]                its event log (live with --follow)
    slimforge list [--status S]                   the tenant's jobs, newest first
    slimforge download ID DEST                    the artifact, sha256-checked
    slimforge methods                             the compression methods

``--json`` prints JSON on stdout (``events``: one object a line). The server and key come from
``--url`` / ``--api-key``, then ``SLIMFORGE_URL`` / ``SLIMFORGE_API_KEY``, then the config file.

Exit codes: 0 success; 1 error (the job failed, an API error, a checksum mismatch); 2 the job
was cancelled (and argparse's usage errors); 3 ``wait`` timed out; 4 the server cannot be
reached; 5 the API key was refused; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimforge.cli.client_output import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    err,
    guarded,
    print_json,
)
from slimforge.client._render import Progress, format_event, mask, size, summary
from slimforge.client._spec import build_job_body

if TYPE_CHECKING:
    from slimforge.client import Client

__all__ = ["add_client_commands"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


# --- commands -----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    from slimforge.client import Client

    return Client(args.url, args.api_key, max_retries=args.retries)


def _config(args: argparse.Namespace) -> int:
    from slimforge.client import resolve_config, save_config

    if args.url is not None and not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url must start with http:// or https://, not {args.url!r}")
    if args.url is not None or args.api_key is not None:
        path = save_config(url=args.url, api_key=args.api_key)
        if not args.json:
            print(f"saved {path}", file=sys.stderr)
    cfg = resolve_config()
    if args.json:
        print_json(
            {
                "path": str(cfg.path),
                "url": cfg.url,
                "url_source": cfg.url_source,
                "api_key": mask(cfg.api_key),
                "api_key_source": cfg.api_key_source,
            }
        )
        return 0
    env_names = {"url": "env SLIMFORGE_URL", "key": "env SLIMFORGE_API_KEY"}
    url_from = env_names["url"] if cfg.url_source == "env" else cfg.url_source
    key_from = env_names["key"] if cfg.api_key_source == "env" else cfg.api_key_source
    print(f"config file  {cfg.path}" + ("" if cfg.path.exists() else " (not written yet)"))
    print(f"url          {cfg.url}  (from {url_from})")
    key = f"{mask(cfg.api_key)}  (from {key_from})" if cfg.api_key else "not set"
    print(f"api key      {key}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    body = build_job_body(args)
    with _client(args) as client:
        job = client.jobs.create(body, idempotency_key=args.idempotency_key)
        if not args.wait:
            if args.json:
                print_json(job.model_dump(mode="json"))
            else:
                print(job.id)
                print(f"submitted {job.id} ({job.status})", file=sys.stderr)
            return 0
        print(f"submitted {job.id}", file=sys.stderr, flush=True)
        return _follow_job(client, job.id, args)


def _follow_job(client: Client, job_id: str, args: argparse.Namespace) -> int:
    from slimforge.client import JobCancelled, JobFailed, WaitTimeout

    progress = Progress()
    try:
        job = client.jobs.wait(
            job_id, timeout=args.timeout, poll_interval=args.poll, on_event=progress
        )
        code = 0
    except (JobFailed, JobCancelled) as exc:
        job, code = exc.job, EXIT_FAILED if isinstance(exc, JobFailed) else EXIT_CANCELLED
    except WaitTimeout as exc:
        progress.close()
        if args.json:
            print_json({"error": {"code": "timeout", "message": str(exc), "job_id": job_id}})
        err(str(exc))
        return EXIT_TIMEOUT
    finally:
        progress.close()
    if args.json:
        print_json(job.model_dump(mode="json"))
    else:
        print("\n".join(summary(job)))
    if code == EXIT_FAILED:
        err(f"job {job.id} failed" + (f" at {job.stage}" if job.stage else "") + f": {job.error}")
    elif code == EXIT_CANCELLED:
        err(f"job {job.id} was cancelled")
    return code


def _wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _follow_job(client, args.id, args)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.jobs.get(args.id)
    if args.json:
        print_json(job.model_dump(mode="json"))
    else:
        print("\n".join(summary(job)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.jobs.cancel(args.id)
    if args.json:
        print_json(job.model_dump(mode="json"))
    elif job.status == "cancelled":
        print(f"{job.id} cancelled")
    else:
        print(f"{job.id} cancel requested: it stops at the next block (status {job.status})")
    return 0


def _events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for event in client.jobs.events(args.id, after=args.after, stream=args.follow):
            if args.json:
                print(event.model_dump_json(), flush=True)
            else:
                print(format_event(event), flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = list(client.jobs.list(args.status, limit=min(args.limit, 200), max_items=args.limit))
    if args.json:
        print_json([j.model_dump(mode="json") for j in jobs])
        return 0
    if not jobs:
        print("no jobs", file=sys.stderr)
        return 0
    width = max(len(j.id) for j in jobs)
    print(f"{'ID':<{width}}  {'STATUS':<10} {'STAGE':<12} {'METHOD':<10} CREATED")
    for j in jobs:
        created = f"{j.created_at.astimezone():%Y-%m-%d %H:%M:%S}"
        print(f"{j.id:<{width}}  {j.status:<10} {j.stage or '-':<12} {j.method:<10} {created}")
    return 0


def _download(args: argparse.Namespace) -> int:
    tty = sys.stderr.isatty()

    def progress(path: str, done: int, total: int) -> None:
        if tty:
            pct = f"{100 * done / total:.0f}%" if total else ""
            sys.stderr.write(f"\r{path}  {size(done)} / {size(total)}  {pct}".ljust(79))
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    dest = Path(args.dest)
    with _client(args) as client:
        listing = client.jobs.artifacts(args.id)
        paths = client.jobs.download(args.id, dest, args.file, on_progress=progress)
    by_path = {f.path: f for f in listing.files}
    rel = [p.relative_to(dest).as_posix() for p in paths]
    if args.json:
        files = [
            {"path": r, "file": str(p), "size": by_path[r].size, "sha256": by_path[r].sha256}
            for r, p in zip(rel, paths, strict=True)
        ]
        print_json({"job_id": args.id, "dest": str(dest), "files": files})
        return 0
    for p in paths:
        print(p)
    total = sum(by_path[r].size for r in rel)
    print(f"downloaded {len(paths)} files ({size(total)}), sha256 verified", file=sys.stderr)
    return 0


def _methods(args: argparse.Namespace) -> int:
    with _client(args) as client:
        methods = client.methods()
    if args.json:
        print_json([m.model_dump(mode="json") for m in methods])
        return 0
    for m in methods:
        print(f"{m.name:<10} {m.summary}")
    return 0


# --- wiring -------------------------------------------------------------------------------


def add_client_commands(sub: Any) -> None:
    """Register the client commands on the ``slimforge`` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--url", help="server URL (default: SLIMFORGE_URL, then the config)")
    common.add_argument("--api-key", help="API key (default: SLIMFORGE_API_KEY, then the config)")
    common.add_argument(
        "--retries", type=int, default=3, help="retries on 429/502/503/504 and connection errors"
    )
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--timeout", type=float, help="give up after this many seconds (exit 3)")
    waiting.add_argument("--poll", type=float, default=1.0, help="seconds between polls")

    p = sub.add_parser("config", help="client: set or show the server URL and API key")
    p.add_argument("--url", help="save the server URL")
    p.add_argument("--api-key", help="save the API key")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.set_defaults(func=guarded(_config))

    p = sub.add_parser("submit", parents=[common, waiting], help="client: submit a job")
    p.add_argument("spec", nargs="?", help="YAML or JSON file with the POST /v1/jobs body ('-')")
    p.add_argument("--model", help="Hub id, local folder or .gguf file")
    p.add_argument("--revision", default="main", help="Hub revision of --model")
    p.add_argument("--gguf-file", help="GGUF file name inside the --model folder")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="fraction of parameters to keep")
    target.add_argument("--params", type=int, help="parameters to keep")
    p.add_argument("--method", help="auto, svd, lillama or minitron (see 'slimforge methods')")
    p.add_argument("-p", "--param", action="append", default=[], help="method KEY=VALUE")
    p.add_argument(
        "--calibration",
        help="text file, Hub dataset id, 'synthetic' (text the model writes) or 'general' "
        "(the default: general English + text the model writes)",
    )
    p.add_argument("--calibration-tokens", type=int, help="calibration max_tokens")
    p.add_argument("--seq-len", type=int, help="sequence length of calibration and evaluation")
    p.add_argument("--evaluation", help="held-out text file or Hub dataset id")
    p.add_argument("--distill-tokens", type=int, help="add a kd stage of this many tokens")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        help="output.formats: safetensors, gguf (repeatable; default: the server's rule)",
    )
    p.add_argument(
        "--gguf-type",
        action="append",
        help="output.gguf_type: f16, q8_0, q4_k_m, … (repeatable; implies --format gguf)",
    )
    p.add_argument("--dtype", help="output.dtype: float32, float16 or bfloat16")
    p.add_argument("--hub-repo", help="output.hub_repo: push the artifact to this Hub repo")
    p.add_argument("--meta", dest="metadata", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--idempotency-key", help="the same key replays the same job")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.set_defaults(func=guarded(_submit))

    p = sub.add_parser("status", parents=[common], help="client: a job's status and metrics")
    p.add_argument("id")
    p.set_defaults(func=guarded(_status))

    p = sub.add_parser(
        "wait", parents=[common, waiting], help="client: follow a job until it ends (exit 0-3)"
    )
    p.add_argument("id")
    p.set_defaults(func=guarded(_wait))

    p = sub.add_parser("events", parents=[common], help="client: a job's event log")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    p.add_argument("--after", type=int, help="only events after this event id")
    p.set_defaults(func=guarded(_events))

    p = sub.add_parser("cancel", parents=[common], help="client: cancel a job")
    p.add_argument("id")
    p.set_defaults(func=guarded(_cancel))

    p = sub.add_parser("list", parents=[common], help="client: the tenant's jobs")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs")
    p.set_defaults(func=guarded(_list))

    p = sub.add_parser("download", parents=[common], help="client: download a job's artifact")
    p.add_argument("id")
    p.add_argument("dest", help="folder to write the files into")
    p.add_argument("--file", action="append", help="only this artifact path (repeatable)")
    p.set_defaults(func=guarded(_download))

    p = sub.add_parser("methods", parents=[common], help="client: the compression methods")
    p.set_defaults(func=guarded(_methods))
