"""Checks before an lm-evaluation-harness run: task names, data sources, Hub access, weights.

Everything here raises ``ValueError`` with what to change before any document is scored, so a job
fails in seconds rather than after loading data sets (see ``slimforge.compression.tasks``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["check_tasks", "check_tied_weights", "hub_mode", "task_folders"]

# datasets' packaged builders: they read local files and never contact the Hub.
_LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})
# Output types whose lm-eval metrics include ``acc`` (answer chosen by log-likelihood).
_SCORED_OUTPUT_TYPES = frozenset({"multiple_choice", "loglikelihood"})
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def task_folders(
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> list[Path]:
    """Absolute paths of the local task folders; ValueError if one is not a directory."""
    if include_path is None:
        return []
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else include_path
    folders = [Path(p).expanduser().resolve() for p in paths]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"task folder {folder} does not exist or is not a directory")
    return folders


def check_tasks(
    index: dict[str, Any], tasks: Sequence[str], folders: list[Path], hub_access: bool
) -> None:
    """Refuse unknown names, tasks without ``acc`` and (offline) tasks whose data is not local.

    ``index``: ``TaskManager.task_index`` (name -> lm-eval index entry). A group or tag is checked
    through the tasks it expands to. Raises ValueError naming the task and what to change.
    """
    for name in tasks:
        if name not in index:
            _raise_unknown(name, folders, hub_access)
        for leaf, config in _leaf_configs(index, name):
            _check_config(leaf, config, hub_access)


def _raise_unknown(name: str, folders: list[Path], hub_access: bool) -> None:
    where = ", ".join(str(f) for f in folders) or "no local task folder given"
    if hub_access:
        raise ValueError(
            f"unknown lm-eval task {name!r} (searched the built-in tasks and: {where});"
            " `lm-eval ls tasks` lists the built-in names, a local task is a YAML file with"
            " `task: <name>` in a task folder"
        )
    # Offline, the built-in tasks are not indexed (a minute of YAML parsing on a busy CPU):
    # one message covers a typo and a built-in task, which needs the Hub either way.
    raise ValueError(
        f"task {name!r} is not in the local task folders (searched: {where}). lm-eval's"
        " built-in tasks (arc_easy, hellaswag, ...) load their data sets from the Hugging Face"
        " Hub, which this run may not reach: run them with hub_access=True on a worker with Hub"
        " access, or define the task in a local folder (YAML + JSON/JSONL data files)"
    )


def _leaf_configs(index: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    """The task configs a task, group or tag name expands to (unresolved YAML, includes merged)."""
    entry = index[name]
    kind = entry.kind.name  # lm_eval.tasks._index.Kind: TASK, PY_TASK, GROUP, TAG
    if kind == "TAG":
        return [pair for child in sorted(entry.tags) for pair in _leaf_configs(index, child)]
    if kind != "GROUP":
        return [(name, dict(entry.cfg or {}))]
    return _group_leaves(index, name, entry.cfg.get("task", []))


def _group_leaves(index: dict[str, Any], group: str, children: Any) -> list[tuple[str, Any]]:
    leaves: list[tuple[str, dict[str, Any]]] = []
    for child in children if isinstance(children, list) else [children]:
        if isinstance(child, str) and child in index:
            leaves += _leaf_configs(index, child)
        elif isinstance(child, dict) and "group" in child:  # a group defined inline
            nested = child["group"]
            leaves += (
                _leaf_configs(index, nested)
                if nested in index
                else _group_leaves(index, nested, child.get("task", []))
            )
        elif isinstance(child, dict) and "task" in child:  # overrides over the indexed task
            base = index[child["task"]].cfg if child["task"] in index else {}
            leaves.append((str(child["task"]), {**(base or {}), **child}))
        else:
            raise ValueError(f"group {group!r} lists {child!r}, which is no known task or group")
    return leaves


def _check_config(task: str, config: dict[str, Any], hub_access: bool) -> None:
    output_type = config.get("output_type")
    if "class" not in config and output_type not in _SCORED_OUTPUT_TYPES:
        raise ValueError(
            f"task {task!r} has output_type {output_type!r}: only tasks scored by log-likelihood"
            f" ({', '.join(sorted(_SCORED_OUTPUT_TYPES))}) report the accuracy measured here"
        )
    if hub_access or _is_local_data(config):
        return
    path = config.get("dataset_path")
    source = repr(path) if path else "code in its Python task class"
    raise ValueError(
        f"task {task!r} loads its data from {source}, not from local files, and this run has"
        " no Hugging Face Hub access. Run it with hub_access=True on a worker that reaches the"
        " Hub, or point the task at local data: `dataset_path: json` with `dataset_kwargs:"
        " {data_files: {test: /path/to/docs.jsonl}}` (paths relative to the working directory)"
    )


def _is_local_data(config: dict[str, Any]) -> bool:
    """True when ``datasets.load_dataset`` reads the task's data from this disk only."""
    if "class" in config or "custom_dataset" in config:
        return False  # Python code decides where the data comes from: cannot be checked
    path = str(config.get("dataset_path", ""))
    if path and Path(path).expanduser().is_dir():
        return True
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if path not in _LOCAL_BUILDERS or not files:
        return False
    groups = files.values() if isinstance(files, dict) else [files]
    names = [f for g in groups for f in ([g] if isinstance(g, str) else g)]
    return all(Path(f).expanduser().is_file() or glob.glob(os.path.expanduser(f)) for f in names)


@contextmanager
def hub_mode(hub_access: bool) -> Iterator[None]:
    """Without Hub access, switch datasets and huggingface_hub to offline mode for the run."""
    if hub_access:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved_env = {name: os.environ.get(name) for name in _OFFLINE_VARIABLES}
    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    os.environ.update(dict.fromkeys(_OFFLINE_VARIABLES, "1"))
    # Both libraries read the variables once, at import: their module flags are what they check.
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_tied_weights(model: nn.Module) -> None:
    """ValueError if the config ties two weights (transformers' tied-weights mapping) that are
    different tensors: ``tie_weights()``, which lm-eval's HFLM calls, would overwrite one."""
    expanded = getattr(model, "get_expanded_tied_weights_keys", None)
    if expanded is None:
        return
    params = dict(model.named_parameters(remove_duplicate=False))
    for target, source in expanded(all_submodels=True).items():
        if target in params and source in params and params[target] is not params[source]:
            raise ValueError(
                f"the model's config ties {target} to {source} but they are different tensors;"
                " lm-eval's HFLM calls tie_weights(), which would overwrite one. Set the config's"
                " tie_word_embeddings to match the weights before evaluating"
            )
