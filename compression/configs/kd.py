"""Parameters of the ``kd`` stage (logit distillation after any method)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slimforge.compression.model_shapes import ModelShapes
from slimforge.compression.parameters import ParameterConflict, Parameters

__all__ = ["KdConfig"]


class KdConfig(Parameters):
    """Logit knowledge distillation (Minitron's recipe), a stage after any method.

    The compressed student is trained end to end to match the original model's next-token
    distribution on the calibration text: forward KL(teacher ‖ student) at ``temperature``,
    optionally mixed with cross-entropy on the text and a cosine loss between matched hidden
    states (for deep depth cuts). The teacher runs alongside the student (exact, twice the model
    memory) or, with ``top_k``, its top-k logits are computed once before compression and the
    teacher is dropped.
    """

    name: Literal["kd"] = "kd"
    tokens: int = Field(
        default=65536,
        ge=16,
        le=100_000_000_000,
        description="Distillation budget in tokens (student forward/backward passes). Batches "
        "cycle through the calibration text, read up to this many tokens, repeating it when it "
        "is shorter.",
    )
    temperature: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Softmax temperature of both models."
    )
    ce_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of cross-entropy on the text: loss = (1 - w)·KL + w·CE.",
    )
    hidden_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Weight of the mean (1 - cos) between each student layer's output and its "
        "teacher layer's (needs the teacher on the fly and equal hidden sizes).",
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Cache the teacher's top-k logits per token before compression instead "
        "of running the teacher alongside the student (6 bytes per kept logit per token).",
    )
    learning_rate: float = Field(
        default=5e-5, gt=0.0, le=1.0, description="Peak AdamW learning rate."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    warmup_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Share of the steps with a linear warm-up; a cosine decay to a tenth follows.",
    )
    batch_size: int = Field(default=4, ge=1, le=4096, description="Sequences per optimiser step.")
    train_embeddings: bool = Field(
        default=False,
        description="Also train the input embeddings (and a tied output head). Off: less "
        "optimiser memory, and the shared vocabulary matrix stays the teacher's.",
    )
    gradient_checkpointing: bool | None = Field(
        default=None,
        description="Recompute activations in the backward pass (less memory, ~30 % more "
        "compute). None: on for GPUs, off for CPUs.",
    )
    seed: int = Field(default=0, description="Seed of the batch order.")
    guard: bool = Field(
        default=True,
        description="Hold back the last sixteenth of the kd text (at least one block, when "
        "there are 4 or more) and measure KL(teacher ‖ student) on it before and after the "
        "stage; when kd made it worse (a learning rate too high for this student, say), keep "
        "the student as it was before kd, with a warning event. Needs the teacher on the fly "
        "(``top_k`` unset); ignored otherwise.",
    )

    @model_validator(mode="after")
    def _teacher_source(self) -> KdConfig:
        if self.top_k is not None and self.hidden_weight > 0:
            raise ValueError(
                "'hidden_weight' needs the teacher's hidden states, which 'top_k' caching does "
                "not keep: unset one of them"
            )
        return self

    def check_model(self, shapes: ModelShapes) -> None:
        """``top_k`` keeps at most the model's vocabulary (``ParameterConflict`` otherwise)."""
        vocab = shapes.vocab_size
        if self.top_k is not None and vocab is not None and self.top_k > vocab:
            raise ParameterConflict(
                "top_k",
                value=self.top_k,
                model_value=vocab,
                working_value=min(vocab, 64),
                reason=f"the model scores only {vocab} tokens (vocab_size)",
            )
