"""GGUF export: read the file back with the gguf package's own reader and check it against
llama.cpp's naming (gguf's TensorNameMap applied to our Hugging Face export, the way
llama.cpp's converter does it), our weights, our tokenizer files, and a forward pass computed
from the file's tensors alone."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig, LoRAConfig
from scratchgpt.data.instructions import PROMPT_STYLES
from scratchgpt.errors import CheckpointError, ConfigError, OutputExistsError
from scratchgpt.model import GPTModel, build_model
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import save_checkpoint
from scratchgpt.weights.gguf import save_gguf
from scratchgpt.weights.hf import hf_state_dict
from scratchgpt.weights.modelfile import modelfile_text

gguf = pytest.importorskip("gguf")

TYPES = ("f32", "f16", "bf16", "q8_0")
ASSETS = Path(__file__).resolve().parents[1] / "src" / "scratchgpt" / "assets" / "gpt2"


def _model(**kw) -> GPTModel:
    torch.manual_seed(0)
    cfg = dict(context_length=16, emb_dim=32, n_layers=2, n_heads=4, drop_rate=0.0)
    cfg.update(kw)
    cfg.setdefault("qkv_bias", True)
    return GPTModel(GPTConfig(vocab_size=50257, **cfg)).eval()


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, model, tok):
    root = tmp_path_factory.mktemp("gguf")
    return {t: gguf.GGUFReader(save_gguf(model, tok, root / f"m-{t}.gguf", type=t)) for t in TYPES}


def _field(reader, key):
    return reader.fields[key].contents()


def _values(reader) -> dict[str, np.ndarray]:
    """Every tensor as float32 in numpy (out, in) layout, dequantized by gguf itself."""
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(data, np.float32).reshape([int(n) for n in t.shape[::-1]])
    return out


def _llama_cpp_reference(model) -> dict[str, np.ndarray]:
    """What llama.cpp's convert_hf_to_gguf.py makes of our Hugging Face GPT-2 export: its
    name map, Conv1D weights transposed, the attention masks dropped."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, model.cfg.n_layers)
    out = {}
    for name, t in hf_state_dict(model).items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        arr = t.float().numpy()
        if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            arr = arr.T
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        out[new] = arr
    return out


def test_metadata(exports, model):
    r = exports["f16"]
    cfg = model.cfg
    assert _field(r, "general.architecture") == "gpt2"
    assert _field(r, "gpt2.context_length") == cfg.context_length
    assert _field(r, "gpt2.embedding_length") == cfg.emb_dim
    assert _field(r, "gpt2.feed_forward_length") == 4 * cfg.emb_dim
    assert _field(r, "gpt2.block_count") == cfg.n_layers
    assert _field(r, "gpt2.attention.head_count") == cfg.n_heads
    assert _field(r, "gpt2.attention.layer_norm_epsilon") == pytest.approx(cfg.ln_eps)
    ftypes = {t: _field(exports[t], "general.file_type") for t in TYPES}
    assert ftypes == {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}


@pytest.mark.parametrize("type_", TYPES)
def test_tensors_match_ours(exports, model, type_):
    ref = _llama_cpp_reference(model)
    got = _values(exports[type_])
    assert sorted(got) == sorted(ref)
    kinds = {t.name: t.tensor_type.name for t in exports[type_].tensors}
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape, name
        if want.ndim == 1 or name == "position_embd.weight" or type_ == "f32":
            assert kinds[name] == "F32", name
            np.testing.assert_array_equal(have, want, err_msg=name)
        elif type_ == "f16":
            np.testing.assert_array_equal(have, want.astype(np.float16).astype(np.float32))
        elif type_ == "bf16":
            np.testing.assert_allclose(have, want, rtol=2**-8, atol=0, err_msg=name)
        else:  # q8_0: blocks of 32 along a row, scale = max|x| / 127 (stored as fp16)
            assert kinds[name] == "Q8_0"
            blocks = want.reshape(-1, 32)
            bound = np.abs(blocks).max(axis=1, keepdims=True) / 127 * 0.6 + 1e-12
            assert (np.abs(have.reshape(-1, 32) - blocks) <= bound).all(), name


def _forward(t: dict[str, np.ndarray], ids: list[int], n_heads: int, eps: float) -> np.ndarray:
    """GPT-2 from the GGUF tensors alone, the way llama.cpp's gpt2 graph computes it."""

    def norm(x, w, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    x = t["token_embd.weight"][ids] + t["position_embd.weight"][: len(ids)]
    n, e = len(ids), x.shape[1]
    d = e // n_heads
    mask = np.triu(np.full((n, n), -np.inf), 1)
    i = 0
    while f"blk.{i}.attn_qkv.weight" in t:
        p = f"blk.{i}."
        h = norm(x, t[p + "attn_norm.weight"], t[p + "attn_norm.bias"])
        qkv = h @ t[p + "attn_qkv.weight"].T + t[p + "attn_qkv.bias"]
        q, k, v = (
            qkv[:, j * e : (j + 1) * e].reshape(n, n_heads, d).transpose(1, 0, 2) for j in range(3)
        )
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        att = (a @ v).transpose(1, 0, 2).reshape(n, e)
        x = x + att @ t[p + "attn_output.weight"].T + t[p + "attn_output.bias"]
        h = norm(x, t[p + "ffn_norm.weight"], t[p + "ffn_norm.bias"])
        h = gelu(h @ t[p + "ffn_up.weight"].T + t[p + "ffn_up.bias"])
        x = x + h @ t[p + "ffn_down.weight"].T + t[p + "ffn_down.bias"]
        i += 1
    x = norm(x, t["output_norm.weight"], t["output_norm.bias"])
    return x @ t.get("output.weight", t["token_embd.weight"]).T


def _check_forward(reader, m, tok) -> None:
    t = {k: v.astype(np.float64) for k, v in _values(reader).items()}
    assert ("output.weight" in t) is not m.cfg.tie_weights
    ids = tok.encode("Every effort moves you")
    with torch.no_grad():
        ours = m(torch.tensor([ids]))[0].double().numpy()
    np.testing.assert_allclose(_forward(t, ids, m.cfg.n_heads, m.cfg.ln_eps), ours, atol=1e-4)


def test_forward_from_file_matches_model(exports, model, tok):
    _check_forward(exports["f32"], model, tok)


def test_forward_from_file_tied_head(tmp_path, tok):
    m = _model(tie_weights=True, qkv_bias=False)
    _check_forward(gguf.GGUFReader(save_gguf(m, tok, tmp_path / "m.gguf", type="f32")), m, tok)


def test_tokenizer_inside(exports, tok):
    r = exports["q8_0"]
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == "gpt-2"
    import json

    encoder = json.loads((ASSETS / "encoder.json").read_text(encoding="utf-8"))
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert tokens == sorted(encoder, key=encoder.__getitem__)
    merges = (ASSETS / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    assert _field(r, "tokenizer.ggml.merges") == [m for m in merges if m]
    types = _field(r, "tokenizer.ggml.token_type")
    assert types[50256] == 3 and set(types[:50256]) == {1}
    assert _field(r, "tokenizer.ggml.bos_token_id") == 50256
    assert _field(r, "tokenizer.ggml.eos_token_id") == 50256
    assert _field(r, "tokenizer.ggml.add_bos_token") is False


def test_refusals(tmp_path, model, tok):
    out = tmp_path / "m.gguf"
    save_gguf(model, tok, out, type="f32")
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match=r"m\.gguf"):
        save_gguf(model, tok, out)
    assert out.read_bytes() == before
    save_gguf(model, tok, out, type="q8_0", overwrite=True)
    assert out.read_bytes() != before
    with pytest.raises(CheckpointError, match="classifier"):
        save_gguf(_model(num_classes=2), tok, tmp_path / "c.gguf")
    with pytest.raises(CheckpointError, match="LoRA"):
        save_gguf(_model(lora=LoRAConfig(rank=2)), tok, tmp_path / "l.gguf")
    with pytest.raises(ConfigError, match="q4"):
        save_gguf(model, tok, tmp_path / "x.gguf", type="q4")
    for preset, what in (("gemma3-tiny", "'gemma3'"), ("qwen3-moe-tiny", "mixture-of-experts")):
        other = build_model(GPTConfig.from_preset(preset, vocab_size=64))
        with pytest.raises(ConfigError, match=f"not (a )?{what}.*convert_hf_to_gguf"):
            save_gguf(other, tok, tmp_path / "x.gguf")
    chars = get_tokenizer("char", corpus="abc")
    with pytest.raises(ConfigError, match="a Hugging Face tokenizer"):
        save_gguf(_model(), chars, tmp_path / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def _render(template: str, prompt: str) -> str:
    """Ollama's Go template, for the two constructs we write, with no system message."""
    template = template.replace("{{ if .System }}{{ .System }}{{ else }}", "")
    return template.replace("{{ end }}", "").replace("{{ .Prompt }}", prompt)


@pytest.mark.parametrize("style", sorted(PROMPT_STYLES))
def test_modelfile_renders_the_prompt_style(tok, style):
    text = modelfile_text("m.gguf", tok, {"prompt_style": style})
    lines = text.splitlines()
    assert lines[0] == "FROM ./m.gguf"
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    st = PROMPT_STYLES[style]
    assert _render(template, "Name a colour.") == st.prompt({"instruction": "Name a colour."})
    assert f'PARAMETER stop "{st.turn_start}"' in lines
    assert 'PARAMETER stop "<|endoftext|>"' in lines


def test_modelfile_base_model(tok):
    text = modelfile_text("m.gguf", tok, {})
    assert text == 'FROM ./m.gguf\nTEMPLATE "{{ .Prompt }}"\nPARAMETER stop "<|endoftext|>"\n'


def test_cli_export_gguf(tmp_path, capsys, model, tok):
    save_checkpoint(tmp_path / "ck", model, tok, metadata={"prompt_style": "alpaca"})
    out = tmp_path / "o" / "model.gguf"
    argv = ["export", "--checkpoint", str(tmp_path / "ck"), "--out", str(out), "--format", "gguf"]
    assert main([*argv, "--type", "q8_0"]) == 0
    r = gguf.GGUFReader(out)
    assert _field(r, "general.file_type") == 7
    modelfile = (out.parent / "Modelfile").read_text()
    assert modelfile == modelfile_text("model.gguf", tok, {"prompt_style": "alpaca"})
    assert "### Response:" in modelfile
    capsys.readouterr()
    assert main(argv) == 2  # exists
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    # f16 by default. Read from the header by hand (the reader parses the whole vocabulary):
    # the key, then its value type (4: uint32) and value.
    header, key = out.read_bytes()[:4096], b"general.file_type"
    assert struct.unpack_from("<II", header, header.index(key) + len(key)) == (4, 1)
