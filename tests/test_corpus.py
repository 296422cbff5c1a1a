"""The shipped corpus is honest: no evaluation file shares a passage with a calibration file.

Both domains (Python docs, English prose) and across them. The fast tests tokenise with
``slimforge.compression.overlap.word_ids`` (no model); the slow one with the real SmolLM2 tokenizer.
Regenerate the files, and print these figures, with ``scripts/make_corpus.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from slimforge.compression.overlap import longest_shared_run, ngram_overlap, word_ids

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus"
CALIBRATION = ("calibration.txt", "english-calibration.txt")
EVALUATION = ("evaluation.txt", "english-evaluation.txt")
PAIRS = [(evaluation, calibration) for evaluation in EVALUATION for calibration in CALIBRATION]
MAX_SHARE = 0.01  # of the evaluation's 13-grams found in the calibration text
MAX_RUN = 50  # SmolLM2 tokens: no shared run may be this long
# Any 50 SmolLM2 tokens of the evaluation files cover at least 23 word_ids tokens (the report's
# "fewest words in 50 tokens"; BPE tokens are mostly shorter than words), so a shared 50-token
# run holds a shared run of >= 21 words (the two words cut at its ends may differ). Failing at
# 20 words is stricter than the 50-token bound; test_no_leak_in_smollm2_tokens checks the margin.
MAX_WORD_RUN = 20
MIN_TOKENS = {  # what the bench and the worker read (16k-32k tokens per side), with room
    "calibration.txt": 100_000,
    "evaluation.txt": 32_000,
    "english-calibration.txt": 250_000,
    "english-evaluation.txt": 40_000,
}


@pytest.fixture(scope="module")
def words() -> dict[str, list[int]]:
    vocab: dict[str, int] = {}
    return {
        name: word_ids((CORPUS / name).read_text(encoding="utf-8"), vocab)
        for name in CALIBRATION + EVALUATION
    }


@pytest.mark.parametrize(("evaluation", "calibration"), PAIRS)
def test_no_leak_in_words(words: dict[str, list[int]], evaluation: str, calibration: str) -> None:
    assert ngram_overlap(words[evaluation], words[calibration], 13) <= MAX_SHARE
    assert longest_shared_run(words[evaluation], words[calibration]) < MAX_WORD_RUN


def test_the_check_catches_a_copied_passage(words: dict[str, list[int]]) -> None:
    copied = words["calibration.txt"][5_000 : 5_000 + MAX_WORD_RUN]
    leaky = words["evaluation.txt"][:3_000] + copied + words["evaluation.txt"][3_000:]
    assert longest_shared_run(leaky, words["calibration.txt"]) >= MAX_WORD_RUN


@pytest.mark.slow
def test_no_leak_in_smollm2_tokens() -> None:
    from tests.compression.test_smollm2_slow import smollm2_dir

    sys.path.insert(0, str(REPO / "scripts"))
    from corpus_report import fewest_words_per_run, load_tokenizer

    tokenizer = load_tokenizer(smollm2_dir())
    texts = {name: (CORPUS / name).read_text(encoding="utf-8") for name in MIN_TOKENS}
    ids = {
        name: tokenizer(text, add_special_tokens=False)["input_ids"] for name, text in texts.items()
    }
    for name, minimum in MIN_TOKENS.items():
        assert len(ids[name]) >= minimum, name
    for evaluation, calibration in PAIRS:
        assert ngram_overlap(ids[evaluation], ids[calibration], 13) <= MAX_SHARE
        assert longest_shared_run(ids[evaluation], ids[calibration]) < MAX_RUN
    for evaluation in EVALUATION:  # the fast test's word bound is at least as strict
        assert fewest_words_per_run(texts[evaluation], tokenizer, MAX_RUN) - 2 >= MAX_WORD_RUN
