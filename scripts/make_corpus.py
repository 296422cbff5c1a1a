"""Regenerate the shipped calibration / evaluation corpus.

The text is the Python language reference shipped with CPython itself
(``pydoc_data.topics``, PSF License 2.0, a permissive licence), so it is available offline
and may be redistributed. Topics are split by a fixed rule into two disjoint files so that
evaluation text is never seen during calibration.

    python scripts/make_corpus.py  # writes data/corpus/{calibration,evaluation}.txt
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from pydoc_data.topics import topics

OUT = Path(__file__).resolve().parent.parent / "data" / "corpus"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    calibration: list[str] = []
    evaluation: list[str] = []
    for key in sorted(topics):
        text = topics[key].strip()
        # Every third topic (roughly) (by a stable hash of its name) is held out for evaluation.
        bucket = evaluation if hashlib.sha256(key.encode()).digest()[0] % 3 == 0 else calibration
        bucket.append(text)
    (OUT / "calibration.txt").write_text("\n\n".join(calibration) + "\n", encoding="utf-8")
    (OUT / "evaluation.txt").write_text("\n\n".join(evaluation) + "\n", encoding="utf-8")
    for name in ("calibration.txt", "evaluation.txt"):
        print(name, (OUT / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
