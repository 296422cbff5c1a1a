"""Calibration and evaluation text: load documents and cut them into token blocks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slimforge.compression.text_encoding import check_utf8

__all__ = ["Document", "TextSource", "load_texts", "token_blocks"]

# A document is plain text or a chat (a list of {"role", "content"} messages), which
# token_blocks renders with the tokenizer's chat template.
Document = str | list[dict[str, Any]]


@dataclass(frozen=True)
class TextSource:
    """Where text comes from: a local ``path`` (.txt, .md, .jsonl) or a Hub ``dataset``.

    ``label``: the request field the source was given in (``"calibration.path"``), for errors.
    """

    path: str | None = None
    dataset: str | None = None
    split: str = "train"
    config_name: str | None = None
    field: str = "text"
    revision: str | None = None
    label: str | None = None


def _record_document(record: Any, field: str, where: str) -> Document:
    """The text of one JSON record / dataset row: ``field`` as a string, or a chat."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    value = record.get(field)
    if value is None and "messages" in record:
        value = record["messages"]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return value
    raise ValueError(
        f"{where}: field {field!r} is missing or is neither a string nor a list of chat messages"
    )


def _load_jsonl(path: Path, field: str) -> list[Document]:
    docs: list[Document] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            docs.append(_record_document(record, field, f"{path}:{lineno}"))
    return docs


def _load_hub(source: TextSource) -> list[Document]:
    try:
        import datasets  # optional: only needed for Hub datasets
    except ImportError:
        raise ImportError(
            f"loading the Hub dataset {source.dataset!r} needs the `datasets` package: "
            "pip install datasets (or use a local .txt/.jsonl file)"
        ) from None
    ds = datasets.load_dataset(
        source.dataset, source.config_name, split=source.split, revision=source.revision
    )
    where = f"dataset {source.dataset!r} split {source.split!r}"
    return [_record_document(row, source.field, f"{where} row {i}") for i, row in enumerate(ds)]


def _load_file(path: Path, field: str) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix in {".txt", ".md"}:
        text = path.read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
        return [p for p in paragraphs if p]
    if suffix == ".jsonl":
        return _load_jsonl(path, field)
    raise ValueError(f"unsupported text file type {suffix!r} ({path}); use .txt, .md or .jsonl")


def load_texts(source: TextSource) -> list[Document]:
    """Documents from a local file or a Hub dataset.

    ``.txt``/``.md``: documents are separated by blank lines (a file without blank lines is one
    document). ``.jsonl``: the ``field`` of each line, a string or a chat ``messages`` list.
    A Hub ``dataset`` is read with ``datasets.load_dataset`` (an optional dependency).

    Raises ``FileNotFoundError``; ``NotUtf8Error`` (a ``ValueError``) for a file that is not
    UTF-8, naming the byte offset and the fix; ``ValueError`` for other unusable text.
    """
    if (source.path is None) == (source.dataset is None):
        raise ValueError("a text source needs exactly one of path or dataset")
    if source.dataset is not None:
        docs = _load_hub(source)
    else:
        assert source.path is not None
        path = Path(source.path)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        try:
            docs = _load_file(path, source.field)
        except UnicodeDecodeError:
            check_utf8(path, label=source.label)  # raises NotUtf8Error: where, and the fix
            raise
    if not docs:
        raise ValueError(f"no text found in {source.path or source.dataset}")
    return docs


def _render(doc: Document, tokenizer: Any) -> str:
    if isinstance(doc, str):
        return doc
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(doc, tokenize=False))
    # No chat template: a readable plain-text transcript.
    return "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in doc)


def token_blocks(
    texts: Sequence[Document], tokenizer: Any, *, seq_len: int, max_tokens: int
) -> torch.Tensor:
    """LongTensor [n_blocks, seq_len] of the texts tokenised and joined with EOS.

    The stream is cut into full blocks only (the tail is dropped), ``max_tokens`` tokens at most
    in all. Raises ValueError if the text does not fill a single block.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    n_max = max_tokens // seq_len
    if n_max < 1:
        raise ValueError(f"max_tokens ({max_tokens}) is smaller than one block of {seq_len}")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in texts:
        ids.extend(tokenizer(_render(doc, tokenizer), add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
        if len(ids) >= n_max * seq_len:  # enough: skip tokenising the rest
            break
    n_blocks = min(n_max, len(ids) // seq_len)
    if n_blocks < 1:
        raise ValueError(
            f"the text gives {len(ids)} tokens, not even one block of seq_len={seq_len}"
        )
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
