"""optimize_for_decoding on every family (GPT-2, Llama 3.x, Qwen3): the query/key/value (and
Llama's gate/up) projections run as one matmul each (bf16 weights optionally packed for oneDNN,
int8 layers fused too), with the same values, parameters and state dict, and every path that
changes a layer afterwards (a state dict loaded in place, LoRA, a dtype change, training) still
computes the right thing."""

from __future__ import annotations

import copy

import pytest
import torch

from scratchgpt.config import GPTConfig
from scratchgpt.generation import generate, optimize_for_decoding
from scratchgpt.model import build_model
from scratchgpt.model.inference import can_pack
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.lora import apply_lora, merge_lora
from scratchgpt.model.quantize import quantize_model

PROMPT = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])


# The feed-forward fast path that reads the block's input, by family.
FF_FAST = {
    "tiny": "fast_up",
    "llama3-tiny": "fast_gate_up",
    "qwen3-tiny": "fast_gate_up",
    "gemma3-tiny": "fast_gate_up",
}


def tiny(preset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    extra = {"qkv_bias": True} if preset == "tiny" else {}
    cfg = GPTConfig.from_preset(preset, vocab_size=60, drop_rate=0.0, **extra)
    model = build_model(cfg).eval()
    with torch.no_grad():  # norms away from 1 and weights of a useful size
        for name, p in model.named_parameters():
            p.uniform_(0.5, 1.5) if name.endswith("scale") else p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("preset", ["tiny", "llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
@pytest.mark.parametrize(
    ("dtype", "pack"), [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)]
)
def test_fused_projections_keep_values_parameters_and_outputs(preset, dtype, pack):
    if pack and not can_pack():
        pytest.skip("this PyTorch has no oneDNN packed linear kernels")
    model = tiny(preset).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    with torch.inference_mode():
        logits = model(PROMPT).float()
    expected = generate(model, PROMPT, 12)

    assert optimize_for_decoding(model, pack=pack) is model
    block = model.trf_blocks[0]
    fused_qkv, fused_ff = block.att.fast_qkv, getattr(block.ff, FF_FAST[preset])
    assert fused_qkv is not None and fused_ff is not None
    assert (fused_qkv.packed is not None) == pack
    assert model.fast_head is not None
    # Each weight is a view of the fused tensor: nothing is stored twice.
    storage = fused_qkv.weight.untyped_storage().data_ptr()
    assert block.att.W_value.weight.untyped_storage().data_ptr() == storage
    ff_input_layer = block.ff.fc2 if preset != "tiny" else block.ff.layers[0]
    assert ff_input_layer.weight.untyped_storage().data_ptr() == (
        fused_ff.weight.untyped_storage().data_ptr()
    )
    assert [id(p) for p in model.parameters()] == params
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.inference_mode():
        assert fused_qkv.usable((block.att.W_query, block.att.W_key, block.att.W_value))
        tol = 1e-5 if dtype == torch.float32 else 0.1
        torch.testing.assert_close(model(PROMPT).float(), logits, atol=tol, rtol=0)
    assert torch.equal(generate(model, PROMPT, 12), expected)


@pytest.mark.parametrize("preset", ["tiny", "llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_layers_are_fused_with_the_same_outputs(preset, dtype):
    model = quantize_model(tiny(preset).to(dtype))
    with torch.inference_mode():
        logits = model(PROMPT).float()
    expected = generate(model, PROMPT, 12)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    optimize_for_decoding(model)
    att = model.trf_blocks[0].att
    fused = att.fast_qkv
    assert fused is not None and fused.scales is not None and model.fast_head is not None
    # The int8 weights, scales and biases of query/key/value are views of the fused tensors.
    assert (
        att.W_key.weight.untyped_storage().data_ptr() == fused.weight.untyped_storage().data_ptr()
    )
    assert (
        att.W_key.scales.untyped_storage().data_ptr() == fused.scales.untyped_storage().data_ptr()
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.inference_mode():
        assert fused.usable((att.W_query, att.W_key, att.W_value))
        tol = 1e-5 if dtype == torch.float32 else 0.05
        torch.testing.assert_close(model(PROMPT).float(), logits, atol=tol, rtol=0)
    assert torch.equal(generate(model, PROMPT, 12), expected)


@pytest.mark.parametrize("pack", [False, True])
def test_weights_changed_in_place_are_used(pack):
    if pack and not can_pack():
        pytest.skip("this PyTorch has no oneDNN packed linear kernels")
    model = optimize_for_decoding(tiny("qwen3-tiny").to(torch.bfloat16), pack=pack)
    fresh = tiny("qwen3-tiny", seed=1).to(torch.bfloat16)
    model.load_state_dict(fresh.state_dict())  # copies into the existing (view) parameters
    with torch.inference_mode():
        torch.testing.assert_close(model(PROMPT), fresh(PROMPT), atol=0.1, rtol=0)
    optimize_for_decoding(model, pack=pack)  # prepared again: the fast paths are used again
    with torch.inference_mode():
        assert model.trf_blocks[0].ff.fast_gate_up.usable(
            (model.trf_blocks[0].ff.fc1, model.trf_blocks[0].ff.fc2)
        )
        torch.testing.assert_close(model(PROMPT), fresh(PROMPT), atol=0.1, rtol=0)


def test_replaced_layers_fall_back_to_separate_matmuls():
    model = optimize_for_decoding(tiny("llama3-tiny"))
    reference = tiny("llama3-tiny")
    # A dtype change replaces every parameter: the old fused tensors no longer match.
    model.to(torch.float64)
    reference.to(torch.float64)
    att = model.trf_blocks[0].att
    with torch.inference_mode():
        assert not att.fast_qkv.usable((att.W_query, att.W_key, att.W_value))
        torch.testing.assert_close(model(PROMPT), reference(PROMPT))
    # LoRA wraps the layers; its update must count, before and after merging.
    for m in (model, reference):
        torch.manual_seed(5)
        apply_lora(m, rank=2, alpha=4.0, freeze=False)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("lora.B"):
                    p.normal_(0, 0.5)
    with torch.inference_mode():
        torch.testing.assert_close(model(PROMPT), reference(PROMPT))
    merge_lora(model)
    merge_lora(reference)
    optimize_for_decoding(model)
    with torch.inference_mode():
        torch.testing.assert_close(model(PROMPT), reference(PROMPT))


def test_training_after_fusing_uses_the_parameters():
    model = optimize_for_decoding(tiny("qwen3-tiny")).train()
    loss = model(PROMPT).logsumexp(-1).mean()
    loss.backward()
    att = model.trf_blocks[0].att
    for p in (att.W_query.weight, att.W_key.weight, model.trf_blocks[1].ff.fc2.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_copies_and_pickles_of_a_prepared_model_work_and_leave_the_fast_paths_out(tmp_path):
    model = tiny("qwen3-tiny").to(torch.bfloat16)
    optimize_for_decoding(model, pack=can_pack())
    with torch.inference_mode():
        expected = model(PROMPT)
    twin = copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for other in (twin, loaded):
        assert other.trf_blocks[0].att.fast_qkv is None and other.fast_head is None
        with torch.inference_mode():
            torch.testing.assert_close(other(PROMPT), expected, atol=0.1, rtol=0)
        optimize_for_decoding(other)
        with torch.inference_mode():
            torch.testing.assert_close(other(PROMPT), expected, atol=0.1, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
def test_a_bf16_model_attends_in_fp32_over_an_fp32_cache_on_a_cpu(preset):
    """PyTorch's CPU attention is about 3x slower in bf16: a bf16 model's KV cache is fp32 there,
    and cached decoding still gives the logits of the uncached forward pass (to bf16 rounding),
    padding included."""
    torch.manual_seed(0)
    extra = {"qkv_bias": True} if preset == "tiny" else {}
    cfg = GPTConfig.from_preset(preset, vocab_size=60, drop_rate=0.0, context_length=256, **extra)
    model = build_model(cfg).eval().to(torch.bfloat16)
    n = 150
    ids = torch.randint(0, 60, (2, n))
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, :7] = 0  # the second row is left-padded
    cache = KVCache.for_model(model, batch_size=2)
    assert cache.dtype == torch.float32
    with torch.inference_mode():
        model(ids[:, :-1], attention_mask=mask[:, :-1], kv_cache=cache)
        step = model(ids[:, -1:], attention_mask=mask, kv_cache=cache)
        whole = model(ids, attention_mask=mask)[:, -1:]
    assert step.dtype == torch.bfloat16
    torch.testing.assert_close(step.float(), whole.float(), atol=0.05, rtol=0.02)
