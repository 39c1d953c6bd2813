"""Gemma 3 weight interop, proven against transformers: a tiny random ``Gemma3ForCausalLM``
(local layers with a window of 6 and their own RoPE theta, a global layer, GQA, QK-norm,
query_pre_attn_scalar != head_dim, soft-capped logits) loads into our Gemma3Model with the same
logits and the same greedy generations, with and without the KV cache (whose local layers keep
only their window), left-padded batches included, and our export loads back in transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
)

import parity  # noqa: E402
from parity import VOCAB, edited_copy, logits_of, randomize  # noqa: E402
from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.errors import CheckpointError  # noqa: E402
from scratchgpt.generation import generate  # noqa: E402
from scratchgpt.model import Gemma3Model, KVCache, build_model  # noqa: E402
from scratchgpt.weights import load_model  # noqa: E402
from scratchgpt.weights.hf import save_hf_model  # noqa: E402

transformers.logging.set_verbosity_error()

WINDOW = 6
LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
GEMMA3 = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=72, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=96,
    query_pre_attn_scalar=24, sliding_window=WINDOW, layer_types=LAYERS, rope_theta=1e6,
    rope_local_base_freq=1e4, final_logit_softcapping=30.0, attn_logit_softcapping=None,
    rms_norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=0, bos_token_id=2,
    eos_token_id=1,
)  # fmt: skip


def random_hf(seed: int = 0, **changes) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**{**GEMMA3, **changes})).eval()
    # Gemma's norm weights are offsets from 1: around 0, so a wrong offset shows too.
    randomize(model, norms=(-0.5, 0.5))
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    hf = random_hf()
    folder = tmp_path_factory.mktemp("gemma3")
    hf.save_pretrained(folder)
    return hf, folder


def prompt(batch: int = 2, length: int = 7, seed: int = 1) -> torch.Tensor:
    return parity.prompt(batch, length, seed, low=3)  # no <pad>, <eos>, <bos>


def test_config_and_logits_match_transformers(hf_folder):
    hf, folder = hf_folder
    loaded = load_model(folder)
    model, cfg = loaded.model, loaded.config
    assert isinstance(model, Gemma3Model) and loaded.format == "hf-gemma3_text"
    assert (cfg.family, cfg.sliding_window, cfg.layer_types) == ("gemma3", WINDOW, tuple(LAYERS))
    assert (cfg.rope_base, cfg.rope_local_base, cfg.query_pre_attn_scalar) == (1e6, 1e4, 24)
    assert (cfg.final_softcap, cfg.tie_weights) == (30.0, True)
    assert [cfg.window(i) for i in range(4)] == [WINDOW, WINDOW, None, WINDOW]
    idx = prompt(length=GEMMA3["max_position_embeddings"])  # the full context, 16 windows
    assert (logits_of(hf, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_every_layer_local_and_a_set_attention_softcap(tmp_path):
    # A config whose layers are all local; and attn_logit_softcapping, which transformers'
    # Gemma 3 keeps in its config but never applies, so neither do we.
    hf = random_hf(seed=2, attn_logit_softcapping=5.0, layer_types=["sliding_attention"] * 4)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path).model
    assert [b.window for b in model.trf_blocks] == [WINDOW] * 4
    idx = prompt(length=30)
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


def test_cache_keeps_only_the_window_in_local_layers(hf_folder):
    _, folder = hf_folder
    model = load_model(folder).model
    cache = KVCache.for_model(model, batch_size=1, max_len=90)
    lengths = [k.shape[2] for k in cache.keys]
    assert lengths == [2 * WINDOW, 2 * WINDOW, 90, 2 * WINDOW]  # rings written twice
    # A prompt longer than the window in chunks, then single steps: the logits equal one pass
    # without a cache.
    idx = prompt(batch=1, length=40, seed=7)
    full = logits_of(model, idx)
    steps = [logits_of(model, idx[:, :13], kv_cache=cache)]
    steps.append(logits_of(model, idx[:, 13:17], kv_cache=cache))
    steps += [logits_of(model, idx[:, i : i + 1], kv_cache=cache) for i in range(17, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_left_padded_batch_matches_transformers(hf_folder):
    """Padding shifts RoPE positions and the window counts cache positions, as transformers'."""
    hf, folder = hf_folder
    model = load_model(folder).model
    idx = prompt(batch=2, length=15, seed=5)
    mask = torch.ones_like(idx)
    mask[0, :4] = 0  # row 0: 4 padding tokens on the left
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ours = logits_of(model, idx, attention_mask=mask, position_ids=pos)
    theirs = logits_of(hf, idx, attention_mask=mask, position_ids=pos)
    assert (ours - theirs)[mask.bool()].abs().max().item() < 1e-4
    with torch.no_grad():
        expected = hf.generate(
            idx, attention_mask=mask, max_new_tokens=20, min_new_tokens=20, do_sample=False,
            pad_token_id=0,
        )  # fmt: skip
    assert torch.equal(generate(model, idx, 20, attention_mask=mask), expected)


def test_export_loads_in_transformers(hf_folder, tmp_path):
    _hf, folder = hf_folder
    model = load_model(folder).model
    out = save_hf_model(model, tmp_path / "export")
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "gemma3_text" and raw["layer_types"] == LAYERS
    back, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert type(back) is Gemma3ForCausalLM
    idx = prompt(length=30)
    assert (logits_of(back.eval(), idx) - logits_of(model, idx)).abs().max().item() < 1e-4
    again = load_model(out).model  # ours -> HF -> ours: every tensor bit for bit
    assert again.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert "model.layers.3.post_feedforward_layernorm.weight" in load_file(
        out / "model.safetensors"
    )


def test_model_built_here_exports_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("gemma3-tiny", vocab_size=VOCAB)).eval()
    out = save_hf_model(model, tmp_path / "tiny")
    back = AutoModelForCausalLM.from_pretrained(out).eval()
    idx = prompt(length=40)
    assert (logits_of(back, idx) - logits_of(model, idx)).abs().max().item() < 1e-4


def test_bf16_load_matches_transformers_bf16(hf_folder):
    _, folder = hf_folder
    model = load_model(folder, dtype=torch.bfloat16).model
    hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    idx = prompt(length=16)
    ours, theirs = logits_of(model, idx).float(), logits_of(hf16, idx).float()
    assert (ours - theirs).abs().max().item() < 0.02 * theirs.abs().max().item()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0},
                              "sliding_attention": {"rope_type": "default"}}}, "linear"),
        ({"hidden_activation": "silu"}, "hidden_activation"),
        ({"use_bidirectional_attention": True}, "bidirectional"),
        ({"layer_types": ["full_attention"]}, "layer_types"),
        ({"num_key_value_heads": 1}, "shape"),
    ],
)  # fmt: skip
def test_unsupported_or_mismatched_configs_are_refused(hf_folder, tmp_path, changes, message):
    _, folder = hf_folder
    with pytest.raises(CheckpointError, match=message):
        load_model(edited_copy(folder, tmp_path, **changes))


def test_rope_parameters_spelling_and_older_pattern(hf_folder, tmp_path):
    """transformers 5 writes rope_parameters per layer type; older files give
    sliding_window_pattern instead of layer_types."""
    _, folder = hf_folder
    raw = json.loads((folder / "config.json").read_text())
    params = {"full_attention": {"rope_type": "default", "rope_theta": 5e5},
              "sliding_attention": {"rope_type": "default", "rope_theta": 2e4}}  # fmt: skip
    edited = edited_copy(folder, tmp_path, rope_parameters=params)
    cfg = load_model(edited).config
    assert (cfg.rope_base, cfg.rope_local_base) == (5e5, 2e4)
    raw.pop("layer_types")
    raw.pop("rope_parameters", None)
    raw.update(sliding_window_pattern=2, rope_theta=1e6, rope_local_base_freq=1e4)
    (edited / "config.json").write_text(json.dumps(raw))
    cfg = load_model(edited).config
    assert [cfg.window(i) for i in range(4)] == [WINDOW, None, WINDOW, None]
