"""bench/gpu_check.py, the prepared script for a lent GPU, run here on a CPU in its --tiny mode
(the CPU stands in for the device), and bench/gpu_bundle.py's GGUF slicing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
NOT_A_NUMBER = ("peak GPU memory", "peak GPU memory (streamed)")  # no such counter on a CPU


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench scripts import their neighbours by bare name, as ``python bench/x.py`` does."""
    monkeypatch.syspath_prepend(str(BENCH))


def run_check(out: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run the script in a child process (its wall-clock guard uses SIGALRM); its JSON report
    and stdout."""
    env = {
        **os.environ,
        "OUT": str(out),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--tiny", "--device", "cpu", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), proc.stdout


def planned(*args: str) -> list[tuple[str, str]]:
    """Every (part, measure) the script plans, read from its own part list."""
    import gpu_check

    check = gpu_check.Check(gpu_check.parse_args(["--tiny", "--device", "cpu", *args]))
    return [(part.name, m) for part, _ in check.parts() for m in part.measures]


def by_row(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["part"], r["measure"]): r for r in report["rows"]}


def test_tiny_float32_rows_complete_and_paths_agree(tmp_path: Path, bench_path: None) -> None:
    report, stdout = run_check(tmp_path)
    rows = by_row(report)
    assert [(r["part"], r["measure"]) for r in report["rows"]] == planned()
    for (part, measure), row in rows.items():
        assert "skipped" not in row["text"] and "error" not in row["text"], row
        if measure in NOT_A_NUMBER:
            assert row["value"] is None and "n/a (CPU)" in row["text"]
        else:
            assert row["value"] is not None and math.isfinite(row["value"]), row
        assert f"| {part} | {measure} |" in stdout  # the markdown table on stdout
    assert (tmp_path / "gpu_check.md").read_text() in stdout
    # Both paths are float32 on the same CPU: the students must be the same.
    assert rows[("rounding floor", "KL of the teacher with rounded weights")]["value"] == 0
    for method in ("svd", "minitron", "lillama"):
        for measure in ("perplexity ratio", "KL"):
            cpu = rows[(method, f"{measure}, CPU path")]["value"]
            device = rows[(method, f"{measure}, device path")]
            assert device["value"] == pytest.approx(cpu, rel=1e-6, abs=1e-9)
            assert device["verdict"] == "PASS"
    assert report["command"] == "python bench/gpu_check.py --tiny --device cpu"
    assert {"commit", "date", "machine", "teacher", "seconds"} <= set(report)


def test_tiny_bfloat16_device_path_differs_from_cpu(tmp_path: Path) -> None:
    report, _ = run_check(tmp_path, "--device-dtype", "bfloat16", "--parts", "parity")
    rows = by_row(report)
    assert rows[("rounding floor", "KL of the teacher with rounded weights")]["value"] > 0
    for method in ("svd", "minitron", "lillama"):
        cpu = rows[(method, "KL, CPU path")]["value"]
        device = rows[(method, "KL, device path")]
        assert math.isfinite(device["value"]) and device["value"] != cpu
        assert device["verdict"] in ("PASS", "FAIL")
    assert not any(part.startswith(("kd", "lillama,")) for part, _ in rows)


def test_out_of_time_skips_every_part_and_still_reports(tmp_path: Path, bench_path: None) -> None:
    report, stdout = run_check(tmp_path, "--max-seconds", "0")
    assert [(r["part"], r["measure"]) for r in report["rows"]] == planned()
    assert all(r["text"] == "skipped (time)" and r["value"] is None for r in report["rows"])
    assert stdout.count("skipped (time)") == len(report["rows"])


def test_slice_gguf_keeps_the_first_layers_byte_for_byte(tmp_path: Path, bench_path: None) -> None:
    import gguf
    from gpu_bundle import slice_gguf

    rng = np.random.default_rng(0)
    source = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(source, arch="llama")
    writer.add_block_count(3)
    writer.add_uint32("llama.embedding_length", 8)
    tensors = {"token_embd.weight": rng.standard_normal((4, 8), dtype=np.float32)}
    for i in range(3):
        tensors[f"blk.{i}.attn_q.weight"] = rng.standard_normal((8, 8), dtype=np.float32)
    tensors["output_norm.weight"] = rng.standard_normal(8, dtype=np.float32)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    sliced = gguf.GGUFReader(slice_gguf(source, tmp_path / "sliced.gguf", 2))
    assert sliced.fields["llama.block_count"].contents() == 2
    assert sliced.fields["llama.embedding_length"].contents() == 8
    kept = {t.name: np.asarray(t.data) for t in sliced.tensors}
    assert sorted(kept) == sorted(n for n in tensors if not n.startswith("blk.2."))
    for name, data in kept.items():
        np.testing.assert_array_equal(data.reshape(tensors[name].shape), tensors[name])
    with pytest.raises(ValueError, match="has 3 layers"):
        slice_gguf(source, tmp_path / "too-many.gguf", 4)


def test_streamed_lillama_cut_by_the_guard_reports_its_blocks(
    bench_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpu_speed
    import torch
    from gpu_common import SHAPE_TINY, random_llama
    from gpu_report import OutOfTime

    real = gpu_speed.lillama_method.train_block

    def guard_fires_at_block(n: int) -> None:
        """The guard's alarm goes off as lillama starts training its n-th block."""
        calls: list[int] = []

        def train_block(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == n:
                raise OutOfTime
            return real(*args, **kwargs)

        monkeypatch.setattr(gpu_speed.lillama_method, "train_block", train_block)

    cpu = torch.device("cpu")
    shape = {**SHAPE_TINY, "num_hidden_layers": 6}
    model = random_llama(shape, dtype=torch.float32, device=cpu)
    blocks = torch.randint(0, shape["vocab_size"], (8, 32), generator=torch.Generator())
    guard_fires_at_block(4)
    rows = gpu_speed.lillama_streamed(model, blocks, device=cpu, batch_size=4, ratio=0.8, peak=1e9)
    assert [r.measure for r in rows] == list(gpu_speed.LILLAMA_MEASURES)
    assert "cut by the time guard after 3 trained blocks" in rows[0].text
    assert rows[1].text == "1 block(s), 2 steps"  # the third block alone is timed
    assert rows[1].value is not None and rows[1].value > 0
    # Too few blocks to time: the interruption goes on to the guard.
    guard_fires_at_block(2)
    with pytest.raises(OutOfTime):
        gpu_speed.lillama_streamed(model, blocks, device=cpu, batch_size=4, ratio=0.8, peak=1e9)
