"""Split documents into calibration and evaluation text that share no passage.

Leaks are found over model-free word tokens (``slimforge.compression.overlap.word_ids``:
lower-cased words and punctuation marks, so case and whitespace changes still match):
  - exact repeats inside one side are dropped (the language reference repeats whole sections);
  - an evaluation paragraph is dropped when it shares a 13-word run with the calibration text
    (Brown et al. 2020, appendix C) or when half its 5-word shingles are in it (a near-duplicate:
    the containment form of Broder 1997, "On the resemblance and containment of documents").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

from slimforge.compression.overlap import shared_ngram_mask, word_ids

JOIN = "\n\n"  # paragraphs are written one blank line apart
WINDOW = 13  # words: a shared run this long is a leak
SHINGLE = 5  # words per shingle for near-duplicates
NEAR_DUPLICATE = 0.5  # share of a paragraph's shingles found in the calibration text
MIN_DEDUP_WORDS = 8  # shorter paragraphs (headings such as "Note:") may repeat

Document = tuple[str, list[str]]


def stable_order(documents: Iterable[Document]) -> list[Document]:
    """Documents sorted by a hash of their name: a fixed shuffle that mixes their sources."""
    return sorted(documents, key=lambda doc: hashlib.sha256(doc[0].encode()).hexdigest())


def take(documents: Sequence[Document], max_chars: int) -> list[Document]:
    """The leading documents, up to the first one that reaches ``max_chars`` characters."""
    taken, size = [], 0
    for doc in documents:
        if size >= max_chars:
            break
        taken.append(doc)
        size += sum(len(p) for p in doc[1])
    return taken


def interleave(*sources: Sequence[Document]) -> list[str]:
    """Paragraphs of several sources' documents merged so that every prefix of the result holds
    each source in proportion to its size (the bench reads files from the start)."""
    sizes = [max(1, sum(len(p) for _, ps in source for p in ps)) for source in sources]
    done, position = [0] * len(sources), [0] * len(sources)
    merged: list[str] = []
    while True:
        open_ = [k for k in range(len(sources)) if position[k] < len(sources[k])]
        if not open_:
            return merged
        k = min(open_, key=lambda s: done[s] / sizes[s])  # the source furthest behind
        paragraphs = sources[k][position[k]][1]
        merged += paragraphs
        done[k] += sum(len(p) for p in paragraphs)
        position[k] += 1


def unique_paragraphs(paragraphs: Iterable[str]) -> list[str]:
    """Paragraphs whose word tokens have not appeared before (short ones always kept)."""
    seen: set[tuple[int, ...]] = set()
    kept: list[str] = []
    vocab: dict[str, int] = {}
    for paragraph in paragraphs:
        words = tuple(word_ids(paragraph, vocab))
        if len(words) >= MIN_DEDUP_WORDS:
            if words in seen:
                continue
            seen.add(words)
        kept.append(paragraph)
    return kept


def _leaking(kept: list[str], calibration_ids: list[int], vocab: dict[str, int]) -> set[int]:
    """Indices of the paragraphs of ``kept`` that leak (see the module docstring)."""
    ids: list[int] = []
    owner: list[int] = []  # paragraph index of each word token
    for index, paragraph in enumerate(kept):
        words = word_ids(paragraph, vocab)
        ids += words
        owner += [index] * len(words)
    drop: set[int] = set()
    for start, shared in enumerate(shared_ngram_mask(ids, calibration_ids, WINDOW)):
        if shared:  # every paragraph the run touches, since runs may cross a paragraph break
            drop.update(owner[start : start + WINDOW])
    near = shared_ngram_mask(ids, calibration_ids, SHINGLE)
    total = Counter(owner[: len(near)])
    found = Counter(owner[start] for start, shared in enumerate(near) if shared)
    drop |= {index for index, count in found.items() if count >= NEAR_DUPLICATE * total[index]}
    return drop


def remove_leaks(calibration: Sequence[str], evaluation: Sequence[str]) -> list[str]:
    """Evaluation paragraphs left once every leaking one is dropped.

    Repeats until none leaks, since dropping a paragraph joins its neighbours into new runs.
    """
    vocab: dict[str, int] = {}
    calibration_ids = word_ids(JOIN.join(calibration), vocab)
    kept = list(evaluation)
    while drop := _leaking(kept, calibration_ids, vocab):
        kept = [paragraph for index, paragraph in enumerate(kept) if index not in drop]
    return kept


def split(
    calibration: Iterable[str], evaluation: Iterable[str]
) -> tuple[list[str], list[str], dict[str, int]]:
    """(calibration, evaluation) paragraphs deduplicated and leak-free, plus paragraph counts."""
    cal, raw_eval = unique_paragraphs(calibration), unique_paragraphs(evaluation)
    clean = remove_leaks(cal, raw_eval)
    counts = {"calibration": len(cal), "evaluation": len(clean)}
    counts["evaluation_dropped"] = len(raw_eval) - len(clean)
    return cal, clean, counts
