"""Make transformers' Auto classes know the low-rank artifact's model type in this process.

A low-rank artifact's ``config.json`` has model type ``slimforge_lowrank`` (so that a dense
architecture is never built from it by mistake) and ships its classes as remote code. Reading
it without ``trust_remote_code`` (``AutoTokenizer.from_pretrained(path)`` reads the config
first) made transformers prompt for trust and then warn "You are using a model of type
`slimforge_lowrank` to instantiate a model of type ``", which reads as a broken artifact.
Registering the model type here lets the config (and so the tokenizer) load silently without
``trust_remote_code``, as the base architecture's configuration class under the low-rank model
type. With ``trust_remote_code=True`` the artifact's own classes are used, as before: the model
itself still needs them (its modelling code ships in the artifact).
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig

__all__ = ["LOWRANK_MODEL_TYPE", "SlimforgeLowRankConfig", "register_lowrank_config"]

LOWRANK_MODEL_TYPE = "slimforge_lowrank"


class SlimforgeLowRankConfig(PretrainedConfig):
    """The configuration of a low-rank artifact as read in this process: ``from_dict`` returns
    an instance of the base architecture's configuration class (``slimforge_base_model_type``)
    under the low-rank model type, with ``lowrank_ranks`` as an attribute."""

    model_type = LOWRANK_MODEL_TYPE
    # transformers uses a registered configuration class *instead of* the repository's own
    # code, even with trust_remote_code=True, unless the class's module is inside transformers
    # (``AutoConfig.from_pretrained``: ``explicit_local_code``). The artifact's model class
    # requires its own configuration class, so this one must only stand in when the code is
    # not trusted: it declares itself a transformers class. It is a factory (``from_dict``
    # returns instances of other classes), never instantiated or pickled itself.
    __module__ = "transformers.models.slimforge_lowrank"

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        base = config_dict.get("slimforge_base_model_type")
        if isinstance(base, str) and base in CONFIG_MAPPING:
            return _on_base(base).from_dict(config_dict, **kwargs)
        return super().from_dict(config_dict, **kwargs)


@functools.cache
def _on_base(model_type: str) -> type[PretrainedConfig]:
    """The configuration class of ``model_type`` (``LlamaConfig`` …) under the low-rank model
    type, built once per base."""
    base = CONFIG_MAPPING[model_type]
    name = f"SlimforgeLowRank{base.__name__}"
    return type(name, (base,), {"model_type": LOWRANK_MODEL_TYPE, "__module__": __name__})


def register_lowrank_config() -> None:
    """Register :class:`SlimforgeLowRankConfig` with ``AutoConfig`` (idempotent)."""
    AutoConfig.register(LOWRANK_MODEL_TYPE, SlimforgeLowRankConfig, exist_ok=True)
