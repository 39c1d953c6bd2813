"""Qwen3-MoE weight interop, proven against transformers: a tiny random ``Qwen3MoeForCausalLM``
(experts with top-k routing, one dense layer through ``mlp_only_layers``, untied head) loads into
our LlamaModel with the same logits and the same greedy generations, with and without the
cache, and our export loads back in transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from parity import VOCAB, logits_of, prompt, randomize  # noqa: E402
from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.errors import CheckpointError  # noqa: E402
from scratchgpt.generation import generate  # noqa: E402
from scratchgpt.model import LlamaModel, build_model  # noqa: E402
from scratchgpt.model.feed_forward import SwiGLUFeedForward  # noqa: E402
from scratchgpt.model.moe import MoEFeedForward  # noqa: E402
from scratchgpt.weights import load_model  # noqa: E402
from scratchgpt.weights.hf import save_hf_model  # noqa: E402

transformers.logging.set_verbosity_error()

QWEN3_MOE = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=72, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=80,
    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
    num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24, norm_topk_prob=True,
    decoder_sparse_step=1, mlp_only_layers=[1], bos_token_id=None, eos_token_id=None,
)  # fmt: skip


def random_hf(seed: int = 0, **changes) -> Qwen3MoeForCausalLM:
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**QWEN3_MOE, **changes})).eval()
    randomize(model)  # the router too (transformers starts it at zeros)
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    hf = random_hf()
    folder = tmp_path_factory.mktemp("qwen3_moe")
    hf.save_pretrained(folder)
    return hf, folder


def test_config_and_logits_match_transformers(hf_folder):
    hf, folder = hf_folder
    loaded = load_model(folder)
    model, cfg = loaded.model, loaded.config
    assert isinstance(model, LlamaModel) and loaded.format == "hf-qwen3_moe"
    assert (cfg.family, cfg.num_experts, cfg.num_experts_per_tok) == ("qwen3", 6, 2)
    assert (cfg.moe_intermediate_size, cfg.norm_topk_prob, cfg.mlp_only_layers) == (24, True, (1,))
    kinds = [type(b.ff) for b in model.trf_blocks]
    assert kinds == [MoEFeedForward, SwiGLUFeedForward, MoEFeedForward]
    idx = prompt(length=QWEN3_MOE["max_position_embeddings"])  # the full context
    assert (logits_of(hf, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_without_renormalised_top_k(tmp_path):
    hf = random_hf(seed=4, norm_topk_prob=False, mlp_only_layers=[])
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path).model
    assert model.cfg.norm_topk_prob is False
    idx = prompt(length=20)
    assert (logits_of(hf, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_greedy_generation_matches_transformers(hf_folder):
    hf, folder = hf_folder
    model = load_model(folder).model
    idx = prompt(batch=2, length=5, seed=3)
    with torch.no_grad():
        expected = hf.generate(
            idx, attention_mask=torch.ones_like(idx), max_new_tokens=40, min_new_tokens=40,
            do_sample=False, pad_token_id=0,
        )  # fmt: skip
    for use_cache in (True, False):
        ours = generate(model, idx, 40, use_cache=use_cache)
        assert torch.equal(ours, expected), f"use_cache={use_cache}"


def test_export_loads_in_transformers(hf_folder, tmp_path):
    _hf, folder = hf_folder
    model = load_model(folder).model
    out = save_hf_model(model, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen3_moe"
    back, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert type(back) is Qwen3MoeForCausalLM
    idx = prompt(length=30)
    assert (logits_of(back.eval(), idx) - logits_of(model, idx)).abs().max().item() < 1e-4
    again = load_model(out).model  # ours -> HF -> ours: every tensor bit for bit
    assert again.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert "model.layers.0.mlp.experts.5.down_proj.weight" in load_file(out / "model.safetensors")


def test_model_built_here_exports_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("qwen3-moe-tiny", vocab_size=VOCAB)).eval()
    out = save_hf_model(model, tmp_path / "tiny")
    back = AutoModelForCausalLM.from_pretrained(out).eval()
    idx = prompt(length=40)
    assert (logits_of(back, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_missing_moe_fields_are_refused(hf_folder, tmp_path):
    _, folder = hf_folder
    raw = json.loads((folder / "config.json").read_text())
    for key in ("num_experts", "num_local_experts"):
        raw.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="num_experts"):
        load_model(tmp_path)
