"""The POST /v1/jobs body of ``slimforge submit``: a YAML/JSON spec file, then the flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_job_body"]


def _local(value: str) -> str:
    """An existing local path made absolute (the server resolves relative ones itself)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _model_spec(args: argparse.Namespace) -> dict[str, Any]:
    value = args.model
    path = Path(value).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return {"path": str(path.resolve().parent), "gguf_file": path.name}
    if path.exists() or value.startswith((".", "/", "~")):
        spec: dict[str, Any] = {"path": _local(value)}
        if args.gguf_file:
            spec["gguf_file"] = args.gguf_file
        return spec
    return {"id": value, "revision": args.revision}


def _text_spec(value: str) -> dict[str, Any]:
    if value == "synthetic":
        return {"synthetic": True}
    if value == "general":
        return {"mixture": "general"}
    if Path(value).expanduser().exists() or value.startswith((".", "/", "~")):
        return {"path": _local(value)}
    return {"dataset": value}


def _parse_pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, not {pair!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _output_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The ``output`` fields the flags set (the server validates the names)."""
    output: dict[str, Any] = {}
    if getattr(args, "formats", None):
        output["formats"] = list(args.formats)
    if getattr(args, "gguf_type", None):
        output["gguf_type"] = list(args.gguf_type)
        if "formats" in output and "gguf" not in output["formats"]:
            output["formats"].append("gguf")
    for flag in ("dtype", "hub_repo"):
        if getattr(args, flag, None):
            output[flag] = getattr(args, flag)
    return output


def build_job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body: the SPEC file (YAML or JSON, '-' for stdin), then the flags."""
    body: dict[str, Any] = {}
    if args.spec:
        import yaml

        try:
            text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
            loaded = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the job spec {args.spec}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"the job spec {args.spec} must be a mapping (the POST /v1/jobs body)")
        body = loaded
    if args.model:
        body["model"] = _model_spec(args)
    if args.ratio is not None:
        body["target"] = {"ratio": args.ratio}
    elif args.params is not None:
        body["target"] = {"params": args.params}
    method = dict(body.get("method") or {})
    if args.method and method.get("name") != args.method:
        method = {"name": args.method}
    method.update(_parse_pairs(args.param, "--param"))
    if method:
        body["method"] = method
    for name in ("calibration", "evaluation"):
        value = getattr(args, name)
        if value:
            body[name] = _text_spec(value)
    if (args.calibration_tokens is not None or args.seq_len is not None) and not body.get(
        "calibration"
    ):
        body["calibration"] = {"mixture": "general"}  # the server's default, given a budget
    if args.calibration_tokens is not None:
        body["calibration"]["max_tokens"] = args.calibration_tokens
    if args.seq_len is not None:
        for name in ("calibration", "evaluation"):
            if isinstance(body.get(name), dict):
                body[name]["seq_len"] = args.seq_len
    if args.distill_tokens:
        body["distill"] = {**(body.get("distill") or {}), "tokens": args.distill_tokens}
    output = _output_flags(args)
    if output:
        body["output"] = {**(body.get("output") or {}), **output}
    if args.metadata:
        body["metadata"] = {**(body.get("metadata") or {}), **_parse_pairs(args.metadata, "--meta")}
    if not body:
        raise ValueError("give a job spec file or at least --model, a target and --method")
    return body
