"""Llama 3.x / Qwen3 in the one config and model builder: presets with the published parameter
counts, config round trips (GPT-2's config.json unchanged), validation, the grouped-query KV
cache, and the two attention implementations agreeing."""

from __future__ import annotations

import json

import pytest
import torch

from scratchgpt.config import GPTConfig, RopeScaling
from scratchgpt.errors import ConfigError
from scratchgpt.generation import generate
from scratchgpt.model import GPTModel, KVCache, LlamaModel, build_model, model_stats
from scratchgpt.model.rope import rope_inv_freq
from scratchgpt.weights import load_model, save_checkpoint

# The published sizes (model cards / config.json on the Hugging Face hub).
PUBLISHED = {
    "llama3.2-1b": 1_235_814_400,
    "llama3.2-3b": 3_212_749_824,
    "llama3.1-8b": 8_030_261_248,
    "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976,
    "qwen3-4b": 4_022_468_096,
    "qwen3-8b": 8_190_735_360,
}


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_presets_have_the_published_parameter_counts(preset):
    cfg = GPTConfig.from_preset(preset)
    assert model_stats(cfg).total_params == PUBLISHED[preset]
    with torch.device("meta"):  # shapes only: no memory
        model = build_model(cfg)
    assert isinstance(model, LlamaModel)
    assert model.num_parameters() == PUBLISHED[preset]


def test_gpt2_config_json_is_unchanged_and_families_round_trip(tmp_path):
    gpt2 = GPTConfig.from_preset("gpt2-small")
    assert set(gpt2.to_dict()) == {
        "vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate",
        "qkv_bias", "tie_weights", "attention", "init", "ln_eps",
    }  # fmt: skip
    for name in ("llama3.2-1b", "qwen3-0.6b", "llama3-tiny", "qwen3-tiny", "gpt2-small"):
        cfg = GPTConfig.from_preset(name)
        path = cfg.save(tmp_path / f"{name}.json")
        assert GPTConfig.load(path) == cfg
    raw = json.loads((tmp_path / "llama3.2-1b.json").read_text())
    assert raw["rope_scaling"]["factor"] == 32.0 and raw["n_kv_groups"] == 8


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(family="mistral"), "family"),
        (dict(family="llama3", n_kv_groups=3), "multiple of n_kv_groups"),
        (dict(n_kv_groups=2), "llama3/qwen3"),
        (dict(qk_norm=True), "llama3/qwen3"),
        (dict(family="llama3", rope_scaling=dict(factor=8.0, low_freq_factor=4.0)), "greater"),
        (dict(family="llama3", rope_scaling=dict(scale=2)), "rope_scaling"),
        (dict(family="qwen3", head_dim=7), "even head_dim"),
        (dict(family="llama3", rope_base=0), "rope_base"),
    ],
)
def test_bad_family_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        GPTConfig.from_preset("tiny", **changes)


def test_gpt_model_refuses_another_family():
    with pytest.raises(ConfigError, match="build_model"):
        GPTModel(GPTConfig.from_preset("llama3-tiny"))


def test_llama3_scaling_keeps_high_and_stretches_low_frequencies():
    plain = rope_inv_freq(64, 500000.0)
    scaled = rope_inv_freq(64, 500000.0, RopeScaling(factor=32.0))
    wavelen = 2 * torch.pi / plain
    assert torch.equal(scaled[wavelen < 8192 / 4], plain[wavelen < 8192 / 4])
    assert torch.allclose(scaled[wavelen > 8192], plain[wavelen > 8192] / 32)
    medium = (wavelen >= 2048) & (wavelen <= 8192)
    assert medium.any()
    assert ((scaled[medium] < plain[medium]) & (scaled[medium] > plain[medium] / 32)).all()


@pytest.mark.parametrize("preset", ["llama3-tiny", "qwen3-tiny"])
def test_kv_cache_holds_only_key_value_heads_and_matches_no_cache(preset):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset(preset, vocab_size=100)).eval()
    cache = KVCache.for_model(model, batch_size=2, max_len=20)
    assert len(cache.keys) == 2
    assert cache.keys[0].shape == (2, model.cfg.kv_heads, 20, model.cfg.head_size)
    assert model.cfg.kv_heads < model.cfg.n_heads
    idx = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        full = model(idx)
        model(idx[:, :7], kv_cache=cache)
        step = [model(idx[:, i : i + 1], kv_cache=cache) for i in range(7, 12)]
    assert torch.allclose(torch.cat(step, 1), full[:, 7:], atol=1e-5)
    cached, uncached = (generate(model, idx, 30, use_cache=c) for c in (True, False))
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("preset", ["llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
def test_explicit_attention_matches_sdpa(preset):
    torch.manual_seed(0)
    cfg = GPTConfig.from_preset(preset, vocab_size=100)
    sdpa = build_model(cfg).eval()
    explicit = build_model(cfg.replace(attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 100, (2, 30))
    mask = torch.ones_like(idx)
    mask[1, :5] = 0
    with torch.no_grad():
        assert torch.allclose(sdpa(idx), explicit(idx), atol=1e-5)
        a = sdpa(idx, attention_mask=mask)
        b = explicit(idx, attention_mask=mask)
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


@pytest.mark.parametrize("preset", ["llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
def test_native_checkpoint_round_trip(preset, tmp_path):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset(preset, vocab_size=100)).eval()
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.cfg and type(loaded.model) is type(model)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    if model.cfg.tie_weights:
        assert loaded.model.out_head.weight is loaded.model.tok_emb.weight


def test_training_step_reduces_loss_for_llama_shape():
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("qwen3-tiny", vocab_size=50)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 50, (4, 16))
    losses = []
    for _ in range(20):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("targets", [["q", "v"], ["q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"]])  # fmt: skip
def test_lora_on_projection_names_trains_only_adapters_and_merges_exactly(targets):
    from scratchgpt.model.lora import LinearWithLoRA, apply_lora, merge_lora

    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("qwen3-tiny", vocab_size=60)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = apply_lora(model, rank=2, alpha=4.0, targets=targets)
    adapted = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
               if isinstance(m, LinearWithLoRA)}  # fmt: skip
    want = {"W_query", "W_value"} if targets == ["q", "v"] else {
        "W_query", "W_key", "W_value", "out_proj", "fc1", "fc2", "fc3"}  # fmt: skip
    assert adapted == want and n == len(want) * model.cfg.n_layers
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    idx = torch.randint(0, 60, (2, 12))
    for _ in range(3):
        loss = model(idx).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        adapted_logits = model(idx)
    merge_lora(model)
    assert model.cfg.lora is None
    with torch.no_grad():
        assert torch.allclose(model(idx), adapted_logits, atol=1e-5)
    for k, v in model.state_dict().items():  # only the adapted projections changed
        changed = not torch.equal(v, before[k])
        assert changed == any(f".{m}." in f".{k}" for m in want), k
