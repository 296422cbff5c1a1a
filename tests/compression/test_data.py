"""Loading calibration text and cutting it into token blocks."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from slimforge.compression.data import TextSource, load_texts, token_blocks

REPO = Path(__file__).resolve().parents[2]


def test_txt_documents_are_separated_by_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first doc\nline two\n\n\nsecond doc\n\nthird\n", encoding="utf-8")
    assert load_texts(TextSource(path=str(path))) == ["first doc\nline two", "second doc", "third"]
    one = tmp_path / "b.md"
    one.write_text("no blank lines\nat all\n", encoding="utf-8")
    assert load_texts(TextSource(path=str(one))) == ["no blank lines\nat all"]


def test_jsonl_field_and_chat_messages(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    lines = [{"body": "plain text"}, {"messages": chat}, {"body": "more"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert load_texts(TextSource(path=str(path), field="body")) == ["plain text", chat, "more"]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_texts(TextSource(path=str(tmp_path / "missing.txt")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_texts(TextSource(path=str(tmp_path / "x.csv")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_texts(TextSource(path=str(bad)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_texts(TextSource(path=str(broken)))
    with pytest.raises(ValueError, match="exactly one"):
        load_texts(TextSource())


def test_hub_dataset_without_datasets_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        load_texts(TextSource(dataset="some/dataset"))


def test_token_blocks_join_with_eos_and_cap_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    eos = tokenizer.eos_token_id
    blocks = token_blocks(["abc", "de", "fghij"], tokenizer, seq_len=4, max_tokens=100)
    expected = [ord(c) for c in "abc"] + [eos] + [ord(c) for c in "de"] + [eos]
    expected += [ord(c) for c in "fghij"] + [eos]  # 12 tokens -> 3 blocks of 4
    assert blocks.dtype == torch.long
    assert blocks.tolist() == [expected[0:4], expected[4:8], expected[8:12]]
    capped = token_blocks(["abcdefghij" * 10], tokenizer, seq_len=8, max_tokens=20)
    assert capped.shape == (2, 8)  # at most 20 tokens in full blocks of 8
    with pytest.raises(ValueError, match="not even one block"):
        token_blocks(["ab"], tokenizer, seq_len=8, max_tokens=100)
    with pytest.raises(ValueError, match="smaller than one block"):
        token_blocks(["ab"], tokenizer, seq_len=8, max_tokens=4)


def test_chat_documents_are_rendered(tokenizer: PreTrainedTokenizerFast) -> None:
    chat = [{"role": "user", "content": "hi"}]
    blocks = token_blocks([chat], tokenizer, seq_len=4, max_tokens=8)
    # No chat template: rendered as "user: hi" (8 tokens), then EOS.
    assert blocks.tolist() == [[ord(c) for c in "user"], [ord(c) for c in ": hi"]]


def test_shipped_corpus_loads() -> None:
    docs = load_texts(TextSource(path=str(REPO / "data" / "corpus" / "calibration.txt")))
    assert len(docs) > 100 and all(isinstance(d, str) and d for d in docs)


def test_chat_documents_use_the_tokenizers_chat_template(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = (
        "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}{% endfor %}"
    )
    blocks = token_blocks([chat], templated, seq_len=4, max_tokens=12)
    # "<u>hi<a>yo" is 10 characters, then EOS: two full blocks of 4.
    assert blocks.tolist() == [[ord(c) for c in "<u>h"], [ord(c) for c in "i<a>"]]
