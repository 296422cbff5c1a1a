"""Text shipped inside the package, so an installed worker has it without a repository checkout.

``english-calibration.txt`` is general English (Jane Austen, U.S. State of the Union addresses,
the CIA World Factbook; public domain): the English half of the default calibration mixture
(``slimforge.compression.general_calibration``). In a checkout the files are links to
``data/corpus/`` (whose ``LICENSE.md``, shipped beside them, gives provenance and licences);
building the package copies their contents. Its held-out partner, ``english-evaluation.txt``,
stays in ``data/corpus/``: evaluation text is the user's to give. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ENGLISH_CALIBRATION"]

ENGLISH_CALIBRATION = Path(__file__).resolve().parent / "english-calibration.txt"
