"""The artifact's model card, read back with huggingface_hub's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult, model_index_to_eval_results

from slimforge.compression.model_card import (
    SourceInfo,
    base_model_license,
    library_versions,
    render_model_card,
)

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
PROTOCOL = {
    "window_tokens": 512,
    "stride_tokens": 512,
    "n_windows": 32,
    "scored_tokens": 16352,
    "first_token_scored": False,
    "bos_prepended": False,
    "packing": "token_blocks: documents joined with EOS",
    "kl_top_k": None,
    "interval_confidence": 0.95,
    "interval_resamples": 2000,
}
INTERVAL = [1.3125, 1.4375]
FIDELITY: dict[str, Any] = {  # the shape of compression.evaluation.FidelityResult.metrics()
    "teacher_perplexity": 9.8125,
    "student_perplexity": 13.4375,
    "perplexity_ratio": 1.369426751592357,
    "perplexity_ratio_interval": INTERVAL,
    "kl_per_token": 0.28125,
    "top1_agreement": 0.703125,
    "evaluation_tokens": 16352,
    "protocol": PROTOCOL,
}
TASKS = {
    "arc_easy": {
        "teacher": {"acc,none": 0.625, "acc_stderr,none": 0.0125, "alias": "arc_easy"},
        "student": {"acc,none": 0.5, "acc_stderr,none": 0.015625, "alias": "arc_easy"},
        "limit": 200,
    },
    "local_mc": {
        "teacher": {"acc": 0.75, "acc_stderr": 0.03125, "acc_norm": 0.8125},
        "student": {"acc": 0.6875, "acc_stderr": 0.03125, "acc_norm": 0.75},
    },
}
GENERATIONS = [
    {"prompt": "The capital of France is", "teacher": "Paris.", "student": "Paris, the"},
    {"prompt": "To make tea,", "teacher": "boil ```water```", "student": "", "chat_template": True},
]


def card_data(text: str) -> ModelCardData:
    """The card's metadata as huggingface_hub parses it."""
    data = ModelCard(text).data
    assert isinstance(data, ModelCardData)
    return data


def by_type(results: list[EvalResult], dataset: str) -> dict[str, EvalResult]:
    return {r.metric_type: r for r in results if r.dataset_type == dataset}


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
    data = card_data(text)
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"slimforge", "svd", "kd", "low-rank", "custom_code"} <= set(data.tags or [])
    assert data.model_name == "smollm2-svd"
    results = by_type(data.eval_results or [], "wikitext")
    assert set(results) == {"perplexity", "teacher_perplexity", "perplexity_ratio"}
    assert results["perplexity"].metric_value == 30.25
    assert results["teacher_perplexity"].metric_value == 10.5
    assert results["perplexity_ratio"].metric_value == round(30.25 / 10.5, 4)
    student = results["perplexity"]
    assert (student.task_type, student.dataset_split) == ("text-generation", "test")
    body = card.text
    assert "134,515,008 → 107,610,432" in body and "ranks 104 to 312" in body
    assert "distilled from the original model" in body and "32,768 tokens in 32 steps" in body
    assert "| perplexity | 10.500 | 30.250 |" in body
    assert "| perplexity ratio, student / teacher | 1.000 | 2.881 |" in body
    assert "measured on the Hub dataset `wikitext` (split `test`)" in body
    assert "- calibration tokens: 16,384" in body and "- peak memory: 3.00 GiB" in body
    assert "- wall time: 10 s (loading 3 s, compressing 7 s)" in body
    assert 'path = "acme/smollm2-svd"' in body
    assert "from_pretrained(path, trust_remote_code=True)" in body
    assert '"rank_multiple": 8' in body
    assert "## Library versions" in body and "- torch 2.13.0" in body
    assert "## Sample continuations" not in body  # none given, none shown


def render_full(tmp_path: Path, **metrics: Any) -> str:
    evaluation = tmp_path / "held_out.txt"
    evaluation.write_text("Some held-out text.\n")
    return render_model_card(
        source=SourceInfo("Tiny Llama", "org/tiny-llama", "mit"),
        method="minitron + kd",
        target="ratio 0.7",
        params_before=1000,
        params_after=700,
        metrics=metrics,
        ranks=None,
        job_parameters={"method": {"name": "minitron"}, "evaluation": {"path": str(evaluation)}},
        versions={},
    )


def test_model_index_has_every_figure_with_the_teachers_alongside(tmp_path: Path) -> None:
    overlap = {"ngram": 13, "share": 0.0234, "longest_run_tokens": 57}
    text = render_full(
        tmp_path, fidelity=FIDELITY, overlap=overlap, tasks=TASKS, generations=GENERATIONS
    )
    data = card_data(text)
    assert data.base_model == "org/tiny-llama" and data.license == "mit"
    assert data.model_name == "Tiny-Llama-slimforge"
    # The same entries as huggingface_hub's own model-index reader finds in the YAML.
    front: dict[str, Any] = yaml.safe_load(text.split("---")[1])
    name, flat = model_index_to_eval_results(front["model-index"])
    assert data.eval_results is not None
    assert name == "Tiny-Llama-slimforge" and flat == data.eval_results

    ppl = by_type(data.eval_results, "text")
    assert {r.dataset_name for r in ppl.values()} == {"held_out.txt"}
    expected = {
        "perplexity": FIDELITY["student_perplexity"],
        "teacher_perplexity": FIDELITY["teacher_perplexity"],
        "perplexity_ratio": FIDELITY["perplexity_ratio"],
        "perplexity_ratio_ci95_low": INTERVAL[0],
        "perplexity_ratio_ci95_high": INTERVAL[1],
        "kl_divergence": FIDELITY["kl_per_token"],
        "top1_agreement": FIDELITY["top1_agreement"],
        "ngram_overlap": overlap["share"],
    }
    assert {k: r.metric_value for k, r in ppl.items()} == {
        k: round(v, 4) if v >= 1 else float(f"{v:.6g}") for k, v in expected.items()
    }
    for kind in ("perplexity", "teacher_perplexity"):  # the protocol rides along
        assert ppl[kind].metric_args == {
            k: PROTOCOL[k]
            for k in ("window_tokens", "stride_tokens", "scored_tokens", "first_token_scored")
        } | {"bos_prepended": False}
    assert ppl["ngram_overlap"].metric_args == {"ngram": 13, "longest_run_tokens": 57}

    arc = by_type(data.eval_results, "arc_easy")
    assert {k: r.metric_value for k, r in arc.items()} == {
        "acc": 0.5,
        "teacher_acc": 0.625,
        "acc_retention": 0.8,
    }
    assert arc["acc"].metric_args == {"stderr": 0.015625}
    assert arc["acc"].dataset_args == {"num_few_shot": 0, "limit": 200}
    local = by_type(data.eval_results, "local_mc")
    assert local["acc_norm_retention"].metric_value == float(f"{0.75 / 0.8125:.6g}")
    assert local["teacher_acc_norm"].metric_value == 0.8125


def test_markdown_shows_the_table_protocol_overlap_tasks_and_continuations(
    tmp_path: Path,
) -> None:
    overlap = {"ngram": 13, "share": 0.0234, "longest_run_tokens": 57}
    body = ModelCard(
        render_full(
            tmp_path, fidelity=FIDELITY, overlap=overlap, tasks=TASKS, generations=GENERATIONS
        )
    ).text
    assert "# Tiny Llama compressed with slimforge (minitron + kd)" in body
    assert "[`org/tiny-llama`](https://huggingface.co/org/tiny-llama)" in body
    assert "| perplexity | 9.812 | 13.438 |" in body
    assert (
        "| perplexity ratio, student / teacher (95% bootstrap interval) | 1.000 "
        "| 1.369 [1.312, 1.438] |"
    ) in body
    assert "| KL(teacher ‖ student), nats per token | 0 | 0.2812 |" in body
    assert "| top-1 agreement with the teacher | 100% | 70.3% |" in body
    assert "measured on the file `held_out.txt` (sha256 `" in body and "16,352 scored" in body
    assert "- window tokens: 512" in body and "- first token scored: False" in body
    assert "2.34% of the evaluation text's 13-grams" in body and "57 tokens" in body
    assert "above 1%" in body  # 2.34 % overlap: warned
    assert "| arc_easy | acc | 0.625 ± 0.013 | 0.500 ± 0.016 | 80.0% |" in body
    assert "| local_mc | acc_norm | 0.812 | 0.750 | 92.3% |" in body
    assert "at most 200 examples per task" in body
    assert "### 1. “The capital of France is”" in body
    assert "**Teacher**\n\n```text\nParis.\n```" in body
    # A continuation holding a fence gets a longer fence; an empty one says so.
    assert "````text\nboil ```water```\n````" in body
    assert "(nothing: the model ended at once)" in body
    assert "chat template" in body


def test_low_overlap_is_not_warned_and_aliases_are_read(tmp_path: Path) -> None:
    fidelity = {
        "teacher_perplexity": 8.0,
        "student_perplexity": 9.0,
        "perplexity_ratio_ci95": [1.0625, 1.1875],
        "kl_nats_per_token": 0.125,
        "tokens": 4096,
    }
    text = render_full(tmp_path, fidelity=fidelity, overlap={"ngram": 13, "share": 0.004})
    results = by_type(card_data(text).eval_results or [], "text")
    assert results["perplexity_ratio"].metric_value == 1.125  # computed: 9 / 8
    assert results["perplexity_ratio_ci95_high"].metric_value == 1.1875
    assert results["kl_divergence"].metric_value == 0.125
    assert "top1_agreement" not in results  # not measured, not claimed
    assert "0.40% of the evaluation" in text and "above 1%" not in text
    nan = render_full(tmp_path, fidelity={"student_perplexity": float("nan")})
    assert card_data(nan).eval_results is None


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
    card, data = ModelCard(text), card_data(text)
    assert data.base_model is None and data.license is None
    assert data.eval_results is None  # nothing measured, nothing claimed
    assert "trust_remote_code=True" not in card.text and "from_pretrained(path)" in card.text
    assert "MLP width 1024" in card.text and "30 layers" in card.text
    assert "custom_code" not in (data.tags or [])
    assert "/data/" not in text and '"path": "eval.txt"' in text


def test_license_comes_from_the_base_models_card(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# Base\n")
    assert base_model_license(tmp_path) == "mit"
    (tmp_path / "README.md").write_text("# no front matter\n")
    assert base_model_license(tmp_path) is None
    assert base_model_license(tmp_path / "missing") is None
    assert {"transformers", "huggingface_hub"} <= set(library_versions())


def test_task_counts_are_not_figures_and_the_limit_is_stated(tmp_path: Path) -> None:
    """A task entry as the worker stores it: counts beside the scores, the limit it ran with."""
    side = {"acc": 0.5, "acc_stderr": 0.19, "n_samples": 8, "version": "1.0"}
    tasks = {
        "mc": {
            "teacher": side,
            "student": {**side, "acc": 0.25},
            "retention": 0.5,
            "num_fewshot": 0,
            "limit": 8,
        }
    }
    text = render_full(tmp_path, tasks=tasks)
    results = by_type(card_data(text).eval_results or [], "mc")
    assert set(results) == {"acc", "teacher_acc", "acc_retention"}
    assert "n_samples" not in text.split("---")[1]  # the YAML front matter: model-index
    assert "| mc | acc |" in text and "| mc | n_samples |" not in text
    assert "at most 8 examples per task" in text


def test_the_card_says_when_kd_was_undone_by_its_guard(tmp_path: Path) -> None:
    kd = {"tokens": 4096, "steps": 4}
    undone = {"kl_before": 0.5, "kl_after": 0.75, "tokens": 512, "kept": "before"}
    text = render_full(tmp_path, distill={**kd, "guard": undone})
    assert "kd made the model worse on 512 held-back kd tokens" in text
    assert "KL to the original 0.5000 -> 0.7500" in text and "model before kd was kept" in text
    kept = {**undone, "kl_after": 0.25, "kept": "distilled"}
    text = render_full(tmp_path, distill={**kd, "guard": kept})
    assert "Checked on 512 held-back kd tokens: KL to the original 0.5000 -> 0.2500" in text
    assert "was kept" not in text


def test_the_card_says_when_kd_diverged(tmp_path: Path) -> None:
    guard = {"kl_before": 0.5, "kl_after": None, "tokens": 512, "kept": "before"}
    diverged = {"steps": 0, "tokens": 0, "diverged": "loss not finite at step 3", "guard": guard}
    text = render_full(tmp_path, distill=diverged)
    assert "The `kd` stage diverged (loss not finite at step 3)" in text
    assert "model before kd was kept" in text
