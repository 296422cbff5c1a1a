"""The job the demo submits is a valid request, and its general mixture samples only the
tokens asked for (the rest English), which kd then trains on."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimforge.contract.jobs import JobCreate
from slimforge.demo import demo_body


def test_the_auto_demo_samples_only_what_it_asks_for_and_distils_on_the_same_text() -> None:
    body = demo_body(
        Path("/models/smollm2"), ratio=0.8, method="auto", calibration_tokens=24576,
        sampled_tokens=4096, seq_len=256,
    )  # fmt: skip
    job = JobCreate.model_validate(body)
    calibration = job.calibration
    assert calibration is not None and calibration.mixture == "general"
    assert calibration.sampled_share * calibration.max_tokens == pytest.approx(4096, abs=1)
    assert job.distill is not None and job.distill.tokens == calibration.max_tokens
    assert job.method.name == "auto" and job.method.max_minutes == 10.0  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["svd", "minitron", "lillama"])
def test_every_demo_method_submits_a_valid_job(method: str) -> None:
    body = demo_body(Path("/m"), ratio=0.8, method=method, calibration_tokens=8192)
    assert JobCreate.model_validate(body).method.name == method


def test_a_corpus_file_replaces_the_mixture() -> None:
    body = demo_body(Path("/m"), ratio=0.8, method="auto", calibration_tokens=8192,
                     calibration="english-calibration.txt")  # fmt: skip
    calibration = JobCreate.model_validate(body).calibration
    assert calibration is not None and calibration.mixture is None
    assert str(calibration.path).endswith("english-calibration.txt")


def test_synthetic_and_distill_tokens_override_the_mixture_and_the_kd_text() -> None:
    body = demo_body(Path("/m"), ratio=0.8, method="minitron", calibration_tokens=8192,
                     synthetic=True, distill_tokens=32768)  # fmt: skip
    job = JobCreate.model_validate(body)
    assert job.calibration is not None and job.calibration.synthetic
    assert job.calibration.mixture is None and job.distill is not None
    assert job.distill.tokens == 32768


@pytest.mark.parametrize("field", ["calibration_tokens", "sampled_tokens"])
def test_token_counts_must_be_positive(field: str) -> None:
    kwargs = {"calibration_tokens": 8192, "sampled_tokens": 4096, field: 0}
    with pytest.raises(ValueError, match="above 0"):
        demo_body(Path("/m"), ratio=0.8, method="auto", **kwargs)  # type: ignore[arg-type]
