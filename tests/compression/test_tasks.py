"""Zero-shot tasks through lm-evaluation-harness on in-memory tiny models, offline.

The task is a local multiple-choice task (YAML + JSONL) written to tmp_path. Scores are checked
against lm-eval run directly and against acc / acc_norm recomputed from the model's own
log-likelihoods (sum of log-probs of each choice's tokens after the prompt).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import datasets.config
import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
import yaml
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from torch import nn
from transformers import PreTrainedTokenizerFast

from slimforge.compression.tasks import run_tasks, task_retention
from tests.compression.helpers import MC_TASK, mc_task_docs, tiny_llama, write_mc_task

TASK = MC_TASK


@torch.no_grad()
def _reference(model: nn.Module, tokenizer: PreTrainedTokenizerFast, docs: list[dict[str, Any]]):
    """acc, its stderr and acc_norm from per-choice log-likelihoods (nats), one doc at a time."""
    hits, hits_norm = [], []
    for doc in docs:
        context = tokenizer(doc["question"], add_special_tokens=False).input_ids
        lls = []
        for choice in doc["choices"]:
            # lm-eval's continuation is target_delimiter (" ") + choice.
            continuation = tokenizer(" " + choice, add_special_tokens=False).input_ids
            ids = torch.tensor([context + continuation])
            logp = F.log_softmax(model(input_ids=ids[:, :-1]).logits.double(), dim=-1)
            targets = ids[0, len(context) :]
            lls.append(float(logp[0, len(context) - 1 :].gather(-1, targets[:, None]).sum()))
        lengths = [len(c) for c in doc["choices"]]
        hits.append(float(max(range(len(lls)), key=lls.__getitem__) == doc["label"]))
        norm = [ll / n for ll, n in zip(lls, lengths, strict=True)]
        hits_norm.append(float(max(range(len(norm)), key=norm.__getitem__) == doc["label"]))
    n = len(hits)
    acc = sum(hits) / n
    stderr = math.sqrt(sum((h - acc) ** 2 for h in hits) / (n - 1)) / math.sqrt(n)
    return acc, stderr, sum(hits_norm) / n


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Connections fail, and any attempt fails the test even if a library swallowed the error."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(repr(args)[:200])
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield attempts
    assert attempts == []


def test_network_guard_sees_hub_client_attempts(
    no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard below is what proves runs offline: it must see the Hub client's requests."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with contextlib.suppress(Exception):
        huggingface_hub.HfApi().model_info("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert no_network, "the Hub client reached no guarded socket call"
    no_network.clear()


def test_scores_equal_harness_and_log_likelihoods(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerFast,
    no_network: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = mc_task_docs()
    folder = write_mc_task(tmp_path / "tasks", docs)
    model = tiny_llama(seed=0).train()  # run_tasks must restore the training flag

    score = run_tasks(model, tokenizer, [TASK], include_path=folder, batch_size=4)[TASK]

    assert model.training
    assert tokenizer.pad_token is None  # lm-eval set one on a copy, not on ours
    assert "HF_HUB_OFFLINE" not in os.environ  # offline mode lasted the run only
    assert datasets.config.HF_HUB_OFFLINE is False
    model.eval()
    # lm-eval run directly, offline too (else datasets pings S3 to count the load).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    direct = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
        tasks=[TASK],
        num_fewshot=0,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=False,
    )
    assert direct is not None
    metrics = direct["results"][TASK]
    assert score.acc == metrics["acc,none"]
    assert score.acc_stderr == metrics["acc_stderr,none"]
    assert score.acc_norm == metrics["acc_norm,none"]
    assert score.acc_norm_stderr == metrics["acc_norm_stderr,none"]

    acc, stderr, acc_norm = _reference(model, tokenizer, docs)
    assert score.acc == pytest.approx(acc, abs=1e-12)
    assert score.acc_stderr == pytest.approx(stderr, rel=1e-9)
    assert score.acc_norm == pytest.approx(acc_norm, abs=1e-12)
    assert (score.n_samples, score.n_documents, score.num_fewshot) == (len(docs), len(docs), 0)
    assert score.version == "1.0"
    assert score.harness_version == package_version("lm_eval")


def test_retention_per_task_and_group(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, no_network: list[str]
) -> None:
    docs, limit = mc_task_docs(), 6
    parts = {"sums_a": docs[:8], "sums_b": docs[8:]}
    folder = tmp_path / "tasks"
    for name, part in parts.items():
        write_mc_task(folder, part, task=name)
    group = {
        "group": "sums",
        "task": list(parts),
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }
    (folder / "sums.yaml").write_text(yaml.safe_dump(group))
    teacher, student = tiny_llama(seed=0), tiny_llama(seed=3)

    result = task_retention(teacher, student, tokenizer, ["sums"], include_path=folder, limit=limit)

    assert set(result) == {"sums", *parts}
    scored = {name: part[:limit] for name, part in parts.items()}
    scored["sums"] = scored["sums_a"] + scored["sums_b"]
    for name, subset in scored.items():
        teacher_acc, _, teacher_norm = _reference(teacher, tokenizer, subset)
        student_acc, _, student_norm = _reference(student, tokenizer, subset)
        assert teacher_acc > 0 and teacher_norm > 0, name  # else retention is undefined (None)
        retention = result[name]
        assert retention.teacher.acc == pytest.approx(teacher_acc, abs=1e-12), name
        assert retention.student.acc == pytest.approx(student_acc, abs=1e-12), name
        assert retention.acc_retention == pytest.approx(student_acc / teacher_acc, rel=1e-12)
        assert retention.student.n_samples == len(subset)
        if name == "sums":  # the group aggregates acc only
            assert retention.student.acc_norm is None and retention.acc_norm_retention is None
            assert retention.student.n_documents == len(docs)
        else:
            norm_retention = student_norm / teacher_norm
            assert retention.acc_norm_retention == pytest.approx(norm_retention, rel=1e-12)
            assert retention.student.n_documents == len(parts[name])


def test_refuses_what_cannot_run_offline(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, no_network: list[str]
) -> None:
    model = tiny_llama()
    local = write_mc_task(tmp_path / "local", mc_task_docs(4))
    with pytest.raises(ValueError, match="'arc_easy' is not in the local task folders"):
        run_tasks(model, tokenizer, ["arc_easy"], include_path=local)
    hub = write_mc_task(tmp_path / "hub", [], dataset_path="allenai/ai2_arc", dataset_kwargs={})
    with pytest.raises(ValueError, match="loads its data from 'allenai/ai2_arc'"):
        run_tasks(model, tokenizer, [TASK], include_path=hub)
    # A group is checked through its tasks: one local, one on the Hub (another folder).
    (local / "mixed.yaml").write_text(yaml.safe_dump({"group": "mixed", "task": [TASK, "arc"]}))
    write_mc_task(tmp_path / "hub2", [], task="arc", dataset_path="allenai/ai2_arc")
    with pytest.raises(ValueError, match="task 'arc' loads its data from 'allenai/ai2_arc'"):
        run_tasks(model, tokenizer, ["mixed"], include_path=[local, tmp_path / "hub2"])
    with pytest.raises(ValueError, match="group 'mixed' lists 'arc', which is no known task"):
        run_tasks(model, tokenizer, ["mixed"], include_path=local)
    missing = write_mc_task(tmp_path / "missing", [], dataset_kwargs={"data_files": "gone.jsonl"})
    with pytest.raises(ValueError, match="not from local files"):
        run_tasks(model, tokenizer, [TASK], include_path=missing)
    generated = write_mc_task(tmp_path / "gen", mc_task_docs(4), output_type="generate_until")
    with pytest.raises(ValueError, match="output_type 'generate_until'"):
        run_tasks(model, tokenizer, [TASK], include_path=generated)


def test_refuses_config_that_would_retie_weights(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = tiny_llama()
    lm_head = model.lm_head.weight.detach().clone() + 1.0
    model.lm_head.weight = nn.Parameter(lm_head)  # config still says tie_word_embeddings
    folder = write_mc_task(tmp_path / "tasks", mc_task_docs(4))
    with pytest.raises(ValueError, match=r"ties lm_head\.weight to model\.embed_tokens\.weight"):
        run_tasks(model, tokenizer, [TASK], include_path=folder)
    assert torch.equal(model.lm_head.weight, lm_head)
