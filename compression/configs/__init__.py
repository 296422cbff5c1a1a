"""Method parameters as pydantic models, one per method, discriminated by ``name``.

This package imports no torch: the API validates job bodies and documents each method's JSON
schema from these classes without loading any ML code. The implementations live in
``compression/methods/<name>.py`` and are registered under the same names.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from slimforge.compression.configs.base import _MethodBase
from slimforge.compression.configs.kd import KdConfig
from slimforge.compression.configs.lowrank import (
    DEFAULT_TARGET_MODULES,
    LILLAMA_DEFAULT_LR,
    LillamaConfig,
    SvdConfig,
)
from slimforge.compression.configs.minitron import MinitronConfig, PinnedShape, PruningAxis

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LILLAMA_DEFAULT_LR",
    "METHOD_CONFIGS",
    "KdConfig",
    "LillamaConfig",
    "MethodConfig",
    "MinitronConfig",
    "PinnedShape",
    "PruningAxis",
    "SvdConfig",
    "method_descriptions",
]

# Registry of parameter schemas by method name. A new method adds its class here and to the
# union below; ``slimforge.compression.methods`` registers the implementation under the same name.
METHOD_CONFIGS: dict[str, type[_MethodBase]] = {
    "svd": SvdConfig,
    "lillama": LillamaConfig,
    "minitron": MinitronConfig,
}

MethodConfig = Annotated[
    Union[SvdConfig, LillamaConfig, MinitronConfig],  # noqa: UP007
    Field(discriminator="name"),
]


def method_descriptions() -> list[dict[str, object]]:
    """Name, one-line description, full description and JSON schema of every method."""
    out: list[dict[str, object]] = []
    for name, cls in METHOD_CONFIGS.items():
        doc = (cls.__doc__ or "").strip()
        out.append(
            {
                "name": name,
                "summary": doc.splitlines()[0] if doc else name,
                "description": doc,
                "parameters_schema": cls.model_json_schema(),
            }
        )
    return out
