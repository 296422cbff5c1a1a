"""Submit-time checks of a job against a local model (issue 15, cases 2, 4 and 5): the files
transformers would load are the ones counted, and every parameter the model's shape rules out
is refused with a 422 naming it, the model's value and a value that works."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from bench.tiny import save_tiny_llama
from slimforge.compression.lowrank import count_parameters
from tests.app.test_jobs_api import body
from tests.compression.helpers import VOCAB, char_tokenizer, save_consolidated, tiny_llama


def _submit(api: TestClient, auth: Any, files: dict[str, Path], model: Path, **kw: Any) -> Any:
    return api.post("/v1/jobs", json=body(files, model={"path": str(model)}, **kw), headers=auth())


def _refused(r: Any, field: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == field, error
    return error


def _qwen2_6_heads(folder: Path) -> Path:
    """Qwen2 with 6 query / 2 key-value heads (3 per GQA group), as in the issue."""
    cfg = Qwen2Config(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=VOCAB,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_only_the_files_transformers_loads_are_counted(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path, settings: Any
) -> None:
    """Shards + index + a consolidated.safetensors copy: the API counts the shards only, so
    neither the target check nor the size quota sees twice the parameters (case 2)."""
    model = tiny_llama()
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="20KB")
    char_tokenizer().save_pretrained(folder)
    save_consolidated(model, folder / "consolidated.safetensors")
    n = count_parameters(model)
    error = _refused(_submit(api, auth, text_files, folder, target={"params": 1000}), "target")
    assert error["details"]["model_params"] == n
    settings.quota_max_model_params = n + n // 2  # above the model, below twice the model
    ok = _submit(api, auth, text_files, folder)
    assert ok.status_code == 202, ok.text


def test_replaced_weights_are_read_again(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path
) -> None:
    """The shape cache is keyed on the weight files, not on config.json alone."""
    folder = save_tiny_llama(tmp_path / "m")
    two = _refused(_submit(api, auth, text_files, folder, target={"params": 1000}), "target")
    deeper = save_tiny_llama(tmp_path / "deeper", layers=4)
    shutil.copy(deeper / "model.safetensors", folder / "model.safetensors")
    four = _refused(_submit(api, auth, text_files, folder, target={"params": 1000}), "target")
    assert four["details"]["model_params"] > two["details"]["model_params"]
    assert four["details"]["model_params"] == count_parameters(tiny_llama(layers=4))


@pytest.mark.parametrize("section", ["calibration", "evaluation"])
def test_seq_len_beyond_the_positions_is_refused(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path, section: str
) -> None:
    """GPT-2 with 128 positions and seq_len 256 failed later with an IndexError (case 4)."""
    folder = tmp_path / "gpt2"
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    texts = {s: {"path": str(text_files[s]), "seq_len": 128} for s in text_files}
    texts[section]["seq_len"] = 256
    error = _refused(_submit(api, auth, text_files, folder, **texts), f"{section}.seq_len")
    assert error["details"]["model_value"] == 128 and error["details"]["working_value"] == 128
    assert "128" in error["message"] and "seq_len" in error["message"]
    texts[section]["seq_len"] = 128
    ok = _submit(api, auth, text_files, folder, **texts)
    assert ok.status_code == 202, ok.text


def test_vocabulary_bounds_kd_top_k(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = save_tiny_llama(tmp_path / "m")
    kd = {"name": "kd", "tokens": 1024, "top_k": VOCAB + 44}
    error = _refused(_submit(api, auth, text_files, folder, distill=kd), "distill.top_k")
    assert error["details"]["model_value"] == VOCAB
    assert error["details"]["working_value"] <= VOCAB
    kd["top_k"] = error["details"]["working_value"]
    assert _submit(api, auth, text_files, folder, distill=kd).status_code == 202


def test_target_modules_must_name_layers_of_the_model(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = save_tiny_llama(tmp_path / "m")
    method = {"name": "lillama", "target_modules": ["query_key_value"]}
    error = _refused(_submit(api, auth, text_files, folder, method=method), "method.target_modules")
    assert "q_proj" in error["details"]["working_value"]


@pytest.mark.parametrize(
    ("heads", "reason", "working"),
    [(5, "multiple of the model's 2 key/value heads", 6), (8, "only 6", 6)],
)
def test_pinned_heads_that_cannot_exist_are_named(
    api: TestClient,
    auth: Any,
    text_files: dict[str, Path],
    tmp_path: Path,
    heads: int,
    reason: str,
    working: int,
) -> None:
    """The issue's Qwen2 (6 query / 2 KV heads) with 5 or 8 pinned heads got "not reachable"
    with a range containing the target (case 5); the constraint is named now."""
    folder = _qwen2_6_heads(tmp_path / "qwen2")
    method = {
        "name": "minitron",
        "axes": ["heads", "mlp"],
        "mlp_multiple": 1,
        "shape": {"num_attention_heads": heads},
    }
    r = _submit(api, auth, text_files, folder, method=method, target={"ratio": 0.85})
    error = _refused(r, "method.shape.num_attention_heads")
    assert reason in error["message"] and "reachable" not in error["message"]
    details = error["details"]
    assert details["model_value"] == {"num_attention_heads": 6, "num_key_value_heads": 2}
    assert details["value"] == heads and details["working_value"] == working
    method["shape"] = {"num_attention_heads": working}
    ok = _submit(api, auth, text_files, folder, method=method, target={"ratio": 0.85})
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(
    ("pin", "reason", "model_value"),
    [(100, "only 64", 64), (40, "multiples of 16", 64)],
)
def test_pinned_hidden_size_that_cannot_exist_is_named(
    api: TestClient,
    auth: Any,
    text_files: dict[str, Path],
    tmp_path: Path,
    pin: int,
    reason: str,
    model_value: int,
) -> None:
    folder = save_tiny_llama(tmp_path / "m")
    method = {"name": "minitron", "hidden_multiple": 16, "shape": {"hidden_size": pin}}
    error = _refused(
        _submit(api, auth, text_files, folder, method=method), "method.shape.hidden_size"
    )
    assert reason in error["message"] and error["details"]["model_value"] == model_value
    assert error["details"]["working_value"] % 16 == 0


def test_unreachable_ranges_respect_the_job_constraints(
    api: TestClient, auth: Any, text_files: dict[str, Path], tmp_path: Path
) -> None:
    """A "not reachable" range never contains the target (case 5's rule); ratio 1.0 with
    minitron is named as the reason."""
    folder = _qwen2_6_heads(tmp_path / "qwen2")
    pinned = {"name": "minitron", "axes": ["heads"], "shape": {"num_attention_heads": 2}}
    everything = {"name": "minitron"}
    for method, ratio in ((pinned, 0.95), (pinned, 0.3), (everything, 1.0)):
        r = _submit(api, auth, text_files, folder, method=method, target={"ratio": ratio})
        details = _refused(r, "target")["details"]
        assert not details["min_params"] <= details["target_params"] <= details["max_params"]
        assert details["max_params"] < details["model_params"]
    assert "always removes something" in r.json()["error"]["message"]
