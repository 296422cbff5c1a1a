"""The default calibration mixture: general English and text the model writes itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from slimforge.compression.data import TextSource, load_texts, token_blocks
from slimforge.compression.general_calibration import (
    ENGLISH_CALIBRATION,
    general_calibration,
    general_calibration_blocks,
    interleave,
)
from slimforge.compression.progress import RecordingReporter
from slimforge.compression.synthetic import sample_blocks
from tests.compression.helpers import tiny_llama

SEQ_LEN = 32


def english(tokenizer: PreTrainedTokenizerFast, n_blocks: int) -> torch.Tensor:
    """Reference: the first blocks of the shipped English text, cut by ``token_blocks``."""
    texts = load_texts(TextSource(path=str(ENGLISH_CALIBRATION)))
    return token_blocks(texts, tokenizer, seq_len=SEQ_LEN, max_tokens=n_blocks * SEQ_LEN)


def test_the_english_text_ships_in_the_package() -> None:
    """Package data beside the code (a link to data/corpus in a checkout; a copy in a wheel)."""
    import slimforge.compression.corpora as corpora

    assert ENGLISH_CALIBRATION.parent == Path(corpora.__file__).resolve().parent
    repo_copy = Path(__file__).resolve().parents[2] / "data" / "corpus" / ENGLISH_CALIBRATION.name
    assert ENGLISH_CALIBRATION.read_bytes() == repo_copy.read_bytes()


def test_shares_zero_and_one_are_each_source_alone(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    only_english = general_calibration_blocks(
        model, tokenizer, tokens=4 * SEQ_LEN, seq_len=SEQ_LEN, synthetic_share=0.0
    )
    assert torch.equal(only_english, english(tokenizer, 4))
    only_sampled = general_calibration_blocks(
        model, tokenizer, tokens=4 * SEQ_LEN + 5, seq_len=SEQ_LEN, synthetic_share=1.0, seed=2
    )
    want = sample_blocks(model, tokenizer, n_blocks=4, seq_len=SEQ_LEN, seed=2)
    assert torch.equal(only_sampled, want)


def test_half_and_half_alternates_the_sources(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    mixed = general_calibration(model, tokenizer, tokens=6 * SEQ_LEN, seq_len=SEQ_LEN)
    assert mixed.blocks.shape == (6, SEQ_LEN)
    assert (mixed.english_blocks, mixed.synthetic_blocks, mixed.chat) == (3, 3, False)
    assert torch.equal(mixed.blocks[0::2], english(tokenizer, 3))
    assert torch.equal(
        mixed.blocks[1::2], sample_blocks(model, tokenizer, n_blocks=3, seq_len=SEQ_LEN)
    )
    summary = mixed.summary()
    assert summary["english_tokens"] == summary["synthetic_tokens"] == 3 * SEQ_LEN
    again = general_calibration_blocks(model, tokenizer, tokens=6 * SEQ_LEN, seq_len=SEQ_LEN)
    assert torch.equal(again, mixed.blocks)  # seeded


@pytest.mark.parametrize(("n1", "n2"), [(3, 7), (7, 3), (5, 5), (0, 4), (4, 0), (1, 9)])
def test_interleave_spreads_the_second_source_evenly(n1: int, n2: int) -> None:
    first = torch.arange(n1).view(n1, 1)
    second = (100 + torch.arange(n2)).view(n2, 1)
    out = interleave(first, second).view(-1)
    from_second = out >= 100
    assert out[~from_second].tolist() == list(range(n1))  # each source keeps its order
    assert out[from_second].tolist() == [100 + i for i in range(n2)]
    n = n1 + n2
    for k in range(1, n + 1):  # every window of k blocks: k * n2 / n of the second, +-1
        for start in range(n - k + 1):
            got = int(from_second[start : start + k].sum())
            assert abs(got - k * n2 / n) <= 1


def test_when_the_english_text_runs_out_the_rest_is_sampled(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("A few words of English, not even two blocks of them.\n")
    reporter = RecordingReporter()
    mixed = general_calibration(
        tiny_llama(),
        tokenizer,
        tokens=6 * SEQ_LEN,
        seq_len=SEQ_LEN,
        english_path=short,
        reporter=reporter,
    )
    assert (mixed.english_blocks, mixed.synthetic_blocks) == (1, 5)
    assert any(level == "warning" and "ran out" in msg for level, msg, _ in reporter.events)


def test_bad_arguments_are_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match="at least one block"):
        general_calibration_blocks(model, tokenizer, tokens=SEQ_LEN - 1, seq_len=SEQ_LEN)
    with pytest.raises(ValueError, match="synthetic_share"):
        general_calibration_blocks(
            model, tokenizer, tokens=SEQ_LEN, seq_len=SEQ_LEN, synthetic_share=1.5
        )
