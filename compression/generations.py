"""Greedy continuations of a few fixed prompts by the teacher and the student, for the card.

Users read text before they read numbers (issue 16, item 5): three general prompts (a fact, a
how-to, a story opener) continued by both models show at a glance whether the student still
writes what the teacher writes.

Decisions:

- **Greedy** (``do_sample=False``, one beam): the same weights give the same text on every run,
  and teacher and student are compared on equal terms. The models' own generation configs
  (temperature, top-p, repetition penalty …) are ignored on purpose: an explicit
  ``GenerationConfig`` replaces them.
- **Chat template when the tokenizer has one**: an instruct model's tokenizer ships a chat
  template (``tokenizer.chat_template``), and such a model is meant to be prompted through it;
  the prompt then becomes one user message with the generation prompt appended
  (``add_generation_prompt=True``). Without a template the prompt is plain text, tokenised with
  the tokenizer's special tokens (a BOS where the tokenizer adds one). ``chat`` overrides the
  choice.
- **Prompts by mode**: requests (``CHAT_PROMPTS``) through a chat template, openings
  (``TEXT_PROMPTS``) as plain text. Measured on SmolLM2-135M-Instruct: through its template,
  "What is the capital of France?" gets "The capital of France is Paris.", while the opening
  "The capital of France is" as a chat message gets an unrelated greeting; as plain text the
  instruct model ends the requests at once (empty continuations) but completes the openings.
- The continuation is the decoded new tokens only (special tokens skipped, outer whitespace
  stripped); generation stops at ``max_new_tokens`` or at the model's EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

__all__ = [
    "CHAT_PROMPTS",
    "TEXT_PROMPTS",
    "default_prompts",
    "greedy_continuations",
    "greedy_texts",
    "prompt_ids",
    "uses_chat_template",
]

# Requests, for a model prompted through its chat template (an instruct model answers them).
CHAT_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "How do I make a good cup of tea?",
    "Write the opening lines of a short story about a lighthouse keeper.",
)
# Openings, for a model continuing plain text (a base model completes them).
TEXT_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "To make a good cup of tea, you should",
    "Once upon a time, in a small village by the sea,",
)


def default_prompts(chat: bool) -> tuple[str, ...]:
    """The three fixed prompts: requests through a chat template, openings for plain text."""
    return CHAT_PROMPTS if chat else TEXT_PROMPTS


def prompt_ids(tokenizer: Any, prompt: str, *, chat: bool) -> torch.Tensor:
    """LongTensor [1, prompt_tokens] of ``prompt``: through the chat template as one user
    message (generation prompt appended) when ``chat``, else the plain text."""
    if chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return torch.tensor([list(ids)], dtype=torch.long)


def _greedy(model: torch.nn.Module, ids: torch.Tensor, config: GenerationConfig) -> list[int]:
    """The new token ids of ``model``'s greedy continuation of ``ids`` [1, prompt_tokens]."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off: greedy decoding must not depend on the mode kd left behind
    try:
        with torch.inference_mode():
            out = model.generate(  # type: ignore[operator]
                input_ids=ids.to(device),
                attention_mask=torch.ones_like(ids, device=device),
                generation_config=config,
            )
    finally:
        model.train(was_training)
    return [int(t) for t in out[0, ids.shape[1] :]]


def _config(model: torch.nn.Module, tokenizer: Any, max_new_tokens: int) -> GenerationConfig:
    """Greedy, ``max_new_tokens`` at most, stopping at the tokenizer's EOS or any end token the
    model's own generation config names (chat models end a turn with their own token)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = tokenizer.eos_token_id
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = {eos} | set(own if isinstance(own, list) else [own])
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(e for e in ends if e is not None) or None,
        # No padding happens with one prompt at a time; generate wants an id all the same.
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )


def uses_chat_template(tokenizer: Any, chat: bool | None = None) -> bool:
    """Whether prompts go through the chat template: ``chat``, or (None) whether the tokenizer
    has one."""
    return bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat


def greedy_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    *,
    chat: bool | None = None,
) -> list[str]:
    """``model``'s greedy continuation of each prompt (at most ``max_new_tokens`` tokens each,
    decoded without special tokens). Run it on the original model before a method changes it
    in place, and pass the result to :func:`greedy_continuations` as ``teacher_texts``.
    Raises ValueError if ``max_new_tokens`` < 1."""
    config = _config(model, tokenizer, max_new_tokens)
    use_chat = uses_chat_template(tokenizer, chat)
    prompts = default_prompts(use_chat) if prompts is None else prompts
    return [
        str(
            tokenizer.decode(
                _greedy(model, prompt_ids(tokenizer, prompt, chat=use_chat), config),
                skip_special_tokens=True,
            )
        ).strip()
        for prompt in prompts
    ]


def greedy_continuations(
    teacher: torch.nn.Module | None,
    student: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    *,
    chat: bool | None = None,
    teacher_texts: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Greedy continuations of each prompt by the teacher and the student (transformers'
    ``generate`` with ``do_sample=False, num_beams=1``).

    Each model runs on the device its parameters are on. ``chat``: None uses the chat template
    when ``tokenizer.chat_template`` is set; ``prompts``: None takes the three fixed prompts
    of that mode (see the module docstring). ``teacher_texts``: the
    teacher's continuations from :func:`greedy_texts`, when the teacher no longer exists
    (``teacher`` may then be None). Returns one dict per prompt: ``{"prompt": str, "teacher":
    str, "student": str, "chat_template": bool}``, the list the model card reads from
    ``metrics["generations"]``. Raises ValueError if ``max_new_tokens`` < 1, or if neither
    ``teacher`` nor ``teacher_texts`` (one per prompt) is given.
    """
    use_chat = uses_chat_template(tokenizer, chat)
    prompts = default_prompts(use_chat) if prompts is None else prompts
    if teacher_texts is None:
        if teacher is None:
            raise ValueError("give the teacher model or its continuations (teacher_texts)")
        teacher_texts = greedy_texts(teacher, tokenizer, prompts, max_new_tokens, chat=chat)
    if len(teacher_texts) != len(prompts):
        raise ValueError(f"{len(teacher_texts)} teacher continuations for {len(prompts)} prompts")
    student_texts = greedy_texts(student, tokenizer, prompts, max_new_tokens, chat=use_chat)
    return [
        {"prompt": p, "teacher": t, "student": s, "chat_template": use_chat}
        for p, t, s in zip(prompts, teacher_texts, student_texts, strict=True)
    ]
