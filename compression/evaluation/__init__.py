"""Quality and size measurements of a (compressed) model.

- :func:`perplexity`: one model on token windows.
- :func:`fidelity`: teacher and student in the same pass: perplexities and their ratio,
  KL(teacher ‖ student) per token, top-1 agreement, bootstrap intervals and the protocol.
- :func:`teacher_reference` + :func:`fidelity_from_reference`: the same without keeping the
  teacher in memory (top-k KL, a documented lower bound).
- :func:`artifact_size`: bytes on disk.
"""

from __future__ import annotations

from slimforge.compression.evaluation.fidelity import fidelity
from slimforge.compression.evaluation.perplexity import artifact_size, perplexity
from slimforge.compression.evaluation.reference import (
    TeacherReference,
    fidelity_from_reference,
    teacher_reference,
    topk_kl,
)
from slimforge.compression.evaluation.results import (
    TOKEN_BLOCKS_PACKING,
    EvaluationProtocol,
    FidelityResult,
    Interval,
)

__all__ = [
    "TOKEN_BLOCKS_PACKING",
    "EvaluationProtocol",
    "FidelityResult",
    "Interval",
    "TeacherReference",
    "artifact_size",
    "fidelity",
    "fidelity_from_reference",
    "perplexity",
    "teacher_reference",
    "topk_kl",
]
