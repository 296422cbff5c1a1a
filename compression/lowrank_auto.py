"""Make transformers' Auto classes know the low-rank artifact's model type in this process.

A low-rank artifact's ``config.json`` has model type ``slimforge_lowrank`` (so that a dense
architecture is never built from it by mistake) and ships its classes as remote code. Reading
it without ``trust_remote_code`` (``AutoTokenizer.from_pretrained(path)`` reads the config
first) made transformers prompt for trust and then warn "You are using a model of type
`slimforge_lowrank` to instantiate a model of type ``", which reads as a broken artifact.
Registering the model type here lets the config (and so the tokenizer) load silently; the
model itself still needs ``trust_remote_code=True`` (its modelling code ships in the artifact),
and with it transformers uses the artifact's own classes, as before.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

__all__ = ["LOWRANK_MODEL_TYPE", "SlimforgeLowRankConfig", "register_lowrank_config"]

LOWRANK_MODEL_TYPE = "slimforge_lowrank"


class SlimforgeLowRankConfig(PretrainedConfig):
    """The configuration of a low-rank artifact as read without its remote code: the base
    architecture's keys (``slimforge_base_model_type``) plus ``lowrank_ranks``, as attributes."""

    model_type = LOWRANK_MODEL_TYPE


def register_lowrank_config() -> None:
    """Register :class:`SlimforgeLowRankConfig` with ``AutoConfig`` (idempotent)."""
    AutoConfig.register(LOWRANK_MODEL_TYPE, SlimforgeLowRankConfig, exist_ok=True)
