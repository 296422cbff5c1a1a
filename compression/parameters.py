"""The base of every parameter model (methods and stages) and the error of a job's parameter
that the model cannot satisfy. Torch-free: the API checks a job with these before queueing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from slimforge.compression.model_shapes import ModelShapes

__all__ = ["MethodParameters", "ParameterConflict", "Parameters"]


class ParameterConflict(ValueError):
    """A job parameter that the model's shape rules out, with a value that works.

    ``field`` is the parameter's path inside its section (``shape.num_attention_heads``;
    the caller prefixes the section, ``method.``); ``model_value`` is what the model has
    (a number, or a mapping of the config keys that decide); ``working_value`` is a value the
    job could use instead.
    """

    def __init__(
        self, field: str, *, value: Any, model_value: Any, working_value: Any, reason: str
    ) -> None:
        self.field = field
        self.value = value
        self.model_value = model_value
        self.working_value = working_value
        self.reason = reason
        super().__init__(f"'{field}' = {value!r}: {reason}; use e.g. {working_value!r}")

    def within(self, section: str) -> ParameterConflict:
        """The same conflict with ``section.`` before its field (``method.shape.hidden_size``)."""
        return ParameterConflict(
            f"{section}.{self.field}",
            value=self.value,
            model_value=self.model_value,
            working_value=self.working_value,
            reason=self.reason,
        )

    def details(self) -> dict[str, Any]:
        """JSON-ready description for an API error body."""
        return {
            "field": self.field,
            "value": self.value,
            "model_value": self.model_value,
            "working_value": self.working_value,
        }


class Parameters(BaseModel):
    """Parameters of a method or a stage: unknown fields are errors, not ignored."""

    model_config = ConfigDict(extra="forbid")

    def check_model(self, shapes: ModelShapes) -> None:
        """Raise :class:`ParameterConflict` for a parameter this model cannot have (no torch,
        from shapes and config alone). The default checks nothing."""


class MethodParameters(Parameters):
    """Parameters of a compression method; subclasses declare ``name: Literal[...]``."""

    name: str

    def standard_architecture(self) -> bool:
        """Whether the result is a stock transformers architecture (the source's own class,
        smaller), which vLLM and llama.cpp load, rather than one with custom modules that needs
        slimforge's remote code (``trust_remote_code``). Decides which output formats a job may
        ask for (``output.formats``: GGUF only for a standard result). The default says no: a
        method that keeps the architecture says so."""
        return False

    def check_target(self, shapes: ModelShapes, target_params: int) -> None:
        """Raise ``UnreachableTargetError`` when no result of this method lands on
        ``target_params`` (unique parameters) for a model of these shapes, or
        :class:`ParameterConflict` for a constraint that cannot hold. Shapes only, no data:
        what the worker checks again after loading. The default checks nothing."""
