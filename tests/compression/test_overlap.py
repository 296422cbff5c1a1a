"""Overlap between token sequences: n-gram share and longest shared run."""

from __future__ import annotations

import random
from array import array

import pytest

from slimforge.compression.overlap import (
    longest_shared_run,
    ngram_overlap,
    shared_ngram_mask,
    word_ids,
)


def brute_force_run(a: list[int], b: list[int]) -> int:
    """Longest common substring by the textbook O(len(a) * len(b)) dynamic programme."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def test_ngram_overlap_by_hand() -> None:
    evaluation, reference = [1, 2, 3, 4, 5], [9, 2, 3, 4, 8]
    # bigrams (1,2) (2,3) (3,4) (4,5): the reference holds (2,3) and (3,4)
    assert shared_ngram_mask(evaluation, reference, n=2) == [False, True, True, False]
    assert ngram_overlap(evaluation, reference, n=2) == 0.5
    # trigrams (1,2,3) (2,3,4) (3,4,5): only (2,3,4)
    assert ngram_overlap(evaluation, reference, n=3) == pytest.approx(1 / 3)
    assert ngram_overlap(evaluation, reference, n=1) == pytest.approx(3 / 5)
    # repeats count once per position: (7,7) three times, all in the reference
    assert ngram_overlap([7, 7, 7, 7], [7, 7], n=2) == 1.0
    assert ngram_overlap([7, 7, 7, 7], [7], n=2) == 0.0


def test_ngram_overlap_edges_and_input_types() -> None:
    assert ngram_overlap([1, 2], [1, 2], n=3) == 0.0  # no trigram to count
    assert shared_ngram_mask([1, 2], [1, 2], n=3) == []
    assert ngram_overlap([1, 2, 3], [], n=2) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        ngram_overlap([1, 2, 3], [1, 2, 3], n=0)
    typed = ngram_overlap(array("q", [1, 2, 3, 4, 5]), (9, 2, 3, 4, 8), n=2)
    assert typed == ngram_overlap([1, 2, 3, 4, 5], [9, 2, 3, 4, 8], n=2)


def test_thirteen_gram_share_of_a_copied_block() -> None:
    rng = random.Random(0)
    reference = [rng.randrange(50_000) for _ in range(5_000)]
    evaluation = [rng.randrange(50_000) for _ in range(1_012)]
    evaluation[100:200] = reference[3_000:3_100]  # 100 copied tokens: 100 - 13 + 1 = 88 windows
    assert ngram_overlap(evaluation, reference) == 88 / 1_000


def test_longest_shared_run_by_hand() -> None:
    assert longest_shared_run([1, 2, 3, 4], [9, 2, 3, 5]) == 2
    assert longest_shared_run([1, 2, 3], [4, 5, 6]) == 0
    assert longest_shared_run([], [1, 2]) == 0
    assert longest_shared_run([5], [5]) == 1
    assert longest_shared_run(list(range(20)), list(range(20))) == 20
    assert longest_shared_run(array("q", [1, 2, 3, 4]), (0, 2, 3, 4, 0)) == 3


@pytest.mark.parametrize("length", [5, 7, 8, 9, 63, 64, 65, 129])
def test_implanted_run_is_found_exactly(length: int) -> None:
    rng = random.Random(length)
    a = [rng.randrange(1_000_000) for _ in range(3_000)]
    b = [rng.randrange(1_000_000) for _ in range(4_000)]
    b[-length:] = a[500 : 500 + length]  # at the end of b: extension must stop at the edge
    assert longest_shared_run(a, b) == length
    assert longest_shared_run(b, a) == length


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_small_vocabularies(seed: int) -> None:
    rng = random.Random(seed)
    vocab = [2, 3, 5, 50][seed % 4]  # small vocabularies: many short and repeated runs
    a = [rng.randrange(vocab) for _ in range(rng.randrange(1, 250))]
    b = [rng.randrange(vocab) for _ in range(rng.randrange(1, 250))]
    if seed % 2:
        b[10:10] = a[20:60]  # plus a long shared block
    assert longest_shared_run(a, b) == brute_force_run(a, b)


def test_repetitive_text_falls_back_to_the_length_search() -> None:
    zeros = [0] * 3_000  # every seed pairs with every other: too many pairs to extend
    assert longest_shared_run(zeros, zeros[:2_000]) == 2_000
    a, b = [1, 2, 3, 1, 2, 3, 9] * 200, [1, 2, 3] * 400
    assert longest_shared_run(a, b) == brute_force_run(a[:70], b[:70]) == 6


def test_word_ids_share_one_vocabulary() -> None:
    vocab: dict[str, int] = {}
    assert word_ids("Hello, hello world!", vocab) == [0, 1, 0, 2, 3]
    assert word_ids("WORLD  peace\n", vocab) == [2, 4]
    assert vocab == {"hello": 0, ",": 1, "world": 2, "!": 3, "peace": 4}
    assert word_ids("x_1 = 3.14", vocab) == [5, 6, 7, 8, 9, 6, 10]  # digits one by one
    assert list(vocab)[5:] == ["x_", "1", "=", "3", ".", "4"]
    assert word_ids("Title\n=====\n!!", vocab) == [11, 12, 13]  # a rule is one token
