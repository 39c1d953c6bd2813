"""Llama 3.x and Qwen3 weight interop, proven against transformers: tiny random
``LlamaForCausalLM`` (GQA, Llama 3 RoPE scaling, untied head) and ``Qwen3ForCausalLM`` (QK-norm,
own head_dim, tied embeddings) load into our LlamaModel with the same logits and the same greedy
generations, and our export loads back in transformers.

transformers takes seconds to import, so the tests that need it for these families live here.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from parity import VOCAB, edited_copy, logits_of, prompt, randomize  # noqa: E402
from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.errors import CheckpointError  # noqa: E402
from scratchgpt.generation import generate  # noqa: E402
from scratchgpt.model import LlamaModel, build_model  # noqa: E402
from scratchgpt.weights import inspect_model, load_model  # noqa: E402
from scratchgpt.weights.hf import save_hf_model  # noqa: E402

transformers.logging.set_verbosity_error()

LLAMA = dict(
    vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=80,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    bos_token_id=None, eos_token_id=None,  # min_new_tokens would forbid an eos id
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 24},
)  # fmt: skip
QWEN3 = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=80,
    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
)  # fmt: skip
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, LLAMA, "llama3"),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, QWEN3, "qwen3"),
}


def random_hf(name: str, seed: int = 0):
    config_cls, model_cls, kwargs, _ = FAMILIES[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    # HF's init sets norms to 1 and weights to N(0, 0.02); random values of a useful size make
    # every mapping (and a swapped pair of tensors) visible in the logits.
    randomize(model)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def hf_folder(request, tmp_path_factory):
    """(family name, HF model, its save_pretrained folder)."""
    hf = random_hf(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return request.param, hf, folder


def test_config_and_logits_match_transformers(hf_folder):
    name, hf, folder = hf_folder
    loaded = load_model(folder)
    model, cfg, hc = loaded.model, loaded.config, hf.config
    assert isinstance(model, LlamaModel) and not model.training
    assert loaded.format == f"hf-{name}" and cfg.family == FAMILIES[name][3]
    assert (cfg.n_heads, cfg.kv_heads, cfg.head_size) == (
        hc.num_attention_heads, hc.num_key_value_heads, hc.head_dim,
    )  # fmt: skip
    assert cfg.qk_norm == (name == "qwen3") and cfg.tie_weights == hc.tie_word_embeddings
    assert (cfg.rope_scaling is not None) == (name == "llama")
    idx = prompt(length=hc.max_position_embeddings)  # the full context
    diff = (logits_of(hf, idx) - logits_of(model, idx)).abs().max().item()
    assert diff < 1e-4
    if cfg.tie_weights:
        assert model.out_head.weight is model.tok_emb.weight


def test_greedy_generation_matches_transformers(hf_folder):
    _, hf, folder = hf_folder
    model = load_model(folder).model
    idx = prompt(batch=2, length=5, seed=3)
    with torch.no_grad():
        expected = hf.generate(
            idx, attention_mask=torch.ones_like(idx), max_new_tokens=60, min_new_tokens=60,
            do_sample=False, pad_token_id=0,
        )  # fmt: skip
    assert expected.shape == (2, 65)
    for use_cache in (True, False):
        ours = generate(model, idx, 60, use_cache=use_cache)
        assert torch.equal(ours, expected), f"use_cache={use_cache}"


def test_left_padded_batch_matches_transformers(hf_folder):
    """Padding shifts RoPE positions; a left-padded row must compute what transformers does."""
    _, hf, folder = hf_folder
    model = load_model(folder).model
    idx = prompt(batch=2, length=9, seed=5)
    mask = torch.ones_like(idx)
    mask[0, :4] = 0  # row 0: 4 padding tokens on the left
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ours = logits_of(model, idx, attention_mask=mask, position_ids=pos)
    theirs = logits_of(hf, idx, attention_mask=mask, position_ids=pos)
    assert (ours - theirs)[mask.bool()].abs().max().item() < 1e-4
    rows = [idx[0, 4:].tolist(), idx[1].tolist()]
    batched = generate(model, rows, 20, pad_id=0)
    for i, row in enumerate(rows):
        alone = generate(model, torch.tensor([row]), 20)
        assert batched[i, -20:].tolist() == alone[0, -20:].tolist()


def test_export_loads_in_transformers(hf_folder, tmp_path):
    _name, hf, folder = hf_folder
    model = load_model(folder).model
    out = save_hf_model(model, tmp_path / "export")
    back, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert type(back) is type(hf)
    idx = prompt(length=30)
    assert (logits_of(back.eval(), idx) - logits_of(model, idx)).abs().max().item() < 1e-4
    again = load_model(out).model  # ours -> HF -> ours: every tensor bit for bit
    assert again.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    tensors = load_file(out / "model.safetensors")
    assert ("lm_head.weight" in tensors) is not model.cfg.tie_weights


def test_model_trained_here_exports_and_reloads(tmp_path):
    """A Llama-shaped model built from our preset (not loaded from HF) exports to a folder
    transformers reads with the same logits."""
    torch.manual_seed(0)
    for preset in ("llama3-tiny", "qwen3-tiny"):
        model = build_model(GPTConfig.from_preset(preset, vocab_size=VOCAB)).eval()
        out = save_hf_model(model, tmp_path / preset)
        back = AutoModelForCausalLM.from_pretrained(out).eval()
        idx = prompt(length=40)
        assert (logits_of(back, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_sharded_folder_and_unprefixed_keys(tmp_path):
    hf = random_hf("llama")
    hf.save_pretrained(tmp_path, max_shard_size="60KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = load_model(tmp_path).model
    idx = prompt()
    assert (logits_of(hf, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_bf16_load_matches_transformers_bf16(hf_folder):
    _, _hf, folder = hf_folder
    model = load_model(folder, dtype=torch.bfloat16).model
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    idx = prompt(length=16)
    ours, theirs = logits_of(model, idx).float(), logits_of(hf16, idx).float()
    scale = theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() < 0.02 * scale
    assert torch.equal(generate(model, idx[:1, :5], 10), hf16.generate(
        idx[:1, :5], attention_mask=torch.ones_like(idx[:1, :5]), max_new_tokens=10,
        min_new_tokens=10, do_sample=False, pad_token_id=0,
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "yarn"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"hidden_size": None}, "hidden_size"),
        ({"num_key_value_heads": 1}, "shape"),
    ],
)
def test_unsupported_or_mismatched_configs_are_refused(hf_folder, tmp_path, changes, message):
    _, _, folder = hf_folder
    edited = edited_copy(folder, tmp_path, **changes)
    if changes.get("hidden_size", 1) is None:
        raw = json.loads((edited / "config.json").read_text())
        del raw["hidden_size"]
        (edited / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message):
        load_model(edited)


def test_inspect_reads_config_without_weights(hf_folder):
    name, hf, folder = hf_folder
    files = inspect_model(folder)
    assert files.format == f"hf-{name}"
    assert files.config.vocab_size == VOCAB and files.config.n_layers == hf.config.num_hidden_layers
