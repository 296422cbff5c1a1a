"""GGUF export with llama.cpp's converter and quantiser, checked against transformers.

A tiny random Llama with a real SentencePiece tokenizer is exported; llama.cpp (llama-cpp-python)
must then tokenise like SentencePiece, decode greedily like transformers (f16) and keep the
perplexity of quantised files near the f16 one. The slow test round-trips the real SmolLM2.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from llama_cpp import Llama
from sentencepiece import SentencePieceProcessor
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from slimforge.compression import ModelSource, gguf_export, load_model
from slimforge.compression.gguf_eval import gguf_perplexity
from slimforge.compression.gguf_export import (
    CONVERTER_ENV,
    GGUF_TYPES,
    export_gguf,
    export_ggufs,
    gguf_file_type,
    gguf_supported,
)
from slimforge.compression.progress import RecordingReporter
from tests.compression.gguf_helpers import (
    hf_greedy,
    hf_logits,
    llama_greedy,
    llama_logits,
    perplexity_from_logits,
    tiny_gguf_llama,
    train_sentencepiece,
)
from tests.compression.test_smollm2_slow import GGUF, smollm2_dir

VOCAB = 1024
PROMPTS = (
    "The history of the city",
    "In 1905, the",
    "Water is made of",
    "The president said that",
    "A function returns",
    "Rivers and mountains",
)
N_NEW = 16  # greedy tokens per prompt
# llama.cpp vs transformers logits on the same f16 weights, relative to the largest logit:
# llama.cpp rounds activations to f16 (rel. 2**-11) for its f16 matmuls, a few times per layer.
LOGIT_REL_TOL = 2e-3
N_EVAL = 320  # tokens scored for perplexity
# Perplexity of a quantised file relative to the f16 one. The tiny model has no redundancy to
# absorb rounding: its Q4_K_M file costs about +20 % (measured, and the same when transformers
# runs the dequantised weights), its Q8_0 file well under 1 %.
PPL_REL_TOL = {"q8_0": 0.01, "q4_k_m": 0.30}
# llama.cpp vs transformers on the same dequantised weights: llama.cpp also rounds activations
# to 8 bits in its quantised matmuls (ggml's q8_0 / q8_K dot products).
RUNTIME_REL_TOL = 0.02


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_llama")
    train_sentencepiece(folder, VOCAB)
    tiny_gguf_llama(VOCAB).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_model(tiny_folder: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(tiny_folder).eval()


@pytest.fixture(scope="module")
def f16_gguf(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf(tiny_folder, tmp_path_factory.mktemp("gguf"), gguf_type="f16")


@pytest.fixture(scope="module")
def sampled_tokens(hf_model: LlamaForCausalLM) -> list[int]:
    """``N_EVAL`` tokens sampled (temperature 1) from the model itself: a text it predicts well,
    so that quantisation error shows in the perplexity instead of drowning in a random model's."""
    torch.manual_seed(1)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([[1]]),
            do_sample=True,
            top_k=0,
            max_new_tokens=N_EVAL - 1,
            min_new_tokens=N_EVAL - 1,
        )
    return [int(t) for t in out[0]]


def _llama(path: Path) -> Llama:
    return Llama(model_path=str(path), n_ctx=512, n_threads=1, logits_all=True, verbose=False)


def _llama_perplexity(path: Path, tokens: list[int]) -> float:
    with closing(_llama(path)) as llm:
        return perplexity_from_logits(llama_logits(llm, tokens), tokens)


def test_f16_tokenises_and_decodes_like_transformers(
    tiny_folder: Path, hf_model: LlamaForCausalLM, f16_gguf: Path
) -> None:
    assert f16_gguf.name == f"{tiny_folder.name}.F16.gguf"
    assert gguf_file_type(f16_gguf) == "f16"
    sp = SentencePieceProcessor(model_file=str(tiny_folder / "tokenizer.model"))
    with closing(_llama(f16_gguf)) as llm:
        assert llm.n_vocab() == VOCAB
        compared = 0
        for prompt in PROMPTS:
            ids = sp.encode(prompt)
            assert llm.tokenize(prompt.encode(), add_bos=False) == ids
            want = hf_greedy(hf_model, ids, N_NEW)
            n = _decided_steps(hf_logits(hf_model, ids + want)[len(ids) - 1 : -1])
            assert llama_greedy(llm, ids, N_NEW)[:n] == want[:n], prompt
            compared += n
    # A tiny random model has near-ties early on some prompts (one here stops at its first
    # token), so six prompts: 49 of their 96 greedy tokens are decided, and a third must be.
    assert compared >= len(PROMPTS) * N_NEW // 3


def _decided_steps(logits: np.ndarray) -> int:
    """Leading greedy steps ([steps, vocab] logits) whose top-2 gap exceeds twice the logit
    tolerance: there llama.cpp must pick the same token; at a closer tie either pick is right."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    close = (top2[:, 1] - top2[:, 0]) < 2 * LOGIT_REL_TOL * np.abs(logits).max()
    return int(close.argmax()) if close.any() else len(logits)


def test_f16_logits_match_transformers(
    hf_model: LlamaForCausalLM, f16_gguf: Path, sampled_tokens: list[int]
) -> None:
    ref = hf_logits(hf_model, sampled_tokens)
    with closing(_llama(f16_gguf)) as llm:
        got = llama_logits(llm, sampled_tokens)
    assert np.abs(got - ref).max() < LOGIT_REL_TOL * np.abs(ref).max()
    ppl_ref = perplexity_from_logits(ref, sampled_tokens)
    assert perplexity_from_logits(got, sampled_tokens) == pytest.approx(ppl_ref, rel=1e-3)


@pytest.mark.parametrize("gguf_type", sorted(PPL_REL_TOL))
def test_quantised_perplexity_near_f16(
    tiny_folder: Path,
    f16_gguf: Path,
    sampled_tokens: list[int],
    gguf_type: str,
    tmp_path: Path,
) -> None:
    out = export_gguf(tiny_folder, tmp_path / "model.gguf", gguf_type=gguf_type)
    assert out == tmp_path / "model.gguf"
    assert gguf_file_type(out) == gguf_type
    assert out.stat().st_size < f16_gguf.stat().st_size
    ppl_f16, ppl_q = (_llama_perplexity(path, sampled_tokens) for path in (f16_gguf, out))
    assert ppl_q == pytest.approx(ppl_f16, rel=PPL_REL_TOL[gguf_type])
    # llama.cpp runs what the file holds: transformers on its weights (dequantised by gguf-py).
    dequantised = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name).eval()
    ppl_ref = perplexity_from_logits(hf_logits(dequantised, sampled_tokens), sampled_tokens)
    assert ppl_q == pytest.approx(ppl_ref, rel=RUNTIME_REL_TOL)
    # The tolerance can fail: another random model scores the same tokens far outside it.
    other = tiny_gguf_llama(VOCAB, seed=1)
    ppl_other = perplexity_from_logits(hf_logits(other, sampled_tokens), sampled_tokens)
    assert abs(ppl_other / ppl_f16 - 1) > 5 * PPL_REL_TOL[gguf_type]


def test_export_ggufs_converts_to_f16_once_and_names_files_by_type(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    convert = gguf_export._convert

    def counted(folder: Path, out: Path, outtype: str) -> None:
        calls.append(outtype)
        convert(folder, out, outtype)

    monkeypatch.setattr(gguf_export, "_convert", counted)
    reporter = RecordingReporter()
    paths = export_ggufs(tiny_folder, tmp_path, ["q4_0", "F16"], stem="tiny", reporter=reporter)
    assert [p.name for p in paths] == ["tiny.Q4_0.gguf", "tiny.F16.gguf"]
    assert [gguf_file_type(p) for p in paths] == ["q4_0", "f16"]
    assert calls == ["f16"]  # the kept f16 file is what q4_0 was quantised from
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.F16.gguf", "tiny.Q4_0.gguf"]
    written = {d["file"]: d["bytes"] for _, m, d in reporter.events if m == "GGUF file written"}
    assert written == {p.name: p.stat().st_size for p in paths}


def test_gguf_perplexity_is_llama_cpps_on_each_block(
    f16_gguf: Path, sampled_tokens: list[int]
) -> None:
    blocks = np.array([sampled_tokens[:160], sampled_tokens[160:320]])
    want = [_llama_perplexity(f16_gguf, list(map(int, b))) for b in blocks]
    # Blocks of equal length: exp of the mean NLL is the geometric mean of their perplexities.
    assert gguf_perplexity(f16_gguf, blocks) == pytest.approx(float(np.sqrt(want[0] * want[1])))
    with pytest.raises(ValueError, match="seq_len"):
        gguf_perplexity(f16_gguf, np.array([1, 2, 3]))
    with pytest.raises(RuntimeError, match="could not score"):
        gguf_perplexity(tiny_folder_file(f16_gguf), blocks)


def tiny_folder_file(f16_gguf: Path) -> Path:
    """A file that is no GGUF, beside ``f16_gguf``."""
    path = f16_gguf.parent / "not-a-model.gguf"
    path.write_bytes(b"not a gguf file")
    return path


def test_unknown_type_is_refused_with_the_supported_list(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="q4_k_m") as err:
        export_gguf(tiny_folder, tmp_path, gguf_type="q3_x")
    assert all(t in str(err.value) for t in GGUF_TYPES)
    assert list(tmp_path.iterdir()) == []


def test_converter_failure_quotes_its_log(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["NoSuchForCausalLM"]}))
    with pytest.raises(RuntimeError, match="NoSuchForCausalLM is not supported"):
        export_gguf(folder, tmp_path / "out.gguf")


def test_converter_of_another_llama_cpp_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    (tmp_path / "SOURCE.json").write_text(json.dumps({"version": "0.0.1"}))
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match=r"llama-cpp-python 0\.0\.1"):
        export_gguf(tmp_path, tmp_path / "out.gguf")


def test_gguf_supported() -> None:
    assert gguf_supported({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}) is True
    assert gguf_supported({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}) is True
    lowrank = {
        "architectures": ["SlimforgeLowRankLlamaForCausalLM"],
        "model_type": "slimforge_lowrank",
    }
    assert "low-rank" in str(gguf_supported(lowrank))
    assert "NoSuchForCausalLM" in str(gguf_supported({"architectures": ["NoSuchForCausalLM"]}))
    assert isinstance(gguf_supported({}), str)


@pytest.mark.slow
def test_smollm2_f16_roundtrip_decodes_like_transformers(tmp_path: Path) -> None:
    folder = smollm2_dir()
    assert gguf_file_type(folder / GGUF) == "q4_1"  # the default output type for this input
    model, tok = load_model(ModelSource(path=str(folder), gguf_file=GGUF))
    hf = tmp_path / "hf"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    assert gguf_supported(json.loads((hf / "config.json").read_text())) is True
    out = export_gguf(hf, tmp_path, gguf_type="f16")
    assert gguf_file_type(out) == "f16"
    llm = Llama(model_path=str(out), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    with closing(llm):
        for prompt in ("A list in Python is", "The capital of France is", "To bake bread, you"):
            ids = tok(prompt)["input_ids"]
            assert llm.tokenize(prompt.encode(), add_bos=False) == ids
            want = tok.decode(hf_greedy(model, ids, 24))
            assert tok.decode(llama_greedy(llm, ids, 24)) == want, prompt
