"""Peak memory of a job: resident set size sampled in a thread, plus CUDA's own counter; and
what an out-of-memory failure looks like, and what to tell the user about it.

``ru_maxrss`` is the peak of the whole worker process since it started, which with a
long-lived ``--pool solo`` worker would include earlier jobs, so we sample RSS per job instead.
"""

from __future__ import annotations

import gc
import os
import threading

import torch

OUT_OF_MEMORY = (
    "out of memory: use a smaller calibration batch, sequence length or kd batch_size, spill "
    "activations to disk (method activation_memory_gb), top-k teacher logits for kd (distill "
    "top_k: no teacher copy in memory), or a worker with more memory"
)
# What PyTorch's CPU allocator raises (a RuntimeError; CUDA's is torch.OutOfMemoryError).
_CPU_ALLOC_FAILED = ("can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation, on the GPU or the CPU."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _CPU_ALLOC_FAILED)


def release_memory() -> None:
    """After a job died of out-of-memory: give back what its objects held, so the worker's
    next job starts with the memory free."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the process-wide peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Track the peak RSS (and CUDA allocation) between ``start`` and ``stop``."""

    def __init__(self, *, device: str, interval: float = 0.1):
        self.device = device
        self.interval = interval
        self.peak_rss = 0
        self._gpu_earlier = 0  # CUDA peak before the last stage reset
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.peak_rss = _rss_bytes()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="peak-memory")
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, _rss_bytes())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def begin_stage(self) -> None:
        """Start a per-stage CUDA peak (the job's overall peak is kept)."""
        if self.device == "cuda":
            self._gpu_earlier = max(self._gpu_earlier, int(torch.cuda.max_memory_allocated()))
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def stage_gpu_bytes(self) -> int | None:
        """CUDA peak since :meth:`begin_stage` (None on CPU)."""
        return int(torch.cuda.max_memory_allocated()) if self.device == "cuda" else None

    def snapshot(self) -> dict[str, int]:
        """Peak memory so far, in bytes."""
        self.peak_rss = max(self.peak_rss, _rss_bytes())
        out = {"peak_rss_bytes": self.peak_rss}
        if self.device == "cuda":
            gpu = max(self._gpu_earlier, int(torch.cuda.max_memory_allocated()))
            out["peak_gpu_bytes"] = gpu
        return out
