"""The artifact's model card, read back with huggingface_hub's own parser."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from slimforge.compression.model_card import base_model_license, library_versions, render_model_card

LOWRANK_METRICS = {
    "teacher_perplexity": 10.5,
    "student_perplexity": 30.25,
    "tokens_used": 16384,
    "stage_seconds": {"loading": 3.0, "compressing": 7.4},
    "peak_rss_bytes": 3 * 2**30,
    "ranks": {"a": 104, "b": 312},
}
JOB = {
    "method": {"name": "svd", "rank_multiple": 8},
    "evaluation": {"dataset": "wikitext", "split": "test"},
}


def test_low_rank_card_parses_with_metadata_and_results() -> None:
    text = render_model_card(
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        method="svd + kd",
        target="ratio 0.8",
        params_before=134_515_008,
        params_after=107_610_432,
        metrics={**LOWRANK_METRICS, "distill": {"tokens": 32768, "steps": 32}},
        ranks={"a": 104, "b": 312},
        job_parameters=JOB,
        license="apache-2.0",
        repo_id="acme/smollm2-svd",
        versions={"slimforge": "0.1.0", "torch": "2.13.0"},
    )
    card = ModelCard(text)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"slimforge", "svd", "kd", "low-rank", "custom_code"} <= set(data.tags)
    assert data.model_name == "smollm2-svd"
    (result,) = data.eval_results
    assert (result.task_type, result.metric_type, result.metric_value) == (
        "text-generation",
        "perplexity",
        30.25,
    )
    assert (result.dataset_type, result.dataset_split) == ("wikitext", "test")
    body = card.text
    assert "134,515,008 → 107,610,432" in body and "ranks 104 to 312" in body
    assert "distilled from the original model" in body and "32,768 tokens in 32 steps" in body
    assert "| perplexity (held-out text) | 10.500 | 30.250 |" in body
    assert "| perplexity ratio | 1.00 | 2.88 |" in body
    assert "- calibration tokens: 16,384" in body and "- peak memory: 3.00 GiB" in body
    assert "- wall time: 10 s (loading 3 s, compressing 7 s)" in body
    assert 'path = "acme/smollm2-svd"' in body
    assert "from_pretrained(path, trust_remote_code=True)" in body
    assert '"rank_multiple": 8' in body
    assert "## Library versions" in body and "- torch 2.13.0" in body


def test_pruned_card_names_its_shape_and_needs_no_custom_code() -> None:
    shape = {
        "hidden_size": 576,
        "intermediate_size": 1024,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "num_hidden_layers": 30,
    }
    text = render_model_card(
        base_model="model-folder",  # a local folder: not a Hub id, so no base_model
        method="minitron",
        target="ratio 0.8",
        params_before=10,
        params_after=8,
        metrics={"method_details": {"shape": shape}},
        ranks=None,
        job_parameters={"evaluation": {"path": "/data/eval.txt"}},
    )
    card = ModelCard(text)
    assert card.data.base_model is None and card.data.license is None
    assert card.data.eval_results is None  # nothing measured, nothing claimed
    assert "trust_remote_code=True" not in card.text and "from_pretrained(path)" in card.text
    assert "MLP width 1024" in card.text and "30 layers" in card.text
    assert "custom_code" not in card.data.tags


def test_license_comes_from_the_base_models_card(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# Base\n")
    assert base_model_license(tmp_path) == "mit"
    (tmp_path / "README.md").write_text("# no front matter\n")
    assert base_model_license(tmp_path) is None
    assert base_model_license(tmp_path / "missing") is None
    assert {"transformers", "huggingface_hub"} <= set(library_versions())
