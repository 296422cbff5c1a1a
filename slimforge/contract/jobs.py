"""Request and response bodies of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from slimforge.compression.configs import KdConfig, MethodConfig
from slimforge.compression.gguf_export import GGUF_TYPES, GgufType
from slimforge.compression.methods.auto.config import AUTO_KD_LEARNING_RATE, AutoConfig
from slimforge.contract.checks import check_auto_calibration, check_method, check_names
from slimforge.contract.inputs import HUB_ID
from slimforge.contract.inputs import Input as _Input
from slimforge.contract.texts import CalibrationMixture, EvaluationData, TextData
from slimforge.contract.webhooks import Webhook

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# The stages a job goes through, in order (distilling and publishing only when asked for); a
# running job's ``stage`` and each event's ``stage`` are one of these.
Stage = Literal[
    "loading",
    "calibrating",
    "compressing",
    "distilling",
    "evaluating",
    "exporting",
    "storing",
    "publishing",
]
# Distinct kd text an ``auto`` job draws when it has no ``distill`` section (kd cycles over it).
AUTO_KD_TEXT_TOKENS = 32768
# Precisions an artifact can be saved in (``output.dtype``).
ArtifactDtype = Literal["float32", "float16", "bfloat16"]
# What an artifact holds (``output.formats``): the Hugging Face folder, and GGUF files beside it.
OutputFormat = Literal["safetensors", "gguf"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

# Re-exported: the job's text sections are defined beside the pieces every body shares.
__all__ = [
    "HUB_ID",
    "TERMINAL_STATUSES",
    "ArtifactDtype",
    "CalibrationMixture",
    "EvaluationData",
    "EventOut",
    "EventPage",
    "JobCreate",
    "JobOut",
    "JobPage",
    "JobStatus",
    "ModelSpec",
    "Output",
    "Stage",
    "Target",
    "TextData",
]


class ModelSpec(_Input):
    """Where the model comes from: a Hub id (with revision), a local folder, or a GGUF file."""

    id: str | None = Field(default=None, description="Hugging Face Hub id, e.g. 'org/name'.")
    revision: str = Field(default="main", description="Hub branch, tag or commit.")
    path: str | None = Field(default=None, description="Local folder (or folder of a GGUF).")
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `path`.")
    trust_remote_code: bool = Field(
        default=False,
        description="Load the model with its own Python code (its config's `auto_map`), run on "
        "the worker. Only for tenants an operator allowed (`slimforge admin "
        "allow-remote-code`); 403 otherwise.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.id is None) == (self.path is None):
            raise ValueError("give exactly one of 'id' (a Hub model) or 'path' (a local folder)")
        if self.id is not None and not HUB_ID.match(self.id):
            raise ValueError(f"'{self.id}' is not a valid Hub model id (expected 'org/name')")
        if self.gguf_file is not None and self.path is None:
            raise ValueError("'gguf_file' needs 'path', the folder that holds it")
        return self


class Target(_Input):
    """The size to reach: an absolute parameter count or a fraction of the model's."""

    params: int | None = Field(default=None, gt=0, description="Parameters to keep.")
    ratio: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Fraction of parameters to keep, 0 < r ≤ 1."
    )

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.params is None) == (self.ratio is None):
            raise ValueError("give exactly one of 'params' or 'ratio'")
        return self


# Hub repository ids: "namespace/name", letters, digits, '-', '_', '.'; no '--' or '..'.
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"


class Output(_Input):
    """What the artifact is saved as, and where it goes besides the service's own storage."""

    hub_repo: str | None = Field(
        default=None,
        pattern=HUB_REPO_PATTERN,
        description="Hub model repository to push to, 'org/name'; created if missing. Needs "
        "a token set with PUT /v1/credentials/hub. Omit to keep the artifact in the service.",
    )
    dtype: ArtifactDtype | None = Field(
        default=None,
        description="Precision of the saved weights. Default: the source checkpoint's own "
        "(a GGUF's dequantised float32), whatever precision the worker computed in.",
    )
    private: bool = Field(default=True, description="Create the repository as private.")
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$",
        description="Branch to commit to (created from main if missing).",
    )
    commit_message: str | None = Field(
        default=None, max_length=500, description="Default: 'slimforge: <method> <target>'."
    )
    formats: list[OutputFormat] | None = Field(
        default=None,
        min_length=1,
        max_length=len(OUTPUT_FORMATS),
        description="What the artifact holds: 'safetensors' (the Hugging Face folder, always "
        "included; vLLM and transformers load it) and 'gguf' (files for llama.cpp and Ollama "
        "beside it, written by llama.cpp's own converter and quantiser; only for results of a "
        "standard architecture, not low-rank ones). Default: ['safetensors', 'gguf'] for a "
        "GGUF input (`model.gguf_file`) when the method keeps the architecture, else "
        "['safetensors']; the job's `request` shows what was chosen.",
    )
    gguf_type: list[GgufType] | None = Field(
        default=None,
        description="llama.cpp file type of the GGUF output, one name or a list (one file "
        f"each): {', '.join(GGUF_TYPES)}. Default: the GGUF input's own type (e.g. q4_1), "
        "else f16. Implies 'gguf' in `formats` when those are not given.",
    )

    @field_validator("hub_repo", "revision")
    @classmethod
    def _no_double_separators(cls, value: str | None) -> str | None:
        if value is not None and ("--" in value or ".." in value):
            raise ValueError("'--' and '..' are not allowed in Hub repository ids or revisions")
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _known_formats(cls, value: Any) -> Any:
        return check_names(value, "output.formats", OUTPUT_FORMATS, one_or_list=False)

    @field_validator("gguf_type", mode="before")
    @classmethod
    def _known_gguf_types(cls, value: Any) -> Any:
        # llama.cpp's file names spell the types in capitals (Q4_K_M): both spellings are fine.
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            value = [v.lower() if isinstance(v, str) else v for v in value]
        return check_names(value, "output.gguf_type", GGUF_TYPES, one_or_list=True)

    @model_validator(mode="after")
    def _consistent_formats(self) -> Output:
        if self.formats is None:
            return self
        if "safetensors" not in self.formats:
            raise ValueError(
                f"output.formats = {self.formats}: 'safetensors' is always part of the "
                "artifact (the GGUF is converted from it); give ['safetensors', 'gguf']"
            )
        if self.gguf_type is not None and "gguf" not in self.formats:
            raise ValueError(
                f"output.gguf_type = {self.gguf_type} but output.formats = {self.formats} "
                "has no 'gguf': add 'gguf' to the formats, or leave gguf_type out"
            )
        return self

    @property
    def wants_gguf(self) -> bool:
        """Whether GGUF files are asked for (formats resolved at submit)."""
        return "gguf" in (self.formats or ())


class JobCreate(_Input):
    """Body of ``POST /v1/jobs``."""

    model: ModelSpec
    target: Target
    method: MethodConfig
    distill: KdConfig | None = Field(
        default=None,
        description="Optional logit distillation from the original model after the method "
        '(the `kd` stage), on the calibration text: e.g. {"name": "kd", "tokens": 65536}.',
    )
    calibration: TextData = Field(
        default_factory=lambda: TextData(mixture="general"),
        description="Text the method calibrates on and kd trains on. Default: the general "
        'mixture {"mixture": "general"}: general English shipped with slimforge and text '
        "sampled from the model itself (chat-formatted for instruct models), half and half "
        "by tokens. Give your own for a domain model (a file, a Hub dataset).",
    )
    evaluation: EvaluationData | None = Field(
        default=None, description="Held-out text for perplexity; omit to skip evaluation."
    )
    output: Output | None = Field(
        default=None,
        description='Also push the artifact and its model card to the Hub: {"hub_repo": '
        '"org/name"}. A failed push leaves the job failed at stage "publishing" with the '
        "artifact kept; POST /v1/jobs/{id}/publish retries the push alone. "
        '{"dtype": "bfloat16"} saves the weights in another precision than the source\'s; '
        '{"formats": ["safetensors", "gguf"], "gguf_type": "q4_k_m"} adds a GGUF file for '
        "llama.cpp. Defaults are resolved at submit and shown in the job's `request`.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form, stored as is.")
    webhook: Webhook | None = Field(
        default=None,
        description='POST signed events of this job to a URL: {"url": "https://…", "events": '
        '["job.succeeded", "job.failed"]}. Overrides the tenant default '
        "(PUT /v1/webhooks/default); needs a signing secret (POST /v1/webhooks/secret).",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _known_method(cls, value: Any) -> Any:
        return check_method(value)

    @field_validator("calibration", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        # ``"calibration": null`` means what leaving it out means: the general mixture.
        return {"mixture": "general"} if value is None else value

    @model_validator(mode="after")
    def _auto_distils(self) -> JobCreate:
        # ``auto`` scores its candidates after a kd probe and always ends with kd: a job
        # without ``distill`` gets the stage with auto's defaults (stored, so users see it):
        # as much kd text, and a learning rate for a short run, unless ``distill`` sets them.
        if self.method.name != "auto":
            return self
        given = self.distill.model_fields_set if self.distill is not None else set()
        defaults = {"tokens": AUTO_KD_TEXT_TOKENS, "learning_rate": AUTO_KD_LEARNING_RATE}
        update = {k: v for k, v in defaults.items() if k not in given}
        self.distill = (self.distill or KdConfig()).model_copy(update=update)
        if isinstance(self.method, AutoConfig) and self.method.probe_learning_rate is None:
            # The probes train at the rate of the kd they stand for (stored: users see it).
            rate = self.distill.learning_rate
            self.method = self.method.model_copy(update={"probe_learning_rate": rate})
        check_auto_calibration(self.calibration)
        return self


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: str
    status: JobStatus
    stage: Stage | None = Field(description="The stage the job is in or ended in.")
    method: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    attempts: int = Field(
        description="How many times a worker started the job: more than 1 when a worker was "
        "lost and the job resumed on another."
    )
    error: str | None
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    request: dict[str, Any]
    links: dict[str, str]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `after` for the next page.")


class EventOut(BaseModel):
    id: int
    job_id: str
    time: datetime
    level: str
    stage: Stage | None = Field(description="The stage the event belongs to, if any.")
    message: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None = Field(description="Pass as `after` for the next page.")
    job_status: JobStatus
