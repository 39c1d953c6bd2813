"""Weight-only int8 quantization: the layer's maths, quality on a trained model, quantized
checkpoints that load back without quantizing again, every model family, the CLI flag."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.sources import load_text
from scratchgpt.errors import ConfigError
from scratchgpt.generation import generate
from scratchgpt.model import build_model
from scratchgpt.model.lora import apply_lora
from scratchgpt.model.quantize import Int8Linear, quantize_model
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import load_model, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_the_dequantized_weight(dtype, bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 40, bias=bias).to(dtype)
    q = Int8Linear.from_linear(lin)
    assert q.weight.dtype == torch.int8 and q.scales.shape == (40,)
    w = lin.weight.float()
    # Rounding to the nearest of 255 levels per row: at most half a step off (plus bf16's own
    # rounding of the scale and the product, 2**-8 relative each).
    step = w.abs().amax(1, keepdim=True) / 127
    slack = 1e-6 if dtype == torch.float32 else 2 * 2**-8 * w.abs()
    assert ((q.dequantized().float() - w).abs() <= step / 2 + slack).all()
    x = torch.randn(3, 5, 48, dtype=dtype)
    expected = torch.nn.functional.linear(x, q.dequantized().to(dtype), q.bias)
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert torch.allclose(q(x).float(), expected.float(), atol=tol, rtol=0)


@pytest.fixture(scope="module")
def trained():
    """A tiny character-level GPT trained for 100 steps on The Verdict, and held-out windows."""
    torch.manual_seed(0)
    text = load_text("the-verdict")
    tok = get_tokenizer("char", corpus=text)
    ids = torch.tensor(tok.encode(text))
    split = int(0.9 * len(ids))
    cfg = GPTConfig.from_preset("tiny", context_length=64, vocab_size=tok.vocab_size)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        starts = torch.randint(0, split - 33, (8,), generator=g)
        batch = torch.stack([ids[s : s + 33] for s in starts])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = torch.stack([ids[s : s + 33] for s in range(split, len(ids) - 33, 33)])
    return model.eval(), held_out


def test_int8_keeps_a_trained_models_predictions(trained):
    """Stated tolerance: top-1 agreement >= 97% and perplexity within 1% on held-out text."""
    model, held_out = trained
    x, y = held_out[:, :-1], held_out[:, 1:]
    with torch.no_grad():
        ref = model(x)
        q = quantize_model(build_model(model.cfg))
        q.load_state_dict(quantize_model(_copy(model)).state_dict())
        out = q.eval()(x)
    agree = (ref.argmax(-1) == out.argmax(-1)).float().mean().item()
    ppl = [torch.nn.functional.cross_entropy(o.flatten(0, 1), y.flatten()).exp().item()
           for o in (ref, out)]  # fmt: skip
    assert agree >= 0.97, agree
    assert abs(ppl[1] / ppl[0] - 1) < 0.01, ppl
    # A greedy choice changes only where fp32's top two logits are closer than int8's error.
    err = (out - ref).abs().amax(-1)
    top2 = ref.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    changed = ref.argmax(-1) != out.argmax(-1)
    assert (margin[changed] <= 2 * err[changed]).all()


def _copy(model):
    fresh = build_model(model.cfg)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


@pytest.mark.parametrize("preset", ["tiny", "llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
def test_every_family_quantizes_saves_and_loads_back_as_is(preset, tmp_path):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset(preset, vocab_size=120)).eval()
    idx = torch.randint(0, 120, (2, 16))
    with torch.no_grad():
        ref = model(idx)
    quantize_model(model)
    assert model.cfg.quantization == "int8" and not model.cfg.tie_weights
    assert all(type(m) is not torch.nn.Linear for m in model.modules())
    with torch.no_grad():
        out = model(idx)
    assert (out - ref).abs().max() < 0.02 * ref.abs().max()
    save_checkpoint(tmp_path / "q", model)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization"] == "int8"
    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:
        assert f.get_slice("trf_blocks.0.att.W_query.weight").get_dtype() == "I8"
    loaded = load_model(tmp_path / "q")
    assert loaded.config == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k  # not quantized again
    with torch.no_grad():
        assert torch.equal(loaded.model(idx), out)
    cached, uncached = (generate(loaded.model, idx, 20, use_cache=c) for c in (True, False))
    assert torch.equal(cached, uncached)
    # Loading it with quantize="int8" is the same model; bf16 runs too.
    again = load_model(tmp_path / "q", quantize="int8", dtype=torch.bfloat16)
    assert again.model.out_head.scales.dtype == torch.bfloat16
    assert generate(again.model, idx, 5).shape == (2, 21)


def test_quantize_refuses_lora_and_unknown_schemes():
    model = build_model(GPTConfig.from_preset("tiny", vocab_size=50))
    with pytest.raises(ConfigError, match="int8"):
        quantize_model(model, "int4")
    apply_lora(model, rank=2, alpha=4.0)
    with pytest.raises(ConfigError, match="merge them"):
        quantize_model(model)


def test_generate_cli_quantize_flag(tmp_path, capsys):
    torch.manual_seed(0)
    tok = get_tokenizer("gpt2")
    save_checkpoint(tmp_path / "m", build_model(GPTConfig.from_preset("tiny")), tok)
    argv = ["generate", "--checkpoint", str(tmp_path / "m"), "--prompt", "Hello",
            "--max-new-tokens", "5"]  # fmt: skip
    assert main([*argv, "--quantize", "int8"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    with pytest.raises(SystemExit):
        main([*argv, "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_quantized_models_are_not_exported(tmp_path):
    from scratchgpt.errors import CheckpointError
    from scratchgpt.weights.gguf import save_gguf
    from scratchgpt.weights.hf import save_hf_model

    model = quantize_model(build_model(GPTConfig.from_preset("tiny")))
    with pytest.raises(CheckpointError, match="quantized"):
        save_hf_model(model, tmp_path / "hf")
    with pytest.raises(CheckpointError, match="quantized"):
        save_gguf(model, get_tokenizer("gpt2"), tmp_path / "m.gguf")
