"""The model card's GGUF section: files, types, sizes, llama.cpp perplexity, how to run them."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard

from slimforge.compression.model_card import render_model_card

F16 = {"path": "m-slimforge.F16.gguf", "gguf_type": "f16", "size": 215_300_000, "perplexity": 30.1}
Q4 = {"path": "m-slimforge.Q4_K_M.gguf", "gguf_type": "q4_k_m", "size": 80_950_000}
GGUF: dict[str, Any] = {
    "files": [F16, {**Q4, "perplexity": 31.47}],
    "eval_tokens": 4096,
    "student_perplexity": 30.09,
    "llama_cpp_python": "0.3.36",
}


def _card(metrics: dict[str, Any], repo_id: str | None = None) -> str:
    return render_model_card(
        base_model="model-folder",
        method="minitron",
        target="ratio 0.8",
        params_before=10,
        params_after=8,
        metrics=metrics,
        ranks=None,
        job_parameters={},
        repo_id=repo_id,
    )


def test_the_card_lists_each_gguf_file_and_how_to_run_it() -> None:
    text = _card({"gguf": GGUF})
    card = ModelCard(text)
    assert "gguf" in card.data.to_dict()["tags"]
    assert "| `m-slimforge.F16.gguf` | F16 | 215.3 MB | 30.100 |" in text
    assert "| `m-slimforge.Q4_K_M.gguf` | Q4_K_M | 81.0 MB | 31.470 |" in text
    assert "first 4,096 tokens" in text and "gives 30.090 on the same tokens" in text
    assert "llama-cpp-python 0.3.36" in text
    assert "llama-cli -m m-slimforge.Q4_K_M.gguf -p" in text
    assert 'Llama(model_path="m-slimforge.Q4_K_M.gguf")' in text
    assert "-hf " not in text  # no Hub repository, no Hub snippet


def test_hub_snippets_name_the_repository_and_type() -> None:
    text = _card({"gguf": GGUF}, repo_id="acme/m-slim")
    assert "llama-cli -hf acme/m-slim:Q4_K_M" in text
    assert "ollama run hf.co/acme/m-slim:Q4_K_M" in text


def test_unmeasured_files_and_no_gguf() -> None:
    unmeasured = {"files": [{**F16, "perplexity": None}]}
    text = _card({"gguf": unmeasured})
    assert "| F16 | 215.3 MB | not measured |" in text and "was not measured" in text
    plain = _card({})
    assert "GGUF" not in plain and "gguf" not in (ModelCard(plain).data.to_dict()["tags"])
