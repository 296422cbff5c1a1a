"""A job's text sections: ``calibration`` (what the method fits and kd trains on) and
``evaluation`` (held-out text and zero-shot tasks)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field, model_validator

from slimforge.contract.inputs import HUB_ID, Input

__all__ = ["CalibrationMixture", "EvaluationData", "TextData"]

# The calibration mixtures a job can name (``calibration.mixture``).
CalibrationMixture = Literal["general"]


# Fields only a Hub dataset reads, with their defaults (``field`` is read by .jsonl files too).
_DATASET_ONLY = {"config_name": None, "split": "train", "revision": None}


class TextData(Input):
    """Text for calibration or evaluation: a local .txt/.jsonl file, a Hub dataset, or (for
    calibration) text sampled from the model itself, or the general-purpose mixture."""

    path: str | None = Field(default=None, description="Local .txt, .md or .jsonl file.")
    dataset: str | None = Field(default=None, description="Hub dataset id.")
    synthetic: bool = Field(
        default=False,
        description="Calibration only: sample the text from the original model itself "
        "(data-free, seeded), so the method and kd follow the model's own distribution "
        "instead of one domain's. Instruct models (a tokenizer with a chat template) answer "
        "a fixed list of instructions; base models write from their BOS token. Cached per "
        "model on the worker.",
    )
    mixture: CalibrationMixture | None = Field(
        default=None,
        description="Calibration only: a documented mixture of sources. 'general' (the "
        "default when `calibration` is omitted): general English shipped with slimforge "
        "(novels, speeches, encyclopaedia prose) and text sampled from the model itself, "
        "`synthetic_share` of the tokens sampled, the two interleaved.",
    )
    synthetic_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="With `mixture`: the share of tokens sampled from the model (default "
        "0.5; 0 is the English text alone, 1 the sampled text alone).",
    )
    config_name: str | None = None
    split: str = "train"
    field: str = Field(default="text", description="Field holding the text (jsonl, datasets).")
    revision: str | None = None
    max_tokens: int = Field(default=32768, ge=64, le=50_000_000)
    seq_len: int = Field(default=512, ge=16, le=32768)

    @model_validator(mode="after")
    def _one_source(self) -> TextData:
        sources = (
            (self.path is not None)
            + (self.dataset is not None)
            + self.synthetic
            + (self.mixture is not None)
        )
        if sources != 1:
            raise ValueError(
                "give exactly one of 'path' (a local file), 'dataset' (Hub id), 'synthetic': "
                "true or 'mixture': 'general' (or leave calibration out for the general mixture)"
            )
        if self.synthetic_share is not None and self.mixture is None:
            raise ValueError("'synthetic_share' is the sampled share of a 'mixture': give one")
        self._no_stray_fields()
        if self.dataset is not None and not HUB_ID.match(self.dataset):
            raise ValueError(f"'{self.dataset}' is not a valid Hub dataset id")
        if self.seq_len > self.max_tokens:
            raise ValueError("'seq_len' must not exceed 'max_tokens'")
        return self

    def _no_stray_fields(self) -> None:
        """Fields that only a Hub dataset (or a .jsonl file, for ``field``) reads are refused
        on other sources instead of being ignored."""
        if self.dataset is not None:
            return
        source = "'synthetic'" if self.synthetic else "'mixture'" if self.mixture else "'path'"
        if self.path is not None:
            source += f" ({PurePath(self.path).suffix or 'no suffix'} file)"
        # By value, not by fields set: a stored request (defaults written out) validates again.
        stray = [f for f, default in _DATASET_ONLY.items() if getattr(self, f) != default]
        if self.field != "text" and not (self.path or "").lower().endswith(".jsonl"):
            stray.append("field")
        if stray:
            names = ", ".join(repr(f) for f in stray)
            which = "a Hub 'dataset'" if "field" not in stray else "a 'dataset' or a .jsonl 'path'"
            raise ValueError(f"{names} applies only to {which}, not to {source}: leave it out")

    @property
    def sampled_share(self) -> float:
        """The share of the tokens sampled from the model: 1 for ``synthetic``, the mixture's
        ``synthetic_share`` (0.5 unless given), 0 for a file or dataset."""
        if self.synthetic:
            return 1.0
        if self.mixture is not None:
            return 0.5 if self.synthetic_share is None else self.synthetic_share
        return 0.0


class EvaluationData(TextData):
    """Held-out text (teacher and student perplexity, KL(teacher ‖ student) per token, top-1
    agreement, with 95 % intervals) and/or zero-shot tasks run by lm-evaluation-harness on
    both models (accuracy, stderr, retention = student / teacher)."""

    max_tokens: int = Field(default=16384, ge=64, le=50_000_000)
    tasks: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="lm-evaluation-harness task (or group) names, e.g. ['hellaswag', "
        "'arc_easy']. Built-in tasks need Hub access on the worker; offline, name tasks "
        "defined in `task_folders`. Multiple-choice tasks only.",
    )
    task_folders: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Local lm-evaluation-harness task folders (YAML + JSON/JSONL data files) "
        "under the server's allowed roots, whose tasks `tasks` may name.",
    )
    limit: int | None = Field(
        default=None, ge=1, le=100_000, description="Documents per task (default: all)."
    )

    @property
    def has_text(self) -> bool:
        """Whether held-out text is given (tasks alone need none)."""
        return self.path is not None or self.dataset is not None

    @model_validator(mode="after")
    def _one_source(self) -> EvaluationData:
        if self.synthetic or self.mixture is not None:
            used = "'synthetic'" if self.synthetic else "'mixture'"
            raise ValueError(f"evaluation needs held-out real text: {used} is for calibration")
        if self.synthetic_share is not None:
            raise ValueError("'synthetic_share' is for a calibration 'mixture'")
        if self.path is not None and self.dataset is not None:
            raise ValueError("give one of 'path' (a local file) or 'dataset' (Hub id), not both")
        if not self.has_text and not self.tasks:
            raise ValueError("give held-out text ('path' or 'dataset'), zero-shot 'tasks', or both")
        if self.task_folders and not self.tasks:
            raise ValueError("'task_folders' given without 'tasks': name the tasks to run")
        if self.dataset is not None and not HUB_ID.match(self.dataset):
            raise ValueError(f"'{self.dataset}' is not a valid Hub dataset id")
        if self.has_text:
            self._no_stray_fields()
        if self.seq_len > self.max_tokens:
            raise ValueError("'seq_len' must not exceed 'max_tokens'")
        return self
