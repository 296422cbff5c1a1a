"""The card's account of an ``auto`` job: every candidate pipeline, its score and the choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["auto_section"]


def _cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else format(value, fmt)


def auto_section(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown lines for ``metrics.method_details`` of an ``auto`` job (empty otherwise): a
    table of the candidates (KL(teacher ‖ student) in nats per token and top-1 agreement on
    the held-back calibration text after the kd probe) and the reason for the winner."""
    details = metrics.get("method_details") or {}
    rows = details.get("candidates")
    if not rows or "winner" not in details:  # minitron's own shape candidates have no winner
        return []
    lines = [
        "",
        "## How the pipeline was chosen (`auto`)",
        "",
        f"Each candidate was built from the original model, trained by kd for "
        f"{details.get('probe_tokens', 0):,} tokens, and scored on "
        f"{details.get('score_tokens', 0):,} held-back calibration tokens. Winner: "
        f"**{details.get('winner')}**, for the {details.get('reason', '')}."
        + (
            " The winner was then built again from the original model on all the calibration "
            "text (held-back blocks included) before the final kd."
            if details.get("rebuilt")
            else " The final kd continued from the winner as it was scored (its probe's kd "
            "included)."
        ),
        "",
        "| candidate | method | result | parameters | KL (nats/token) | top-1 agreement "
        "| seconds | status |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        method = ", ".join(f"{k}={v}" for k, v in (row.get("method") or {}).items())
        status = row.get("status", "")
        if status == "refused":
            status += f": {row.get('reason', '')}"
        elif status == "skipped":
            status += f" (estimated {row.get('estimated_seconds', 0):.0f} s, over the budget)"
        lines.append(
            f"| {row.get('name')} | {method} | {row.get('shape', '')} "
            f"| {_cell(row, 'params', ',')} | {_cell(row, 'kl', '.4f')} "
            f"| {_cell(row, 'top1_agreement', '.1%')} | {_cell(row, 'seconds', '.0f')} | {status} |"
        )
    return lines
