"""Checks the job body's validators share: lists of names, method names, auto's calibration."""

from __future__ import annotations

from typing import Any

from slimforge.compression.methods import available_methods
from slimforge.contract.texts import TextData

__all__ = ["check_auto_calibration", "check_method", "check_names"]


def check_names(value: Any, field: str, allowed: tuple[str, ...], *, one_or_list: bool) -> Any:
    """A list of names from ``allowed`` (or, when ``one_or_list``, one name), each once;
    ValueError naming the field, the value and the allowed names otherwise."""
    if value is None:
        return None
    if one_or_list and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a list of names from: {', '.join(allowed)}")
    for item in value:
        if item not in allowed:
            raise ValueError(f"{field}: {item!r} is not one of: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{field} = {value} names a value twice")
    return value


def check_method(value: Any) -> Any:
    """Turn an unknown method name into a message that lists the available ones."""
    if isinstance(value, dict):
        name = value.get("name")
        known = available_methods()
        if name is None:
            raise ValueError(f"'method.name' is required; available methods: {known}")
        if name not in known:
            raise ValueError(f"unknown method '{name}'; available methods: {', '.join(known)}")
    return value


def check_auto_calibration(calibration: TextData) -> None:
    """``auto`` trains each candidate on some calibration blocks and scores it on others, so it
    needs at least two blocks (``max_tokens // seq_len``); ValueError naming both fields and the
    fix otherwise. A file shorter than ``max_tokens`` is checked again by the worker."""
    blocks = calibration.max_tokens // calibration.seq_len
    if blocks < 2:
        raise ValueError(
            f"method 'auto' needs at least 2 calibration blocks (some to train each candidate, "
            f"some held back to score it), but calibration.max_tokens = {calibration.max_tokens} "
            f"// calibration.seq_len = {calibration.seq_len} gives {blocks}: raise max_tokens to "
            f"at least {2 * calibration.seq_len} or lower seq_len"
        )
