"""The GPT model: book fidelity, attention implementations, layers, sizes, configs, caching."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scratchgpt.config import PRESETS, GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model import GELU, GPTModel, KVCache, LayerNorm, model_stats


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine an OpenMP team
    waiting for a descheduled thread makes small ops many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


BOOK_PROMPT = [15496, 11, 314, 716]  # "Hello, I am"
BOOK_CONTINUATION = [27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062, 34657]


def tiny(**overrides) -> GPTConfig:
    return GPTConfig.from_preset("tiny", **overrides)


def build(cfg: GPTConfig, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


def pair(seed: int = 0, **overrides) -> tuple[GPTModel, GPTModel]:
    """The same weights under the explicit and the SDPA attention."""
    explicit = build(tiny(attention="explicit", **overrides), seed)
    sdpa = GPTModel(tiny(attention="sdpa", **overrides)).eval()
    sdpa.load_state_dict(explicit.state_dict())
    return explicit, sdpa


# --------------------------------------------------------------------------------------------
# Book fidelity (chapter 4): the untrained model's greedy continuation of "Hello, I am"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_book_untrained_continuation(attention):
    torch.manual_seed(123)
    model = GPTModel(GPTConfig.from_preset("gpt2-small", attention=attention)).eval()
    idx = torch.tensor([BOOK_PROMPT])
    with torch.no_grad():
        for _ in range(10):  # the book's generate_text_simple
            logits = model(idx[:, -1024:])[:, -1, :]
            idx = torch.cat((idx, logits.argmax(dim=-1, keepdim=True)), dim=1)
    assert idx[0, 4:].tolist() == BOOK_CONTINUATION


# --------------------------------------------------------------------------------------------
# Explicit vs SDPA attention, padding, KV cache
# --------------------------------------------------------------------------------------------


def test_explicit_and_sdpa_agree():
    explicit, sdpa = pair(1, n_layers=3, qkv_bias=True)
    idx = torch.randint(0, 50257, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(explicit(idx), sdpa(idx), atol=1e-5)


def test_explicit_and_sdpa_agree_with_padding_mask():
    explicit, sdpa = pair(2)
    idx = torch.randint(0, 50257, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :5] = 0
    mask[2, :11] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = explicit(idx, attention_mask=mask, position_ids=pos)
        b = sdpa(idx, attention_mask=mask, position_ids=pos)
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_padded_batch_matches_single_sequences(attention):
    model = build(tiny(attention=attention, n_heads=2), 3)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 50257, (n,), generator=g) for n in (9, 4, 1)]
    width = 9
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, width - len(s) :] = s
        mask[b, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, position_ids=pos, last_token_only=True)[:, -1]
        for b, s in enumerate(seqs):
            single = model(s[None])[:, -1]
            assert torch.allclose(batched[b], single[0], atol=1e-5)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_kv_cache_steps_match_full_forward(attention):
    model = build(tiny(attention=attention, n_layers=3), 4)
    idx = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(3))
    cache = KVCache.for_model(model, batch_size=2, max_len=10)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :6], kv_cache=cache)]  # prefill, then one token at a time
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(6, 10)]
    assert cache.pos == 10
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    cache.reset()
    assert cache.pos == 0


def test_context_overflow_is_a_clear_error():
    model = build(tiny())
    with pytest.raises(ConfigError, match=r"65 tokens exceeds the model's context_length \(64\)"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = KVCache.for_model(model, 1)
    model(torch.zeros(1, 60, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ConfigError, match="context_length"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


def test_last_token_only_equals_last_row():
    model = build(tiny(), 5)
    idx = torch.randint(0, 50257, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(model(idx, last_token_only=True), model(idx)[:, -1:], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Layers: the written-out maths
# --------------------------------------------------------------------------------------------


def test_layer_norm_is_the_formula():
    torch.manual_seed(0)
    ln = LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        ln.scale.normal_()
        ln.shift.normal_()
    x = torch.randn(3, 5, 16) * 3 + 1
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as the book
    expected = ln.scale * (x - mean) / torch.sqrt(var + 1e-5) + ln.shift
    assert torch.allclose(ln(x), expected, atol=1e-5)


def test_gelu_is_the_tanh_formula():
    x = torch.linspace(-6, 6, 1001)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert torch.allclose(GELU()(x), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def test_book_parameter_counts():
    s = model_stats(GPTConfig.from_preset("gpt2-small"))
    assert s.total_params == 163_009_536
    assert s.params_without_head == 124_412_160
    assert round(s.memory_mb(), 2) == 621.83
    # The book's exercise 4.1 totals for the larger sizes.
    totals = {"gpt2-medium": 406_212_608, "gpt2-large": 838_220_800, "gpt2-xl": 1_637_792_000}
    for name, total in totals.items():
        assert model_stats(GPTConfig.from_preset(name)).total_params == total
    # Released GPT-2 (qkv bias, tied head) has 124,439,808.
    real = GPTConfig.from_preset("gpt2-small", qkv_bias=True, tie_weights=True)
    assert model_stats(real).total_params == 124_439_808


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(tie_weights=True),
        dict(qkv_bias=True),
        dict(qkv_bias=True, tie_weights=True, n_layers=3, n_heads=2, vocab_size=1000),
    ],
)
def test_model_stats_matches_instantiated_model(overrides):
    cfg = tiny(**overrides)
    model = GPTModel(cfg)
    s = model_stats(cfg)
    assert s.total_params == model.num_parameters()
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert s.params_without_head == model.num_parameters(exclude_head=True)


def test_tie_weights_shares_the_tensor():
    model = GPTModel(tiny(tie_weights=True))
    assert model.out_head.weight is model.tok_emb.weight
    assert "out_head.weight" in model.state_dict()
    untied = GPTModel(tiny())
    assert untied.out_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()


def test_gpt2_init_statistics():
    cfg = GPTConfig(
        vocab_size=4000, context_length=256, emb_dim=256, n_heads=4, n_layers=8, init="gpt2",
        qkv_bias=True,
    )  # fmt: skip
    model = build(cfg)
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 0.001
    assert abs(model.trf_blocks[0].att.W_query.weight.std().item() - 0.02) < 0.001
    assert abs(model.trf_blocks[0].ff.layers[0].weight.std().item() - 0.02) < 0.001
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.trf_blocks:
        assert abs(block.att.out_proj.weight.std().item() - residual) < 0.0005
        assert abs(block.ff.layers[2].weight.std().item() - residual) < 0.0005
        assert torch.count_nonzero(block.att.W_key.bias) == 0
        assert torch.count_nonzero(block.ff.layers[0].bias) == 0
        assert torch.all(block.norm1.scale == 1) and torch.all(block.norm1.shift == 0)


def test_causal_mask_not_in_state_dict():
    model = GPTModel(tiny())
    assert not any(k.endswith("att.mask") for k in model.state_dict())


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(emb_dim=30, n_heads=4), r"emb_dim \(30\) must be divisible by n_heads \(4\)"),
        (dict(attention="flash"), "attention must be 'sdpa' or 'explicit'"),
        (dict(init="xavier"), "init must be 'pytorch' or 'gpt2'"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(vocab_size=True), "vocab_size must be a positive integer"),
        (dict(drop_rate=1.0), r"drop_rate must be in \[0, 1\)"),
        (dict(ln_eps=0.0), "ln_eps must be > 0"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)


def test_config_unknown_field_and_json_round_trip(tmp_path):
    cfg = tiny(qkv_bias=True, attention="explicit")
    path = cfg.save(tmp_path / "config.json")
    assert GPTConfig.load(path) == cfg
    assert GPTConfig.from_dict(json.loads(cfg.to_json())) == cfg
    data = cfg.to_dict() | {"emb_dm": 3}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"bad\.json.*unknown GPTConfig field\(s\) \['emb_dm'\]"):
        GPTConfig.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps(cfg.to_dict() | {"n_heads": 5}))
    with pytest.raises(ConfigError, match=r"bad2\.json.*divisible"):
        GPTConfig.load(tmp_path / "bad2.json")


def test_presets():
    assert set(PRESETS) >= {"gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "mini", "tiny"}
    small = GPTConfig.from_preset("gpt2-small")
    assert (small.emb_dim, small.n_layers, small.n_heads, small.context_length) == (
        768,
        12,
        12,
        1024,
    )
    assert small.qkv_bias is False and small.tie_weights is False and small.drop_rate == 0.1
    xl = GPTConfig.from_preset("gpt2-xl")
    assert (xl.emb_dim, xl.n_layers, xl.n_heads) == (1600, 48, 25)
    assert GPTConfig.from_preset("tiny", n_layers=5).n_layers == 5
    with pytest.raises(ConfigError, match="unknown preset 'gpt3'"):
        GPTConfig.from_preset("gpt3")
    with pytest.raises(ConfigError, match="unknown GPTConfig field"):
        GPTConfig.from_preset("tiny", layers=3)
    for name in ("mini", "tiny"):
        model = GPTModel(GPTConfig.from_preset(name))
        assert model.num_parameters() == model_stats(model.cfg).total_params
