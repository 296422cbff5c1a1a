"""Every parameter model of the library, torch-free: the registered methods' and the ``kd``
stage's.

The method classes live in their method folders (``compression/methods/<name>/config.py``) and
register there; this package gathers them for callers that validate job bodies
(``MethodConfig``, the discriminated union built from the registry) and for the catalogue
(``method_descriptions``). Nothing here is kept in step by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimforge.compression.configs.kd import KdConfig
from slimforge.compression.methods import method_config_union, method_descriptions, method_specs
from slimforge.compression.methods.factorization.config import (
    DEFAULT_TARGET_MODULES,
    FactorizationConfig,
)
from slimforge.compression.methods.lillama.config import LILLAMA_DEFAULT_LR, LillamaConfig
from slimforge.compression.methods.minitron.config import MinitronConfig, PinnedShape, PruningAxis
from slimforge.compression.methods.svd.config import SvdConfig
from slimforge.compression.parameters import MethodParameters

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LILLAMA_DEFAULT_LR",
    "METHOD_CONFIGS",
    "FactorizationConfig",
    "KdConfig",
    "LillamaConfig",
    "MethodConfig",
    "MinitronConfig",
    "PinnedShape",
    "PruningAxis",
    "SvdConfig",
    "method_descriptions",
]

# Parameter class by method name, read from the registry.
METHOD_CONFIGS: dict[str, type[MethodParameters]] = {
    spec.name: spec.config_class for spec in method_specs()
}

if TYPE_CHECKING:  # the union's members are only known at run time
    MethodConfig = MethodParameters
else:
    MethodConfig = method_config_union()
