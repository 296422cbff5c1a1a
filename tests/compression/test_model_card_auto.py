"""The model card's ``auto`` section: every candidate, the winner, and how the final model was
built (rebuilt from the original, or kept as scored)."""

from __future__ import annotations

from typing import Any

import pytest

from slimforge.compression.model_card.auto import auto_section


def _details(rebuilt: bool) -> dict[str, Any]:
    return {
        "winner": "mlp",
        "reason": "lowest KL(teacher ‖ student) on 2,048 held-back calibration tokens",
        "rebuilt": rebuilt,
        "probe_tokens": 2048,
        "score_tokens": 2048,
        "candidates": [
            {
                "name": "mlp",
                "method": {"axes": ["mlp"]},
                "status": "scored",
                "kl": 0.84,
                "top1_agreement": 0.57,
                "params": 107_972_928,
                "seconds": 98.2,
                "shape": "layers 30, hidden 576, mlp 1024, heads 9",
            },
            {"name": "width", "status": "skipped", "estimated_seconds": 147.3},
        ],
    }


@pytest.mark.parametrize(
    ("rebuilt", "says"),
    [
        (True, "built again from the original model on all the calibration text"),
        (False, "continued from the winner as it was scored (its probe's kd included)"),
    ],
)
def test_the_auto_section_names_candidates_winner_and_how_it_was_built(
    rebuilt: bool, says: str
) -> None:
    text = "\n".join(auto_section({"method_details": _details(rebuilt)}))
    assert "Winner: **mlp**" in text and says in text
    assert "| mlp | axes=['mlp'] | layers 30, hidden 576, mlp 1024, heads 9 | 107,972,928 |" in text
    assert "| width |" in text and "skipped (estimated 147 s, over the budget)" in text


def test_no_auto_section_without_a_winner() -> None:
    assert auto_section({"method_details": {"candidates": [{"name": "a"}]}}) == []
