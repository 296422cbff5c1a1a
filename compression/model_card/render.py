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
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import yaml

from slimforge.compression.model_card.auto import auto_section
from slimforge.compression.model_card.calibration import calibration_lines
from slimforge.compression.model_card.figures import read_fidelity, read_overlap, read_tasks
from slimforge.compression.model_card.gguf import gguf_section
from slimforge.compression.model_card.model_index import model_index
from slimforge.compression.model_card.parameters import public_parameters
from slimforge.compression.model_card.sections import evaluation_section, generations_section
from slimforge.compression.model_card.source import SourceInfo, describe_source

__all__ = ["REMOTE_CODE_FILES", "artifact_name", "library_versions", "render_model_card"]

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


def _metadata(
    *,
    source: SourceInfo,
    method: str,
    lowrank: bool,
    index: list[dict[str, Any]] | None,
    gguf: bool = False,
) -> dict[str, Any]:
    tags = ["slimforge", *method.split(" + "), "compressed"]
    tags += ["low-rank", "custom_code"] if lowrank else []
    tags += ["gguf"] if gguf else []
    data: dict[str, Any] = {}
    if source.base_model:
        data["base_model"] = source.base_model
    if source.license:
        data["license"] = source.license
    data.update(library_name="transformers", pipeline_tag="text-generation", tags=tags)
    if index:
        data["model-index"] = index
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
    lines = [
        "",
        f"Then distilled from the original model (logit KL, `kd`) on {kd.get('tokens', 0):,} "
        f"tokens in {kd.get('steps', 0)} steps.",
    ]
    guard = kd.get("guard")
    if kd.get("diverged"):
        lines[-1] = (
            f"The `kd` stage diverged ({kd['diverged']}), so **the model before kd was kept**."
        )
    elif guard:
        kl = f"KL to the original {guard['kl_before']:.4f} -> {guard['kl_after']:.4f} nats/token"
        held = f"on {guard['tokens']:,} held-back kd tokens"
        if guard["kept"] == "before":
            lines[-1] += (
                f" kd made the model worse {held} ({kl}), so **the model before kd was kept**."
            )
        else:
            lines[-1] += f" Checked {held}: {kl}."
    return lines


def _resources(metrics: Mapping[str, Any]) -> list[str]:
    """How the job ran: tokens, time per stage, peak memory (only what was measured)."""
    lines = []
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


def _source(
    source: SourceInfo | None,
    base_model: str | None,
    license: str | None,
    job_parameters: Mapping[str, Any],
) -> SourceInfo:
    """The source as given; else described from the request's ``model`` section; else from the
    ``base_model`` string (a Hub id when it holds a '/'). An explicit ``license`` wins."""
    if source is None and isinstance(job_parameters.get("model"), Mapping):
        source = describe_source(job_parameters["model"])
    if source is None:
        name = base_model or "model"
        source = SourceInfo(
            name=name.split("/")[-1], base_model=name if "/" in name else None, license=None
        )
    return replace(source, license=license) if license else source


def _slug(name: str) -> str:
    """A repository-like name: letters, digits, '.', '_', '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def artifact_name(source: SourceInfo, repo_id: str | None) -> str:
    """The artifact's name: the Hub repository's, else ``<source name>-slimforge`` (the
    model-index name, and the stem of the GGUF files)."""
    return (repo_id or f"{_slug(source.name)}-slimforge").split("/")[-1]


def _what_was_done(
    source: SourceInfo, method: str, target: str, params_before: int, params_after: int
) -> list[str]:
    origin = f"[`{source.base_model}`](https://huggingface.co/{source.base_model})"
    named = origin if source.base_model else f"`{source.name}`"
    about = [f"by {source.organization}"] if source.organization else []
    about += [f"GGUF file `{source.file}`"] if source.file else []
    if source.base_model and source.name != source.base_model.split("/")[-1]:
        about.insert(0, origin)
        named = source.name
    if about:
        named += f" ({'; '.join(about)})"
    reduction = 100.0 * (1 - params_after / params_before) if params_before else 0.0
    return [
        f"# {source.name} compressed with slimforge ({method})",
        "",
        "## What was done",
        "",
        f"{named} was compressed with the **{method}** method to the target {target}: "
        f"{params_before:,} → {params_after:,} parameters ({reduction:.1f}% fewer; unique "
        "parameters, tied weights counted once, embeddings included).",
    ]


def _how_to_load(repo_id: str | None, lowrank: bool) -> list[str]:
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
        return [
            *how,
            "",
            "`trust_remote_code=True` runs the two small files shipped here "
            f"(`{REMOTE_CODE_FILES[0]}`, `{REMOTE_CODE_FILES[1]}`); they need only torch and "
            "transformers. The tokenizer needs the flag too, because AutoTokenizer reads the "
            "model config.",
        ]
    return [*how, "", "A standard architecture: no custom code, `trust_remote_code` not needed."]


def _provenance(params: Mapping[str, Any], versions: Mapping[str, str]) -> list[str]:
    """The job's (public) parameters and the library versions used."""
    return [
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(params, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Library versions",
        "",
        *(f"- {k} {v}" for k, v in versions.items()),
    ]


def render_model_card(
    *,
    method: str,
    target: str,
    params_before: int,
    params_after: int,
    metrics: Mapping[str, Any],
    ranks: Mapping[str, int] | None,
    job_parameters: Mapping[str, Any],
    source: SourceInfo | None = None,
    base_model: str | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> str:
    """README.md: YAML metadata, then what was done, evaluation, sample continuations, how to
    load, the job's parameters (server paths replaced by file names and sha256) and the library
    versions used.

    ``source``: name, Hub id and license of the source model (:func:`describe_source`); when
    None it is described from ``job_parameters["model"]``, else from ``base_model`` (kept for
    older callers). ``metrics``: the job's metrics, read under the keys documented in
    :mod:`slimforge.compression.model_card.figures`, plus ``method_details`` (a pruned
    ``shape``), ``distill``, ``gguf`` (the GGUF files, :mod:`.gguf`) and resource figures.
    ``repo_id`` (the Hub repository the card is
    pushed to) goes into the loading snippet and the model-index name. Reads the local files
    the parameters name, to hash them.
    """
    lowrank = bool(ranks)
    src = _source(source, base_model, license, job_parameters)
    params = public_parameters(job_parameters)
    fidelity, overlap, tasks = read_fidelity(metrics), read_overlap(metrics), read_tasks(metrics)
    index = model_index(
        name=artifact_name(src, repo_id),
        evaluation=params.get("evaluation"),
        fidelity=fidelity,
        overlap=overlap,
        tasks=tasks,
    )
    gguf = metrics.get("gguf")
    meta = _metadata(
        source=src,
        method=method,
        lowrank=lowrank,
        index=index,
        gguf=bool(gguf and gguf.get("files")),
    )
    front = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---"]
    body = [
        *_what_was_done(src, method, target, params_before, params_after),
        *_shape_lines(metrics, ranks),
        *auto_section(metrics),
        *_distill_lines(metrics),
        *calibration_lines(params.get("calibration"), metrics),
        *evaluation_section(
            params_before=params_before,
            params_after=params_after,
            fidelity=fidelity,
            overlap=overlap,
            tasks=tasks,
            evaluation=params.get("evaluation"),
        ),
        *_resources(metrics),
        *generations_section(metrics.get("generations")),
        *_how_to_load(repo_id, lowrank),
        *gguf_section(gguf, repo_id),
        *_provenance(params, versions if versions is not None else library_versions()),
    ]
    return "\n".join(front + body) + "\n"
