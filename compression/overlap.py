"""How much of an evaluation text a reference text already holds (train/test contamination).

Pure Python and torch-free, over token-id sequences (lists, tuples, arrays of ints): the worker
measures the overlap between a job's evaluation text and its calibration / distillation text, and
the shipped corpus is checked with it (``tests/test_corpus.py``).

Two measures:

- **n-gram overlap**: the share of the evaluation's n-token windows that occur anywhere in the
  reference, the 13-gram contamination test of Brown et al. 2020, "Language Models are Few-Shot
  Learners", appendix C (there over words; here over whatever tokens are passed).
- **longest shared run**: the longest run of consecutive tokens found in both sequences (longest
  common substring), by exponential then binary search over the run length, each length tested
  with Karp-Rabin rolling hashes (Karp & Rabin 1987, "Efficient randomized pattern-matching
  algorithms") whose hits are confirmed token by token.

Windows are compared through 64-bit hashes (Python's tuple hash, or 61-bit Karp-Rabin hashes):
two different windows collide with probability about 2**-60 for a pair, so a false n-gram match is
not expected below ~10**8 x 10**8 windows compared; runs are confirmed token by token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import islice

_MODULUS = (1 << 61) - 1  # Mersenne prime: hashes stay exact Python ints below 2**61
_BASE = 1_000_003
# Seed length of longest_shared_run: runs this long are found by extending shared seeds.
_SEED = 8
# Extension compares this many tokens at a time (a C-level slice compare) before single steps.
_CHUNK = 64
# A word (letters, underscores), one digit, or a run of one punctuation mark ("=====" is one
# token): a tokenisation that needs no model. Digits stand alone and rules of "=" or "-" count once,
# as in Llama-style BPE vocabularies, so numbers and underlines weigh roughly as they do there.
WORD_PATTERN = re.compile(r"\d|[^\W\d]+|([^\w\s])\1*")


def word_ids(text: str, vocab: dict[str, int]) -> list[int]:
    """Token ids of ``text`` split into lower-cased words, single digits and punctuation runs.

    ``vocab`` (word -> id) is extended in place with unseen words, so texts tokenised with the same
    dict are comparable. Lower-casing makes overlap checks stricter (case changes still match).
    Returns one id per word, digit or punctuation mark; whitespace gives no token.
    """
    return [vocab.setdefault(m.group(), len(vocab)) for m in WORD_PATTERN.finditer(text.lower())]


def _as_list(tokens: Sequence[int]) -> list[int]:
    # numpy arrays and torch tensors expose tolist(); their scalars hash slower than ints.
    tolist = getattr(tokens, "tolist", None)
    return [int(t) for t in (tolist() if callable(tolist) else tokens)]


def _window_keys(tokens: list[int], length: int) -> list[int]:
    """64-bit hash of every window tokens[i:i + length]: len(tokens) - length + 1 values."""
    shifted = (islice(tokens, i, None) for i in range(length))
    return list(map(hash, zip(*shifted, strict=False)))


def shared_ngram_mask(
    evaluation: Sequence[int], reference: Sequence[int], n: int = 13
) -> list[bool]:
    """For each n-token window of ``evaluation``, whether it occurs anywhere in ``reference``.

    Returns ``len(evaluation) - n + 1`` booleans (empty when the evaluation is shorter than n):
    entry i covers ``evaluation[i:i + n]``. Raises ValueError when n < 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ev, ref = _as_list(evaluation), _as_list(reference)
    if len(ev) < n:
        return []
    seen = set(_window_keys(ref, n)) if len(ref) >= n else set()
    return [key in seen for key in _window_keys(ev, n)]


def ngram_overlap(evaluation: Sequence[int], reference: Sequence[int], n: int = 13) -> float:
    """Share (0..1) of the evaluation's n-token windows that also occur in the reference.

    Counts the ``len(evaluation) - n + 1`` window positions, repeats included (Brown et al. 2020,
    appendix C, use n = 13 over words). 0.0 when the evaluation has fewer than n tokens. Raises
    ValueError when n < 1.
    """
    mask = shared_ngram_mask(evaluation, reference, n)
    return sum(mask) / len(mask) if mask else 0.0


def _run_length(a: list[int], b: list[int], i: int, j: int) -> int:
    """Number of equal tokens a[i + k] == b[j + k] from k = 0 on."""
    run = 0
    while a[i + run : i + run + _CHUNK] == b[j + run : j + run + _CHUNK]:
        if i + run + _CHUNK > len(a) or j + run + _CHUNK > len(b):
            break  # equal slices at an end: count the tail one by one
        run += _CHUNK
    while i + run < len(a) and j + run < len(b) and a[i + run] == b[j + run]:
        run += 1
    return run


def _prefix_hashes(tokens: list[int]) -> list[int]:
    """h[i] = Karp-Rabin hash of tokens[:i]; length len(tokens) + 1."""
    hashes = [0] * (len(tokens) + 1)
    acc = 0
    for i, token in enumerate(tokens, start=1):
        acc = (acc * _BASE + token + 1) % _MODULUS  # +1: a leading id 0 still changes the hash
        hashes[i] = acc
    return hashes


def _rolling_keys(prefix: list[int], length: int) -> list[int]:
    """Karp-Rabin hash of every window of ``length`` tokens, O(1) each whatever the length."""
    power = pow(_BASE, length, _MODULUS)
    starts = range(len(prefix) - length)
    return [(prefix[i + length] - prefix[i] * power) % _MODULUS for i in starts]


def _shares_run(a: list[int], b: list[int], length: int, prefixes: list[list[int]]) -> bool:
    """Whether a and b hold a common window of ``length`` tokens (hash hits confirmed).

    Short windows are keyed by tuple hashes (C speed), long ones by Karp-Rabin hashes (O(1) per
    window whatever its length) from ``prefixes``, filled with both prefix hashes on first use.
    """
    if length <= _SEED * 4:
        keys_a, keys_b = _window_keys(a, length), _window_keys(b, length)
    else:
        if not prefixes:
            prefixes += [_prefix_hashes(a), _prefix_hashes(b)]
        keys_a, keys_b = (_rolling_keys(prefix, length) for prefix in prefixes)
    first_in_a = dict(zip(keys_a, range(len(keys_a)), strict=True))
    common = first_in_a.keys() & set(keys_b)
    hits = [j for j, key in enumerate(keys_b) if key in common] if common else []
    return any(
        a[first_in_a[keys_b[j]] : first_in_a[keys_b[j]] + length] == b[j : j + length] for j in hits
    )


def _search_run(a: list[int], b: list[int], found: int, limit: int) -> int:
    """Longest shared run, knowing one of ``found`` tokens is shared and none beyond ``limit``.

    Exponential then binary search over the length: about 2 * log2(answer) hashed passes.
    """
    prefixes: list[list[int]] = []
    length = max(1, 2 * found)
    while length <= limit and _shares_run(a, b, length, prefixes):
        found, length = length, length * 2
    limit = min(limit, length - 1)
    while found < limit:
        middle = (found + limit + 1) // 2
        if _shares_run(a, b, middle, prefixes):
            found = middle
        else:
            limit = middle - 1
    return found


def _seed_and_extend(
    a: list[int], b: list[int], keys_a: list[int], keys_b: list[int]
) -> int | None:
    """Longest shared run of >= _SEED tokens, extended from the shared seed windows; None when no
    seed is confirmed or when repeated seeds would make too many (a, b) pairs to extend."""
    common = set(keys_a).intersection(keys_b)
    where_b: dict[int, list[int]] = {}
    for j in [j for j, key in enumerate(keys_b) if key in common] if common else []:
        where_b.setdefault(keys_b[j], []).append(j)
    best, pairs, budget = 0, 0, 16 * (len(a) + len(b))
    for i in [i for i, key in enumerate(keys_a) if key in common] if common else []:
        for j in where_b[keys_a[i]]:
            pairs += 1
            if pairs > budget:
                return None
            if i and j and a[i - 1] == b[j - 1]:
                continue  # inside a run already extended from its start
            best = max(best, _run_length(a, b, i, j))
    return best if best >= _SEED else None


def longest_shared_run(a: Sequence[int], b: Sequence[int]) -> int:
    """Length in tokens of the longest run of consecutive tokens present in both sequences.

    0 when they share no token. Shared 8-token seeds are extended token by token (linear time on
    ordinary text); shorter answers, or text so repetitive that seeds pair up more than 16 times
    per token, fall back to a search over the length (O((len(a) + len(b)) * log(answer))).
    Measured on one CPU core: ~0.5 s for 50k tokens against 1M, ~2 s for 1M against 1M,
    ~8 s for two identical 1M-token sequences.
    """
    la, lb = _as_list(a), _as_list(b)
    limit = min(len(la), len(lb))
    if limit == 0:
        return 0
    if limit >= _SEED:
        keys_a, keys_b = _window_keys(la, _SEED), _window_keys(lb, _SEED)
        best = _seed_and_extend(la, lb, keys_a, keys_b)
        if best is not None:
            return best
        if not set(keys_a).intersection(keys_b):
            limit = _SEED - 1  # no shared seed: the answer is shorter than one
    return _search_run(la, lb, 0, limit)
