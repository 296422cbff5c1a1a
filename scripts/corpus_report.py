"""Token counts and overlaps of the shipped corpus files, printed as Markdown (for LICENSE.md)."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from slimforge.compression.overlap import WORD_PATTERN, longest_shared_run, ngram_overlap, word_ids

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CALIBRATION = ("calibration.txt", "english-calibration.txt")
EVALUATION = ("evaluation.txt", "english-evaluation.txt")
RUN = 50  # tokens: the shared-run bound that tests/test_corpus.py holds the files to


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer  # only the report needs the ML stack

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)


def fewest_words_per_run(text: str, tokenizer: Any, run: int = RUN) -> int:
    """Fewest whole words (word_ids tokens) inside any ``run`` consecutive model tokens.

    A shared run of ``run`` model tokens is a shared text span holding at least this many words,
    all but the two at its ends shared as a word run too: the fast test's word bound is sound
    when it is at most this minus 2.
    """
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = spans["offset_mapping"]
    starts, ends = [], []
    for match in WORD_PATTERN.finditer(text):
        starts.append(match.start())
        ends.append(match.end())
    fewest = len(starts)
    for i in range(len(offsets) - run + 1):
        begin, end = offsets[i][0], offsets[i + run - 1][1]
        # words starting at or after begin and ending at or before end
        inside = bisect.bisect_right(ends, end) - bisect.bisect_left(starts, begin)
        fewest = min(fewest, inside)
    return fewest


def report(folder: Path, tokenizer_folder: Path) -> None:
    """Print sizes, token counts and evaluation x calibration overlaps of the corpus files."""
    tokenizer = load_tokenizer(tokenizer_folder)
    texts = {name: (folder / name).read_text(encoding="utf-8") for name in CALIBRATION + EVALUATION}
    ids = {n: tokenizer(t, add_special_tokens=False)["input_ids"] for n, t in texts.items()}
    vocab: dict[str, int] = {}
    words = {name: word_ids(text, vocab) for name, text in texts.items()}
    print("| file | bytes | SmolLM2 tokens | words | fewest words in 50 tokens |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, text in texts.items():
        fewest = fewest_words_per_run(text, tokenizer)
        size = len(text.encode())
        print(f"| {name} | {size:,} | {len(ids[name]):,} | {len(words[name]):,} | {fewest} |")
    print()
    print("| evaluation | calibration | 13-gram share (tokens) | longest run (tokens) |")
    print("| --- | --- | ---: | ---: |")
    for ev in EVALUATION:
        for cal in CALIBRATION:
            share = ngram_overlap(ids[ev], ids[cal], 13)
            run = longest_shared_run(ids[ev], ids[cal])
            word_share = ngram_overlap(words[ev], words[cal], 13)
            word_run = longest_shared_run(words[ev], words[cal])
            print(
                f"| {ev} | {cal} | {share:.3%} ({word_share:.3%} of words) "
                f"| {run} ({word_run} words) |"
            )
