"""The model card (README.md) of an artifact, as a package: the source model's name and origin
(:mod:`.source`), the public job parameters (:mod:`.parameters`), the figures read from the
job's metrics and their keys (:mod:`.figures`), the ``model-index`` (:mod:`.model_index`), the
evaluation markdown (:mod:`.sections`) and the card itself (:mod:`.render`). Torch-free.
"""

from __future__ import annotations

from slimforge.compression.model_card.parameters import public_parameters
from slimforge.compression.model_card.render import (
    REMOTE_CODE_FILES,
    artifact_name,
    library_versions,
    render_model_card,
)
from slimforge.compression.model_card.source import (
    SourceInfo,
    base_model_license,
    describe_source,
)

__all__ = [
    "REMOTE_CODE_FILES",
    "SourceInfo",
    "artifact_name",
    "base_model_license",
    "describe_source",
    "library_versions",
    "public_parameters",
    "render_model_card",
]
