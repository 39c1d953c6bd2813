"""GPT-2 weight interop: parity with transformers' GPT2LMHeadModel, export, round trips, the
OpenAI TensorFlow names, and errors for unsupported folders.

transformers takes seconds to import, so every test that needs it lives in this one file.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.errors import CheckpointError  # noqa: E402
from scratchgpt.generation import generate  # noqa: E402
from scratchgpt.model import GPTModel  # noqa: E402
from scratchgpt.weights import (  # noqa: E402  # noqa: E402
    gpt2_from_openai_params,
    hf_plan,
    load_checkpoint,
    load_hf_gpt2,
    load_openai_tf_gpt2,
    openai_to_hf_name,
    save_checkpoint,
    save_hf_gpt2,
)

transformers.logging.set_verbosity_error()

# Odd head counts, 2-4 layers, untied heads, the other tanh-GELU spelling, another epsilon,
# and GPT-2's real 50,257-token vocabulary with tiny dimensions.
SHAPES = {
    "3heads-tied": dict(vocab_size=101, n_positions=64, n_embd=24, n_layer=2, n_head=3),
    "5heads-untied": dict(
        vocab_size=97, n_positions=72, n_embd=40, n_layer=3, n_head=5, tie_word_embeddings=False,
        activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-6,
    ),
    "gpt2-vocab": dict(vocab_size=50257, n_positions=64, n_embd=16, n_layer=4, n_head=2),
}  # fmt: skip


def random_hf(seed: int = 0, **kwargs) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**kwargs)).eval()
    # HF's init zeroes biases and sets norms to 1; random values make every mapping visible.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module", params=list(SHAPES))
def hf_folder(request, tmp_path_factory):
    """(HF model, its save_pretrained folder)."""
    hf = random_hf(**SHAPES[request.param])
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, folder


def prompt(vocab: int, batch: int = 2, length: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)


def hf_logits(hf: GPT2LMHeadModel, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(idx, attention_mask=torch.ones_like(idx)).logits


def our_logits(model: GPTModel, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


def test_logits_match_transformers(hf_folder):
    hf, folder = hf_folder
    model = load_hf_gpt2(folder)
    cfg = hf.config
    assert model.cfg.context_length == cfg.n_positions and model.cfg.n_heads == cfg.n_head
    assert model.cfg.tie_weights == cfg.tie_word_embeddings and model.cfg.qkv_bias
    assert model.cfg.ln_eps == cfg.layer_norm_epsilon
    assert not model.training
    idx = prompt(cfg.vocab_size, length=cfg.n_positions)  # the full context
    diff = (hf_logits(hf, idx) - our_logits(model, idx)).abs().max().item()
    assert diff < 1e-4


def test_loaded_model_is_materialised(hf_folder):
    _, folder = hf_folder
    model = load_hf_gpt2(folder / "model.safetensors")  # the file, config.json beside it
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.is_contiguous() for p in model.parameters())
    c = model.cfg.context_length
    expected = torch.triu(torch.ones(c, c, dtype=torch.bool), diagonal=1)
    assert all(torch.equal(b.att.mask, expected) for b in model.trf_blocks)
    if model.cfg.tie_weights:
        assert model.out_head.weight is model.tok_emb.weight


def test_greedy_generation_matches_transformers(hf_folder):
    hf, folder = hf_folder
    model = load_hf_gpt2(folder)
    idx = prompt(hf.config.vocab_size, batch=2, length=5, seed=3)
    with torch.no_grad():
        expected = hf.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            max_new_tokens=50,
            min_new_tokens=50,
            do_sample=False,
            pad_token_id=0,
        )
    assert expected.shape == (2, 55)
    for use_cache in (True, False):
        ours = generate(model, idx, 50, use_cache=use_cache)
        assert torch.equal(ours, expected), f"use_cache={use_cache}"


def test_export_loads_in_transformers(hf_folder, tmp_path):
    hf, folder = hf_folder
    model = load_hf_gpt2(folder)
    out = save_hf_gpt2(model, tmp_path / "export")
    back, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    idx = prompt(hf.config.vocab_size, length=20)
    assert (hf_logits(back.eval(), idx) - our_logits(model, idx)).abs().max().item() < 1e-4
    # ours -> HF -> ours: every tensor bit for bit.
    again = load_hf_gpt2(out)
    assert again.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.parametrize("tied", [False, True])
def test_book_style_model_round_trips_through_hf(tmp_path, tied):
    """qkv_bias False (the book's setting) and an untied head survive ours -> HF -> ours."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=32, emb_dim=30, n_heads=5, n_layers=2,
                    drop_rate=0.0, qkv_bias=False, tie_weights=tied)  # fmt: skip
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    out = save_hf_gpt2(model, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied
    assert ("lm_head.weight" in load_file(out / "model.safetensors")) is not tied
    hf, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    idx = prompt(50, length=32)
    assert (hf_logits(hf.eval(), idx) - our_logits(model, idx)).abs().max().item() < 1e-4
    back = load_hf_gpt2(out)
    ours = model.state_dict()
    for k, v in back.state_dict().items():
        if k in ours:
            assert torch.equal(v, ours[k]), k
        else:  # the zero q/k/v biases the export added
            assert k.endswith(("W_query.bias", "W_key.bias", "W_value.bias")) and not v.any()
    assert torch.equal(our_logits(back, idx), our_logits(model, idx))


def test_export_refuses_overwrite(tmp_path):
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=20)).eval()
    save_hf_gpt2(model, tmp_path / "hf")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_hf_gpt2(model, tmp_path / "hf")
    save_hf_gpt2(model, tmp_path / "hf", overwrite=True)


def test_keys_without_transformer_prefix_and_old_buffers(tmp_path):
    """The hub's own gpt2 model.safetensors has no "transformer." prefix and holds attn.bias."""
    hf = random_hf(**SHAPES["3heads-tied"])
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    bare = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(hf.config.n_layer):
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        bare[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "model.safetensors").unlink()
    save_file(bare, tmp_path / "model.safetensors")
    model = load_hf_gpt2(tmp_path)
    idx = prompt(101)
    assert (hf_logits(hf, idx) - our_logits(model, idx)).abs().max().item() < 1e-4


def test_sharded_folder(tmp_path):
    hf = random_hf(**SHAPES["5heads-untied"])
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = load_hf_gpt2(tmp_path)
    idx = prompt(97)
    assert (hf_logits(hf, idx) - our_logits(model, idx)).abs().max().item() < 1e-4


def test_load_checkpoint_reads_hf_folders(hf_folder):
    hf, folder = hf_folder
    if hf.config.vocab_size < 50257:
        # The bundled GPT-2 tokenizer has more ids than this model has embeddings.
        with pytest.raises(CheckpointError, match=rf"vocab_size \({hf.config.vocab_size}\).*50257"):
            load_checkpoint(folder)
        return
    loaded = load_checkpoint(folder, dtype=torch.bfloat16)
    assert loaded.format == "hf-gpt2" and loaded.tokenizer.vocab_size == 50257
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    idx = prompt(50257)
    ref = load_hf_gpt2(folder)
    assert torch.equal(loaded.model.tok_emb.weight, ref.tok_emb.weight.bfloat16())
    # Then into our own checkpoint format and back, exactly.
    save_checkpoint(folder.parent / "ours", ref, loaded.tokenizer)
    mine = load_checkpoint(folder.parent / "ours")
    assert torch.equal(our_logits(mine.model, idx), our_logits(ref, idx))


def test_loaded_tensors_own_their_memory(hf_folder):
    _, folder = hf_folder
    a = load_hf_gpt2(folder)
    with torch.no_grad():
        a.pos_emb.weight.zero_()  # our tensors own their memory: the file is unchanged
    b = load_hf_gpt2(folder)
    assert b.pos_emb.weight.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# OpenAI's TensorFlow names
# --------------------------------------------------------------------------------------------


def openai_params_from_hf(hf: GPT2LMHeadModel) -> tuple[dict, dict]:
    """The variables OpenAI's checkpoint holds for the same weights (Conv1D: a leading 1 axis)."""
    sd = {k.removeprefix("transformer."): v.numpy() for k, v in hf.state_dict().items()}
    params = {"model/wte": sd["wte.weight"], "model/wpe": sd["wpe.weight"],
              "model/ln_f/g": sd["ln_f.weight"], "model/ln_f/b": sd["ln_f.bias"]}  # fmt: skip
    for i in range(hf.config.n_layer):
        for ours, theirs in [("attn/c_attn", "attn.c_attn"), ("attn/c_proj", "attn.c_proj"),
                             ("mlp/c_fc", "mlp.c_fc"), ("mlp/c_proj", "mlp.c_proj")]:  # fmt: skip
            params[f"model/h{i}/{ours}/w"] = sd[f"h.{i}.{theirs}.weight"][None]
            params[f"model/h{i}/{ours}/b"] = sd[f"h.{i}.{theirs}.bias"]
        for ln in ("ln_1", "ln_2"):
            params[f"model/h{i}/{ln}/g"] = sd[f"h.{i}.{ln}.weight"]
            params[f"model/h{i}/{ln}/b"] = sd[f"h.{i}.{ln}.bias"]
    c = hf.config
    hparams = {"n_vocab": c.vocab_size, "n_ctx": c.n_positions, "n_embd": c.n_embd,
               "n_head": c.n_head, "n_layer": c.n_layer}  # fmt: skip
    return params, hparams


def test_openai_names_map_to_hf():
    assert openai_to_hf_name("model/h11/attn/c_attn/w") == "h.11.attn.c_attn.weight"
    assert openai_to_hf_name("model/h0/ln_2/g") == "h.0.ln_2.weight"
    assert openai_to_hf_name("model/wpe") == "wpe.weight"
    assert openai_to_hf_name("model/h0/attn/unknown") is None


def test_openai_params_match_transformers():
    hf = random_hf(**SHAPES["3heads-tied"])
    params, hparams = openai_params_from_hf(hf)
    model = gpt2_from_openai_params(params, hparams)
    idx = prompt(101)
    assert (hf_logits(hf, idx) - our_logits(model, idx)).abs().max().item() < 1e-4
    assert model.cfg.tie_weights and model.cfg.qkv_bias
    # The numpy arrays stay the caller's: our parameters do not alias them.
    with torch.no_grad():
        model.pos_emb.weight.zero_()
    assert abs(params["model/wpe"]).sum() > 0


def test_openai_params_errors():
    hf = random_hf(**SHAPES["3heads-tied"])
    params, hparams = openai_params_from_hf(hf)
    bad = {k: v for k, v in params.items() if k != "model/h1/mlp/c_fc/b"}
    with pytest.raises(CheckpointError, match=r"OpenAI checkpoint.*missing: model/h1/mlp/c_fc/b"):
        gpt2_from_openai_params(bad, hparams)
    with pytest.raises(CheckpointError, match=r"model/wte has shape \(101, 24\).*\(101, 30\)"):
        gpt2_from_openai_params(params, {**hparams, "n_embd": 30})
    cut = {**params, "model/h0/attn/c_attn/w": params["model/h0/attn/c_attn/w"][:, :, :70]}
    with pytest.raises(
        CheckpointError, match=r"model/h0/attn/c_attn/w has shape \(24, 70\).*\(24, 72\)"
    ):
        gpt2_from_openai_params(cut, hparams)
    with pytest.raises(CheckpointError, match=r"hparams\.json: missing 'n_layer'"):
        gpt2_from_openai_params(params, {k: v for k, v in hparams.items() if k != "n_layer"})


def test_tf_checkpoint_without_tensorflow(tmp_path, monkeypatch):
    (tmp_path / "hparams.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails, installed or not
    with pytest.raises(CheckpointError, match=r"pip install 'scratchgpt\[tf\]'"):
        load_openai_tf_gpt2(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing hparams\.json"):
        load_openai_tf_gpt2(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# Unsupported or broken HF folders
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_hf(tmp_path):
    random_hf(**SHAPES["3heads-tied"]).save_pretrained(tmp_path)
    return tmp_path


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def test_unsupported_activation(small_hf):
    edit_config(small_hf, activation_function="relu")
    with pytest.raises(CheckpointError, match="activation_function 'relu' is not supported"):
        load_hf_gpt2(small_hf)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n_inner=50), "n_inner 50 is not supported"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(add_cross_attention=True), "add_cross_attention"),
        (dict(model_type="gpt_neo"), "model_type is 'gpt_neo'"),
    ],
)
def test_unsupported_options(small_hf, change, message):
    edit_config(small_hf, **change)
    with pytest.raises(CheckpointError, match=message):
        load_hf_gpt2(small_hf)


def test_hf_shape_and_key_errors(small_hf):
    edit_config(small_hf, n_positions=128)
    with pytest.raises(
        CheckpointError, match=r"context_length 128.*transformer\.wpe\.weight has 64"
    ):
        load_hf_gpt2(small_hf)
    edit_config(small_hf, n_positions=64, tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match=r"missing: lm_head\.weight"):
        load_hf_gpt2(small_hf)
    edit_config(small_hf, tie_word_embeddings=True, n_layer=1)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): transformer\.h\.1\."):
        load_hf_gpt2(small_hf)
    edit_config(small_hf, n_layer=2, n_embd=30, n_head=3)
    with pytest.raises(
        CheckpointError, match=r"transformer\.wte\.weight has shape \(101, 24\).*\(101, 30\)"
    ):
        load_hf_gpt2(small_hf)


def test_hf_truncated_weights(small_hf):
    path = small_hf / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_hf_gpt2(small_hf)


def test_plan_covers_every_parameter():
    for tied in (True, False):
        cfg = GPTConfig.from_preset("tiny", qkv_bias=True, tie_weights=tied)
        sd = GPTModel(cfg).state_dict()
        targets = {m.target for m in hf_plan(cfg)}
        assert targets == set(sd) - ({"out_head.weight"} if tied else set())
