"""GGUF export of Llama 3.x and Qwen3: read back with gguf's reader; the logits of a forward pass
computed from the file's tensors alone the way llama.cpp's "llama" graph (RoPE on interleaved
pairs, divided by rope_freqs) and "qwen3" graph (RoPE on half-split pairs, q/k RMSNorm) do,
against our model's; tokenizer and chat template against tokenizer.json; the Modelfile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_fixtures import MODEL_VOCAB_SIZE, write_llama3_tokenizer, write_qwen3_tokenizer
from scratchgpt.config import GPTConfig
from scratchgpt.model import build_model
from scratchgpt.tokenizers.hf import HFTokenizer
from scratchgpt.weights.gguf import save_gguf
from scratchgpt.weights.modelfile import modelfile_text

gguf = pytest.importorskip("gguf")

FAMILIES = {
    "llama3": ("llama3-tiny", write_llama3_tokenizer, "llama", "llama-bpe"),
    "qwen3": ("qwen3-tiny", write_qwen3_tokenizer, "qwen3", "qwen2"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory):
    preset, write_tokenizer, _, _ = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    write_tokenizer(root / "tok")
    tok = HFTokenizer.from_folder(root / "tok")
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset(preset, vocab_size=MODEL_VOCAB_SIZE)).eval()
    readers = {
        t: gguf.GGUFReader(save_gguf(model, tok, root / f"m-{t}.gguf", type=t))
        for t in ("f32", "q8_0")
    }
    return request.param, model, tok, readers, root


def _field(reader, key):
    return reader.fields[key].contents()


def _values(reader) -> dict[str, np.ndarray]:
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(data, np.float64).reshape([int(n) for n in t.shape[::-1]])
    return out


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x, base, factors, neox):
    """x: (heads, n, d). llama.cpp's RoPE: NORM rotates pairs (2i, 2i+1), NEOX (i, i + d/2)."""
    n, d = x.shape[1], x.shape[2]
    theta = base ** (-np.arange(0, d, 2) / d) / factors
    ang = np.arange(n)[:, None] * theta[None]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = (x[..., : d // 2], x[..., d // 2 :]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return np.concatenate([ra, rb], -1) if neox else np.stack([ra, rb], -1).reshape(x.shape)


def _forward(t, ids, r, neox):
    arch = _field(r, "general.architecture")
    k = lambda name: _field(r, f"{arch}.{name}")  # noqa: E731
    nh, nkv, hd = k("attention.head_count"), k("attention.head_count_kv"), k("rope.dimension_count")
    eps, base = k("attention.layer_norm_rms_epsilon"), k("rope.freq_base")
    factors = t.get("rope_freqs.weight", np.ones(hd // 2))
    x, n = t["token_embd.weight"][ids], len(ids)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(k("block_count")):
        p = f"blk.{i}."
        h = _rms(x, t[p + "attn_norm.weight"], eps)
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, nh, hd).transpose(1, 0, 2)
        kk = (h @ t[p + "attn_k.weight"].T).reshape(n, nkv, hd).transpose(1, 0, 2)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, nkv, hd).transpose(1, 0, 2)
        if p + "attn_q_norm.weight" in t:
            q, kk = (
                _rms(q, t[p + "attn_q_norm.weight"], eps),
                _rms(kk, t[p + "attn_k_norm.weight"], eps),
            )
        q, kk = _rope(q, base, factors, neox), _rope(kk, base, factors, neox)
        kk, v = np.repeat(kk, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        s = q @ kk.transpose(0, 2, 1) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + (a @ v).transpose(1, 0, 2).reshape(n, nh * hd) @ t[p + "attn_output.weight"].T
        h = _rms(x, t[p + "ffn_norm.weight"], eps)
        g = h @ t[p + "ffn_gate.weight"].T
        x = (
            x
            + ((g / (1 + np.exp(-g))) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
        )
    x = _rms(x, t["output_norm.weight"], eps)
    return x @ t.get("output.weight", t["token_embd.weight"]).T


def test_forward_from_file_matches_model(exported):
    family, model, tok, readers, _ = exported
    r = readers["f32"]
    assert _field(r, "general.architecture") == FAMILIES[family][2]
    ids = tok.encode("The quick brown fox jumps over the lazy dog, again and again.")
    assert len(ids) > 8
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].double().numpy()
    got = _forward(_values(r), ids, r, neox=family == "qwen3")
    np.testing.assert_allclose(got, ours, atol=1e-4)
    if family == "llama3":
        assert "rope_freqs.weight" in {t.name for t in r.tensors}


def test_q8_0_types_and_values(exported):
    _, _, _, readers, _ = exported
    ref, got = _values(readers["f32"]), _values(readers["q8_0"])
    kinds = {t.name: t.tensor_type.name for t in readers["q8_0"].tensors}
    assert sorted(got) == sorted(ref)
    for name, want in ref.items():
        assert kinds[name] == ("F32" if want.ndim == 1 else "Q8_0"), name
        bound = np.abs(want).max() / 127 * 0.6 + 1e-12
        assert np.abs(got[name] - want).max() <= bound, name


def test_tokenizer_inside(exported):
    family, model, tok, readers, root = exported
    r = readers["q8_0"]
    data = json.loads((root / "tok" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = {**data["model"]["vocab"], **{a["content"]: a["id"] for a in data["added_tokens"]}}
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == model.cfg.vocab_size
    assert all(tokens[i] == s for s, i in vocab.items())
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    assert _field(r, "tokenizer.ggml.merges") == merges
    types = _field(r, "tokenizer.ggml.token_type")
    assert {types[a["id"]] for a in data["added_tokens"] if a["special"]} == {3}
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == FAMILIES[family][3]
    assert _field(r, "tokenizer.chat_template") == tok.chat_template
    assert _field(r, "tokenizer.ggml.eos_token_id") == tok.stop_ids[0]
    assert _field(r, "tokenizer.ggml.add_bos_token") is bool(tok.bos_ids)
    if tok.bos_ids:
        assert _field(r, "tokenizer.ggml.bos_token_id") == tok.bos_ids[0]


def test_modelfile_uses_the_family_chat_format(exported):
    family, _, tok, _, _ = exported
    text = modelfile_text("m.gguf", tok, {}, family)
    end = {"llama3": "<|eot_id|>", "qwen3": "<|im_end|>"}[family]
    assert f'PARAMETER stop "{end}"' in text.splitlines()
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    # Rendered with a user message and no system message, it is the tokenizer's own chat
    # template's rendering of that message with the generation prompt.
    rendered = template.replace("{{ .Response }}" + end, "")
    rendered = rendered.split("{{ end }}", 1)[1].replace("{{ if .Prompt }}", "")
    rendered = rendered.replace("{{ end }}", "").replace("{{ .Prompt }}", "Hi there")
    want = tok.render_chat([{"role": "user", "content": "Hi there"}], add_generation_prompt=True)
    assert want.endswith(rendered)


def test_cli_export_hf_folder(exported, tmp_path):
    from scratchgpt.cli import main
    from scratchgpt.weights.hf import save_hf_model

    family, model, tok, readers, _ = exported
    folder = save_hf_model(model, tmp_path / "hf", tokenizer=tok)
    out = tmp_path / "out" / "model.gguf"
    argv = ["export", "--format", "gguf", "--checkpoint", str(folder), "--out", str(out)]
    assert main([*argv, "--type", "f32"]) == 0
    r = gguf.GGUFReader(out)
    want = _values(readers["f32"])
    got = _values(r)
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    text = (out.parent / "Modelfile").read_text()
    assert text == modelfile_text("model.gguf", tok, {}, family)
    assert "{{ .Prompt }}" in text and text.startswith("FROM ./model.gguf\n")
