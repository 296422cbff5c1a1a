"""The model card (README.md) of an artifact: Hub metadata, what was done, how good, how to load.

Torch-free. The YAML front matter follows the Hub's model card metadata: ``base_model``,
``license`` (inherited from the base model when it says one), ``library_name``,
``pipeline_tag``, ``tags`` and a ``model-index`` with the evaluation, so the Hub shows the
result. ``base_model_relation`` is left out on purpose: the Hub knows ``adapter``, ``merge``,
``quantized`` and ``finetune``, and none of them describes a pruned or factorised model (a
wrong relation misfiles it on the base model's page; without one, the Hub infers it).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["base_model_license", "library_versions", "render_model_card"]

_LIBRARIES = ("slimforge", "torch", "transformers", "huggingface_hub", "safetensors")
REMOTE_CODE_FILES = ("configuration_slimforge_lowrank.py", "modeling_slimforge_lowrank.py")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that made (and load) the artifact."""
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _front_matter(text: str) -> dict[str, Any]:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_model_license(folder: Path | None, *, gguf_file: Path | None = None) -> str | None:
    """The base model's license: ``license`` in its README.md front matter, or a GGUF file's
    ``general.license``; None when it does not say (the card then names none)."""
    if gguf_file is not None:
        try:
            from gguf import GGUFReader
        except ImportError:
            return None
        field = GGUFReader(gguf_file).fields.get("general.license")
        value = field.contents() if field is not None else None
        return value if isinstance(value, str) and value else None
    readme = folder / "README.md" if folder is not None else None
    if readme is None or not readme.is_file():
        return None
    value = _front_matter(readme.read_text(encoding="utf-8")).get("license")
    return value if isinstance(value, str) and value else None


def _evaluation_dataset(job_parameters: Mapping[str, Any]) -> dict[str, str]:
    """The model-index ``dataset`` entry for the job's evaluation text."""
    ev = job_parameters.get("evaluation") or {}
    if ev.get("dataset"):
        entry = {"name": str(ev["dataset"]), "type": str(ev["dataset"])}
        if ev.get("split"):
            entry["split"] = str(ev["split"])
        return entry
    name = Path(str(ev.get("path") or "held-out text")).name
    return {"name": name, "type": "text"}


def _metadata(
    *,
    base_model: str,
    method: str,
    lowrank: bool,
    license: str | None,
    repo_name: str,
    student_perplexity: float | None,
    job_parameters: Mapping[str, Any],
) -> dict[str, Any]:
    tags = ["slimforge", *method.split(" + "), "compressed"]
    tags += ["low-rank", "custom_code"] if lowrank else []
    data: dict[str, Any] = {}
    if "/" in base_model:  # a Hub id; a local folder or file name is not
        data["base_model"] = base_model
    if license:
        data["license"] = license
    data.update(library_name="transformers", pipeline_tag="text-generation", tags=tags)
    if student_perplexity is not None:
        data["model-index"] = [
            {
                "name": repo_name,
                "results": [
                    {
                        "task": {"type": "text-generation", "name": "Text Generation"},
                        "dataset": _evaluation_dataset(job_parameters),
                        "metrics": [
                            {
                                "type": "perplexity",
                                "value": round(student_perplexity, 4),
                                "name": "Perplexity",
                            }
                        ],
                    }
                ],
            }
        ]
    return data


def _shape_lines(metrics: Mapping[str, Any], ranks: Mapping[str, int] | None) -> list[str]:
    """What the method changed: low-rank factors, or the pruned shape."""
    if ranks:
        values = sorted(ranks.values())
        return [
            "",
            f"{len(ranks)} Linear layers were replaced by low-rank factors B·A (ranks "
            f"{values[0]} to {values[-1]}, median {values[len(values) // 2]}); the per-module "
            "ranks are in `config.json` under `lowrank_ranks`.",
        ]
    shape = (metrics.get("method_details") or {}).get("shape")
    if not shape:
        return []
    parts = [
        f"hidden size {shape['hidden_size']}",
        f"MLP width {shape['intermediate_size']}",
        f"{shape['num_attention_heads']} attention heads ({shape['num_key_value_heads']} KV)",
        f"{shape['num_hidden_layers']} layers",
    ]
    if shape.get("num_local_experts"):
        parts.append(f"{shape['num_local_experts']} experts per layer")
    return ["", "The result is a standard architecture: " + ", ".join(parts) + "."]


def _distill_lines(metrics: Mapping[str, Any]) -> list[str]:
    kd = metrics.get("distill")
    if not kd:
        return []
    return [
        "",
        f"Then distilled from the original model (logit KL, `kd`) on {kd.get('tokens', 0):,} "
        f"tokens in {kd.get('steps', 0)} steps.",
    ]


def _resources(metrics: Mapping[str, Any]) -> list[str]:
    """How the job ran: tokens, time per stage, peak memory (only what was measured)."""
    lines = []
    if metrics.get("evaluation_tokens"):
        lines.append(f"- evaluation tokens: {metrics['evaluation_tokens']:,}")
    if metrics.get("tokens_used"):
        lines.append(f"- calibration tokens: {metrics['tokens_used']:,}")
    stages = metrics.get("stage_seconds") or {}
    if stages:
        per_stage = ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
        lines.append(f"- wall time: {sum(stages.values()):.0f} s ({per_stage})")
    for key, label in (("peak_rss_bytes", "peak memory"), ("peak_gpu_bytes", "peak GPU memory")):
        if metrics.get(key):
            lines.append(f"- {label}: {metrics[key] / 2**30:.2f} GiB")
    return ["", "How it was made:", "", *lines] if lines else []


def render_model_card(
    *,
    base_model: str,
    method: str,
    target: str,
    params_before: int,
    params_after: int,
    metrics: Mapping[str, Any],
    ranks: Mapping[str, int] | None,
    job_parameters: Mapping[str, Any],
    license: str | None = None,
    repo_id: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> str:
    """README.md: YAML metadata, then what was done, evaluation, how to load, the job's
    parameters and the library versions used.

    ``metrics`` may hold ``teacher_perplexity``, ``student_perplexity``, ``method_details``
    (a pruned ``shape``), ``distill`` and resource figures. ``repo_id`` (the Hub repository the
    card is pushed to) goes into the loading snippet and the model-index name.
    """
    lowrank = bool(ranks)
    teacher, student = metrics.get("teacher_perplexity"), metrics.get("student_perplexity")
    short = base_model.split("/")[-1]
    meta = _metadata(
        base_model=base_model,
        method=method,
        lowrank=lowrank,
        license=license,
        repo_name=(repo_id or f"{short}-slimforge").split("/")[-1],
        student_perplexity=student if isinstance(student, int | float) else None,
        job_parameters=job_parameters,
    )
    front = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---"]
    reduction = 100.0 * (1 - params_after / params_before) if params_before else 0.0
    done = [
        f"# {short} compressed with slimforge ({method})",
        "",
        "## What was done",
        "",
        f"`{base_model}` was compressed with the **{method}** method to the target {target}: "
        f"{params_before:,} → {params_after:,} parameters ({reduction:.1f}% fewer; unique "
        "parameters, tied weights counted once, embeddings included).",
        *_shape_lines(metrics, ranks),
        *_distill_lines(metrics),
    ]

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "n/a" if v is None else str(v)

    table = [
        "",
        "## Evaluation",
        "",
        "| metric | teacher | student |",
        "|---|---|---|",
        f"| parameters | {params_before:,} | {params_after:,} |",
        f"| perplexity (held-out text) | {fmt(teacher)} | {fmt(student)} |",
    ]
    if teacher and student:
        table.append(f"| perplexity ratio | 1.00 | {student / teacher:.2f} |")
    table += _resources(metrics)
    remote = ", trust_remote_code=True" if lowrank else ""
    path = repo_id or "path/or/hub-id/of/this/model"
    how = [
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"path = {json.dumps(path)}",
        f"tokenizer = AutoTokenizer.from_pretrained(path{remote})",
        f"model = AutoModelForCausalLM.from_pretrained(path{remote})",
        "```",
    ]
    if lowrank:
        how += [
            "",
            "`trust_remote_code=True` runs the two small files shipped here "
            f"(`{REMOTE_CODE_FILES[0]}`, `{REMOTE_CODE_FILES[1]}`); they need only torch and "
            "transformers. The tokenizer needs the flag too, because AutoTokenizer reads the "
            "model config.",
        ]
    else:
        how += ["", "A standard architecture: no custom code, `trust_remote_code` not needed."]
    params = [
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(job_parameters, indent=2, sort_keys=True, default=str),
        "```",
    ]
    used = versions if versions is not None else library_versions()
    libs = ["", "## Library versions", ""] + [f"- {k} {v}" for k, v in used.items()]
    return "\n".join(front + done + table + how + params + libs) + "\n"
