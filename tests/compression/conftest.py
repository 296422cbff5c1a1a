"""Fixtures for the compression tests (the builders live in ``helpers.py``)."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from tests.compression.helpers import char_tokenizer


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer matching the tiny models' 256-token vocabulary."""
    return char_tokenizer()
