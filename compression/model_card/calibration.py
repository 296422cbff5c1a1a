"""The card's words for the calibration text: what the method fitted and ``kd`` trained on.

A student keeps the domain of its calibration text (a general model calibrated on one domain
loses the rest), so a reader needs the source as much as the figures. Read from the card's
public parameters (``calibration``: file names, never server paths) and the job's metrics
(``metrics["calibration"]``: tokens of each part, written by the worker's calibrating stage).
Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["calibration_lines"]

_ENGLISH = (
    "general English shipped with slimforge (`{name}`: Jane Austen's *Pride and Prejudice*, "
    "U.S. State of the Union addresses and CIA World Factbook country backgrounds, all in the "
    "public domain)"
)


def _sampled(tokens: int | None, chat: bool | None) -> str:
    if chat is None:
        how = "text it wrote itself"
    elif chat:
        how = "its answers to a fixed list of instructions put through its chat template"
    else:
        how = "text it wrote from its BOS token"
    amount = f"{tokens:,} tokens" if tokens is not None else "text"
    return f"{amount} sampled from the original model ({how})"


def _source_words(calibration: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    """The calibration source in words: mixture, sampled text, file or dataset."""
    if calibration.get("mixture"):
        english = _ENGLISH.format(name=figures.get("english_text") or "english-calibration.txt")
        if figures.get("english_tokens") is not None:
            english = f"{figures['english_tokens']:,} tokens of {english}"
        sampled = _sampled(figures.get("synthetic_tokens"), figures.get("synthetic_chat"))
        return f"slimforge's general-purpose mixture: {english}, and {sampled}, interleaved"
    if calibration.get("synthetic"):
        return _sampled(figures.get("synthetic_tokens"), figures.get("synthetic_chat"))
    amount = f"{figures['tokens']:,} tokens of " if figures.get("tokens") else ""
    if calibration.get("dataset"):
        split = calibration.get("split") or "train"
        return f"{amount}the Hub dataset `{calibration['dataset']}` (split `{split}`)"
    digest = f" (sha256 `{calibration['sha256']}`)" if calibration.get("sha256") else ""
    return f"{amount}the file `{calibration.get('path')}`{digest}"


def calibration_lines(
    calibration: Mapping[str, Any] | None, metrics: Mapping[str, Any]
) -> list[str]:
    """Markdown lines saying what the model was calibrated on (and ``kd`` trained on, when it
    ran), or none when the parameters have no calibration section."""
    if not calibration:
        return []
    figures = metrics.get("calibration") or {}
    words = _source_words(calibration, figures)
    kd = " and the `kd` stage trained on the same source" if metrics.get("distill") else ""
    lines = ["", f"The method was calibrated{kd} on {words}."]
    if calibration.get("mixture") or calibration.get("synthetic"):
        lines.append(
            "Text the model writes itself keeps the student close to the teacher's whole "
            "distribution instead of one domain's (data-free calibration as in LLM-QAT, "
            "arXiv 2305.17888)."
        )
    return lines
