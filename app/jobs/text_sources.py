"""Held-out evaluation: refuse, at submit, evaluation text that is the calibration text.

The calibration text is what the method fits and what ``kd`` trains on; perplexity measured on
the same text is not held-out perplexity and flatters the student (issue 16, item 2). Both
readers start at the beginning of their source, so the same source always means overlap.

Refused (422, ``details.field == "evaluation"``):

- **the same local file**: the same file after resolving paths and symlinks (``os.path.samefile``,
  so a hard link counts too), or another file with the same bytes (a copy: same size and
  sha256). The ``field`` of a jsonl file is not compared: the rows are the same.
- **the same Hub dataset split**: the same dataset id (Hub ids are case-insensitive), config
  (None is the ``default`` config), revision (None is ``main``) and split, where a split with a
  slice (``train[:90%]``) overlaps its whole split (``train``) and an identical slice.
  Different slices of one split are let through: whether they overlap is measured by the worker
  (the share of evaluation 13-grams found in the calibration text), as for every other pair of
  sources this check cannot compare (a file and a dataset, different revisions …).

The general calibration mixture (``{"mixture": "general"}``, the default) reads the English text
shipped with slimforge (``slimforge.compression.corpora``): that file as evaluation text is
refused like any other calibration file. Synthetic calibration (sampled from the model) cannot
be the evaluation text. Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimforge.app.errors import UnprocessableInput
from slimforge.compression.corpora import ENGLISH_CALIBRATION

__all__ = ["check_held_out"]

_SLICE = re.compile(r"^(?P<split>[^\[\]]+?)\s*(?:\[(?P<slice>[^\[\]]*)\])?$")


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names (symlink, hard link), or two files with the same bytes."""
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            return hashlib.file_digest(fa, "sha256").digest() == (
                hashlib.file_digest(fb, "sha256").digest()
            )
    except OSError:  # unreadable here: the loader reports it with the field's name
        return False


def _split_parts(split: str) -> tuple[str, str | None]:
    """``"train[:90%]"`` → ("train", ":90%"); ``"train"`` → ("train", None)."""
    found = _SLICE.match(split.strip())
    if found is None:
        return split.strip(), None
    piece = found["slice"]
    return found["split"], piece.replace(" ", "") if piece is not None else None


def _same_split(calibration: Mapping[str, Any], evaluation: Mapping[str, Any]) -> bool:
    """The same dataset, config, revision and an overlapping split (see the module doc)."""

    def source(data: Mapping[str, Any]) -> tuple[str, str, str]:
        config, revision = data.get("config_name") or "default", data.get("revision") or "main"
        return str(data["dataset"]).lower(), str(config), str(revision)

    if source(calibration) != source(evaluation):
        return False
    (c_split, c_slice) = _split_parts(str(calibration.get("split") or "train"))
    (e_split, e_slice) = _split_parts(str(evaluation.get("split") or "train"))
    return c_split == e_split and (c_slice is None or e_slice is None or c_slice == e_slice)


def check_held_out(
    calibration: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None
) -> None:
    """Raise UnprocessableInput (422) when ``evaluation`` is the ``calibration`` text.

    Both are the request's text sections as dicts (``path`` already resolved against the
    allowed roots, as the submit path stores them). Returns None when they differ or cannot be
    compared here.
    """
    if not calibration or not evaluation or calibration.get("synthetic"):
        return
    mixed = calibration.get("mixture") and calibration.get("synthetic_share") != 1.0
    cal_path = str(ENGLISH_CALIBRATION) if mixed else calibration.get("path")
    if cal_path and evaluation.get("path"):
        cal, ev = Path(cal_path), Path(evaluation["path"])
        if _same_file(cal, ev):
            given = "calibration.path" if calibration.get("path") else "the general mixture"
            raise UnprocessableInput(
                f"evaluation.path: '{ev.name}' holds the same text as {given} "
                f"('{cal.name}'); the calibration text is what the method fits and kd trains "
                "on, so perplexity on it is not held-out: give evaluation a file with other "
                "text (e.g. data/corpus/english-evaluation.txt), or leave evaluation out",
                details={"field": "evaluation", "calibration": cal.name, "evaluation": ev.name},
            )
    elif (
        calibration.get("dataset")
        and evaluation.get("dataset")
        and _same_split(calibration, evaluation)
    ):
        split = evaluation.get("split") or "train"
        raise UnprocessableInput(
            f"evaluation: dataset '{evaluation['dataset']}' split '{split}' is the "
            "calibration split (same dataset, config and revision); the calibration text "
            "is what the method fits and kd trains on, so perplexity on it is not "
            "held-out: give evaluation another split (e.g. 'test' or 'validation'), or "
            "disjoint slices of one split (calibration 'train[:90%]', evaluation "
            "'train[90%:]')",
            details={"field": "evaluation", "dataset": evaluation["dataset"], "split": split},
        )
