"""Greedy continuations against a hand-written greedy decoder on tiny random models."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from slimforge.compression.generations import (
    CHAT_PROMPTS,
    TEXT_PROMPTS,
    greedy_continuations,
    greedy_texts,
    prompt_ids,
)
from tests.compression.helpers import VOCAB, char_tokenizer

CHAT = (
    "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}>{% endif %}"
)


def spread_llama(seed: int) -> LlamaForCausalLM:
    """A tiny Llama with weights wide enough that its argmax is not just its input token."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        initializer_range=0.3,
        attention_dropout=0.5,  # so that a model left in training mode would decode at random
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def reference_greedy(model: torch.nn.Module, ids: list[int], n: int, eos: int) -> list[int]:
    """Argmax of the full forward pass, one token at a time, no cache."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] == eos:
                break
    return out


@pytest.mark.parametrize("chat", [False, True])
def test_continuations_equal_a_hand_written_greedy_decoder(chat: bool) -> None:
    tok = char_tokenizer()
    if chat:
        tok.chat_template = CHAT
    teacher, student = spread_llama(0), spread_llama(1)
    student.train()  # left in training mode (as after kd): decoding must still be greedy
    got = greedy_continuations(teacher, student, tok, max_new_tokens=10)
    assert student.training  # the mode is restored
    assert [g["prompt"] for g in got] == list(CHAT_PROMPTS if chat else TEXT_PROMPTS)
    for g in got:
        assert g["chat_template"] is chat
        if chat:
            rendered: Any = tok.apply_chat_template(
                [{"role": "user", "content": g["prompt"]}], add_generation_prompt=True
            )
            expected_ids = list(rendered["input_ids"])
            head = tok("<s>[user]")["input_ids"]
            assert expected_ids[: len(head)] == head  # the template was applied
        else:
            expected_ids = tok(g["prompt"])["input_ids"]
        assert prompt_ids(tok, g["prompt"], chat=chat)[0].tolist() == expected_ids
        for role, model in (("teacher", teacher), ("student", student)):
            new = reference_greedy(model.eval(), expected_ids, 10, eos=2)
            assert g[role] == str(tok.decode(new, skip_special_tokens=True)).strip()
        student.train()
    assert any(g["teacher"] != g["student"] for g in got)


def test_same_model_same_text_and_repeatable() -> None:
    tok = char_tokenizer()
    model = spread_llama(3)
    first = greedy_continuations(model, model, tok, prompts=["Hello"], max_new_tokens=6)
    again = greedy_continuations(model, model, tok, prompts=["Hello"], max_new_tokens=6)
    assert first == again and first[0]["teacher"] == first[0]["student"] != ""
    # The continuation holds new tokens only: at most max_new_tokens characters here.
    assert len(first[0]["teacher"].split()) <= 6
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_continuations(model, model, tok, max_new_tokens=0)


def test_teacher_texts_measured_before_an_in_place_change() -> None:
    tok = char_tokenizer()
    model = spread_llama(4)
    before = greedy_texts(model, tok, prompts=["Hi", "Yo"], max_new_tokens=5)
    expected = greedy_continuations(spread_llama(4), spread_llama(5), tok, ["Hi", "Yo"], 5)
    with torch.no_grad():  # the method changes the model in place: it becomes the student
        model.load_state_dict(spread_llama(5).state_dict())
    got = greedy_continuations(None, model, tok, ["Hi", "Yo"], 5, teacher_texts=before)
    assert got == expected
    with pytest.raises(ValueError, match="teacher"):
        greedy_continuations(None, model, tok, ["Hi"], 5)
    with pytest.raises(ValueError, match="1 teacher continuations for 2 prompts"):
        greedy_continuations(None, model, tok, ["Hi", "Yo"], 5, teacher_texts=["x"])


def test_generation_stops_at_the_models_own_end_token() -> None:
    tok = char_tokenizer()
    model = spread_llama(6)
    ids = tok("Hello")["input_ids"]
    free = reference_greedy(model, ids, 10, eos=2)
    stop = next(i for i, t in enumerate(free) if t not in free[:i] and i >= 1)
    model.generation_config.eos_token_id = free[stop]  # e.g. a chat model's end-of-turn token
    (text,) = greedy_texts(model, tok, prompts=["Hello"], max_new_tokens=10)
    assert text == str(tok.decode(free[: stop + 1], skip_special_tokens=True)).strip()


@pytest.mark.slow
def test_smollm2_answers_through_its_chat_template() -> None:
    from slimforge.compression import ModelSource, load_model
    from tests.compression.test_smollm2_slow import GGUF, smollm2_dir

    model, tok = load_model(ModelSource(path=str(smollm2_dir()), gguf_file=GGUF))
    got = greedy_continuations(model, model, tok, max_new_tokens=24)
    print("\n" + "\n".join(f"{g['prompt']!r} -> {g['teacher']!r}" for g in got))
    assert all(g["chat_template"] and g["teacher"] == g["student"] != "" for g in got)
    assert [g["prompt"] for g in got] == list(CHAT_PROMPTS)
    assert "Paris" in got[0]["teacher"]  # an instruct model prompted as one knows this


def _word_runs(text: str, n: int) -> set[tuple[str, ...]]:
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_the_shown_prompts_share_no_four_words_with_the_calibration_prompts() -> None:
    """Every job shows its student answering these; the synthetic calibration text starts from
    ``PROMPTS``: a shared request would flatter the student (version 1 had "a short story
    about a lighthouse keeper", "what is the capital of" and "how do i make a")."""
    from slimforge.compression.prompts import PROMPTS

    calibration = set().union(*(_word_runs(p, 4) for p in PROMPTS))
    for shown in CHAT_PROMPTS + TEXT_PROMPTS:
        assert not _word_runs(shown, 4) & calibration, shown
