"""The README's first command: compress a real model end to end through the real service.

Starts ``slimforge serve`` (API + a real Celery worker process, SQLite, file-system broker)
in a data folder, submits an ``auto`` job (by default) for SmolLM2-135M-Instruct through the SDK
(``slimforge.client``), follows its server-sent events and prints the result table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from slimforge.app.settings import Settings
from slimforge.client import APIError, Client, EventOut
from slimforge.demo_model import GGUF, fetch_smollm2

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"

# Run in a fresh interpreter with nothing of slimforge importable: the artifact must load with
# torch + transformers alone (low-rank modelling code ships inside the folder; pruned models
# are standard architectures and load without trust_remote_code).
LOAD_AND_GENERATE = """
import json, pathlib, sys
for name in ("compression", "app", "worker", "slimforge"):
    sys.modules[name] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
trust = "auto_map" in json.loads((pathlib.Path(folder) / "config.json").read_text())
print(f"loading with trust_remote_code={trust}")
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust)
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
prompt = "The capital of France is"
ids = tok(prompt, return_tensors="pt")
out = model.generate(**ids, max_new_tokens=24, do_sample=False)
text = prompt + tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
params = sum(p.numel() for p in model.parameters())
print(f"{type(model).__name__}, {params:,} parameters; generated: {text!r}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up; see its log above")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready in time")


def _create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "slimforge.cli", "admin", "create-key", "--tenant", "demo"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _print_event(event: EventOut) -> None:
    stage = f"[{event.stage}]" if event.stage else ""
    extra = {k: v for k, v in event.data.items() if k != "ranks"}
    detail = f"  {json.dumps(extra)}" if extra else ""
    print(f"  {event.time:%H:%M:%S} {stage:<14} {event.message}{detail}", flush=True)


def _table(job: dict[str, Any], artifact: dict[str, Any], folder: Path) -> str:
    m = job["metrics"]
    rows = [
        (
            "parameters",
            f"{m['params_before']:,}",
            f"{m['params_after']:,}",
            f"{m['achieved_ratio']:.2%} of the model; target {m['target_params']:,} "
            f"({m['target_error']:+.2%})",
        ),
    ]
    if "perplexity_before_distill" in m:
        d = m["distill"]
        if d.get("diverged"):
            how = f"kd diverged ({d['diverged']}); the student from before kd was kept"
        else:
            how = (
                f"kd: {d['tokens']:,} tokens, {d['steps']} steps, loss {d['loss_first']:.3f} -> "
                f"{d['loss_last']:.3f}"
            )
            if (d.get("guard") or {}).get("kept") == "before":
                how += "; kd undone (worse on held-back text)"
        rows.append(
            (
                "perplexity before kd",
                f"{m['teacher_perplexity']:.3f}",
                f"{m['perplexity_before_distill']:.3f}",
                f"x{m['perplexity_before_distill'] / m['teacher_perplexity']:.2f}; {how}",
            )
        )
    if "teacher_perplexity" in m:
        f = m.get("fidelity") or {}
        low, high = f.get("perplexity_ratio_interval") or (None, None)
        interval = f" (95 % interval {low:.2f}-{high:.2f})" if low is not None else ""
        rows.append(
            (
                "perplexity (held-out English)",
                f"{m['teacher_perplexity']:.3f}",
                f"{m['student_perplexity']:.3f}",
                f"x{m['perplexity_ratio']:.2f}{interval}",
            )
        )
        if "kl_per_token" in f:
            rows.append(("KL(teacher || student)", "", f"{f['kl_per_token']:.3f}", "nats/token"))
            rows.append(("top-1 agreement", "", f"{f['top1_agreement']:.1%}", "with the teacher"))
    details = m.get("method_details") or {}
    for row in details.get("candidates") or []:
        score = f"KL {row['kl']:.3f}" if "kl" in row else row.get("status", "")
        chosen = "  <- chosen" if row["name"] == details.get("winner") else ""
        rows.append((f"auto candidate {row['name']}", "", score, f"{row.get('shape', '')}{chosen}"))
    rows.append(
        (
            "artifact size",
            "",
            f"{m['artifact_bytes'] / 1e6:.1f} MB",
            f"{len(artifact['files'])} files",
        )
    )
    rows.append(("peak memory (worker)", "", f"{m['peak_rss_bytes'] / 2**30:.2f} GiB", ""))
    total = sum(m["stage_seconds"].values())
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in m["stage_seconds"].items())
    rows.append(("time", "", f"{total:.0f} s", stages))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{'':<{width[0]}}  {'teacher':>{width[1]}}  {'student':>{width[2]}}"]
    lines += [f"{a:<{width[0]}}  {b:>{width[1]}}  {c:>{width[2]}}  {d}" for a, b, c, d in rows]
    lines.append(f"artifact: {folder}")
    for sample in m.get("generations") or []:
        lines += ["", f"prompt:  {sample['prompt']!r}"]
        lines += [f"teacher: {sample['teacher']!r}", f"student: {sample['student']!r}"]
    return "\n".join(lines)


def demo_body(
    model_dir: Path,
    *,
    ratio: float,
    method: str,
    calibration_tokens: int,
    max_minutes: float = 10.0,
    sampled_tokens: int = 4096,
    seq_len: int = 512,
    distill_tokens: int = 0,
    synthetic: bool = False,
    calibration: str | None = None,
) -> dict[str, Any]:
    """The job the demo submits (a ``POST /v1/jobs`` body). ValueError unless
    ``calibration_tokens`` and ``sampled_tokens`` are above 0."""
    if calibration_tokens <= 0 or sampled_tokens <= 0:
        raise ValueError("calibration_tokens and sampled_tokens must be above 0")
    body: dict[str, Any] = {
        "model": {"path": str(model_dir), "gguf_file": GGUF},
        "target": {"ratio": ratio},
        "method": {"name": method},
        # General English that no calibration source contains (data/corpus/LICENSE.md).
        "evaluation": {"path": str(CORPUS / "english-evaluation.txt"), "max_tokens": 8192},
        "metadata": {"source": "slimforge demo"},
    }
    # The service's general mixture (English + the model's own text), sized for 2 CPU cores:
    # sampling runs at about 50 tokens/s there, so only ``sampled_tokens`` of it are the
    # model's and the rest is English; or a corpus file when asked.
    share = min(1.0, sampled_tokens / calibration_tokens)
    source: dict[str, Any] = (
        {"path": str(CORPUS / calibration)}
        if calibration
        else {"mixture": "general", "synthetic_share": round(share, 6)}
    )
    body["calibration"] = {**source, "max_tokens": calibration_tokens, "seq_len": seq_len}
    if method == "auto":
        body["method"] = {"name": "auto", "max_minutes": max_minutes}
        # kd trains on the calibration text, so nothing more is sampled for it (more
        # distinct tokens helped the refit and kd: docs/BENCHMARKS.md, levers)
        body["distill"] = {"tokens": calibration_tokens}
    if distill_tokens > 0:
        body["distill"] = {"tokens": distill_tokens}
    if synthetic:  # text the model writes itself instead of the corpus
        body["calibration"] = {
            "synthetic": True,
            "max_tokens": calibration_tokens,
            "seq_len": seq_len,
        }
    return body


def run_demo(
    *,
    ratio: float,
    port: int,
    calibration_tokens: int,
    method: str = "auto",
    max_minutes: float = 10.0,
    sampled_tokens: int = 4096,
    seq_len: int = 512,
    distill_tokens: int = 0,
    synthetic: bool = False,
    calibration: str | None = None,
) -> int:
    """Serve, submit ``method`` at ``ratio`` on SmolLM2 over HTTP, follow it, reload the result."""
    settings = Settings()
    print(f"slimforge demo: data folder {settings.home}")
    model_dir = fetch_smollm2(settings.home / "models")
    print(f"model: {model_dir / GGUF}")
    env = os.environ.copy()
    env["SLIMFORGE_HOME"] = str(settings.home)
    env["SLIMFORGE_LOCAL_ROOTS"] = json.dumps([str(CORPUS), str(settings.home)])
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    key = _create_key(env)
    log_path = settings.home / "serve.log"
    print(f"starting slimforge serve on {base} (API + Celery worker); its log: {log_path}")
    log = log_path.open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "slimforge.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(base, server)
        body = demo_body(
            model_dir,
            ratio=ratio,
            method=method,
            calibration_tokens=calibration_tokens,
            max_minutes=max_minutes,
            sampled_tokens=sampled_tokens,
            seq_len=seq_len,
            distill_tokens=distill_tokens,
            synthetic=synthetic,
            calibration=calibration,
        )
        with Client(base, key, timeout=30) as client:
            try:
                submitted = client.jobs.create(body)
            except APIError as exc:
                print(f"submit failed: {exc.status_code} {exc.message}")
                return 1
            job_id = submitted.id
            print(f"submitted {job_id}: 202 Accepted, Location /v1/jobs/{job_id}")
            # Server-sent events through the SDK's parser, until the job ends.
            for event in client.jobs.events(job_id, stream=True):
                _print_event(event)
            job = client.jobs.get(job_id).model_dump(mode="json")
            if job["status"] != "succeeded":
                print(f"job {job['status']}: {job['error']}")
                return 1
            artifact = client.jobs.artifacts(job_id).model_dump(mode="json")
        folder = settings.artifacts_root / job_id
        print()
        print(_table(job, artifact, folder))
        print("\nloading the artifact with plain transformers in a fresh interpreter:")
        loaded = subprocess.run(
            [sys.executable, "-c", LOAD_AND_GENERATE, str(folder)],
            capture_output=True,
            text=True,
            cwd=folder,
        )
        print("  " + (loaded.stdout.strip() or loaded.stderr.strip()[-2000:]))
        return loaded.returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
