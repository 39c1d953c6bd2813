"""Checkpoint folders: exact round trips, atomic writes, and a clear error for every bad input."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import load_book_state_dict, load_checkpoint, save_checkpoint

TINY = dict(vocab_size=40, context_length=16, emb_dim=24, n_heads=3, n_layers=2, drop_rate=0.0)


def make_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(GPTConfig(**{**TINY, **overrides})).eval()
    # Default init leaves norms at 1/0; randomise everything so a swapped tensor cannot pass.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def assert_same_weights(a: GPTModel, b: GPTModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def char_tokenizer(n_chars: int = 30):
    return get_tokenizer(
        "char", chars=[chr(ord("a") + i) if i < 26 else str(i - 26) for i in range(n_chars)]
    )


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_exact(tmp_path, tied):
    model = make_model(tie_weights=tied, qkv_bias=tied)
    tok = char_tokenizer()
    meta = {"task": "pretrain", "labels": ["a", "b"], "step": 3}
    out = save_checkpoint(tmp_path / "ck", model, tok, metadata=meta)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "scratchgpt.json", "tokenizer.json"
    ]  # fmt: skip
    # config.json is GPTConfig's own file; the head of a tied model is not stored twice.
    assert GPTConfig.load(out / "config.json") == model.cfg
    assert ("out_head.weight" in load_file(out / "model.safetensors")) is not tied
    manifest = json.loads((out / "scratchgpt.json").read_text())
    assert manifest["format"] == "scratchgpt-checkpoint" and manifest["format_version"] == 1

    loaded = load_checkpoint(out)
    assert loaded.config == model.cfg
    assert loaded.metadata == meta
    assert loaded.format == "scratchgpt"
    assert loaded.tokenizer.encode("abc") == tok.encode("abc")
    assert not loaded.model.training
    assert_same_weights(model, loaded.model)
    if tied:
        assert loaded.model.out_head.weight is loaded.model.tok_emb.weight
    idx = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        assert torch.equal(model(idx), loaded.model(idx))


def test_load_is_memory_mapped_and_complete(tmp_path):
    model = make_model()
    save_checkpoint(tmp_path / "ck", model)
    loaded = load_checkpoint(tmp_path / "ck").model
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors)
    # The parameters are the file's pages (copy-on-write map), not a second copy in memory.
    weights = str((tmp_path / "ck" / "model.safetensors").resolve())
    if sys.platform == "linux":
        maps = Path("/proc/self/maps").read_text().splitlines()
        ranges = [
            tuple(int(x, 16) for x in line.split()[0].split("-"))
            for line in maps
            if line.endswith(weights)
        ]
        ptr = loaded.trf_blocks[1].ff.layers[0].weight.data_ptr()
        assert any(lo <= ptr < hi for lo, hi in ranges)
    # The causal masks (not in the file) are rebuilt, real and correct.
    mask = loaded.trf_blocks[0].att.mask
    assert mask.device.type == "cpu" and mask.dtype == torch.bool
    assert torch.equal(mask, torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1))
    # Copy-on-write: training the loaded model leaves the file as it was.
    with torch.no_grad():
        loaded.tok_emb.weight.add_(1.0)
    assert torch.equal(load_file(weights)["tok_emb.weight"], model.tok_emb.weight)


def test_dtype_cast_and_resave(tmp_path):
    model = make_model(tie_weights=True)
    save_checkpoint(tmp_path / "a", model)
    half = load_checkpoint(tmp_path / "a", dtype=torch.bfloat16).model
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert torch.equal(
        half.trf_blocks[0].att.W_key.weight, model.trf_blocks[0].att.W_key.weight.bfloat16()
    )
    assert half.out_head.weight is half.tok_emb.weight
    # A memory-mapped model saves again (into a new folder) exactly.
    again = load_checkpoint(tmp_path / "a").model
    save_checkpoint(tmp_path / "b", again)
    assert_same_weights(model, load_checkpoint(tmp_path / "b").model)


def test_single_safetensors_file_with_config_beside(tmp_path):
    model = make_model()
    out = save_checkpoint(tmp_path / "ck", model)
    (out / "model.safetensors").rename(out / "weights-final.safetensors")
    loaded = load_checkpoint(out / "weights-final.safetensors")
    assert_same_weights(model, loaded.model)


def test_saves_unwrapped_compiled_or_ddp_style_models(tmp_path):
    model = make_model()

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    save_checkpoint(tmp_path / "ck", Wrapper(model))
    assert_same_weights(model, load_checkpoint(tmp_path / "ck").model)
    with pytest.raises(CheckpointError, match="expected a scratchgpt GPTModel"):
        save_checkpoint(tmp_path / "x", torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# Atomic writes and overwrite
# --------------------------------------------------------------------------------------------


def test_overwrite_refused_without_flag(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(1))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(tmp_path / "ck", make_model(2))
    assert_same_weights(make_model(1), load_checkpoint(tmp_path / "ck").model)
    save_checkpoint(tmp_path / "ck", make_model(2), overwrite=True)
    assert_same_weights(make_model(2), load_checkpoint(tmp_path / "ck").model)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary folders left


def test_failure_mid_write_leaves_old_folder_intact(tmp_path, monkeypatch):
    old = make_model(1)
    save_checkpoint(tmp_path / "ck", old, metadata={"v": 1})

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", make_model(2), metadata={"v": 2}, overwrite=True)
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.metadata == {"v": 1}
    assert_same_weights(old, loaded.model)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new", old)
    assert not (tmp_path / "new").exists()


def test_bad_metadata_and_tokenizer_vocab_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "ck", make_model(), metadata={"x": object()})
    with pytest.raises(CheckpointError, match=r"vocab_size \(40\).*\(50257 tokens\)"):
        save_checkpoint(tmp_path / "ck", make_model(), get_tokenizer("gpt2"))
    assert not (tmp_path / "ck").exists()


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def forget_checksums(folder: Path) -> Path:
    """Drop the weight checksums from a checkpoint's manifest, as in a checkpoint written before
    they were recorded: the structural checks below are what catches a bad file then."""
    manifest = json.loads((folder / "scratchgpt.json").read_text())
    manifest.pop("files")
    (folder / "scratchgpt.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def saved(tmp_path):
    return forget_checksums(save_checkpoint(tmp_path / "ck", make_model()))


def rewrite_weights(folder, change):
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    (folder / "model.safetensors").unlink()
    save_file(tensors, folder / "model.safetensors")


def test_missing_key(saved):
    rewrite_weights(saved, lambda t: t.pop("trf_blocks.1.norm2.shift"))
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors.*missing: trf_blocks\.1\.norm2\.shift"
    ):
        load_checkpoint(saved)


def test_unexpected_key(saved):
    rewrite_weights(saved, lambda t: t.update({"trf_blocks.2.norm1.scale": torch.ones(24)}))
    with pytest.raises(
        CheckpointError, match=r"unexpected tensor\(s\): trf_blocks\.2\.norm1\.scale"
    ):
        load_checkpoint(saved)


def test_shape_mismatch_names_tensor_and_both_shapes(saved):
    rewrite_weights(
        saved, lambda t: t.update({"trf_blocks.0.att.W_key.weight": torch.zeros(24, 12)})
    )
    with pytest.raises(
        CheckpointError, match=r"trf_blocks\.0\.att\.W_key\.weight has shape \(24, 12\).*\(24, 24\)"
    ):
        load_checkpoint(saved)


def test_tied_head_mismatch_hint(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "tie_weights": True}))
    with pytest.raises(CheckpointError, match=r"out_head\.weight.*set tie_weights to false"):
        load_checkpoint(saved)


def test_truncated_safetensors(saved):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"corrupt or truncated: .*model\.safetensors"):
        load_checkpoint(saved)


def test_corrupt_header(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8 : 8 + 10] = b"#not json!"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)
    path.write_bytes(struct.pack("<Q", 1 << 40) + bytes(data[8:]))  # header length past the end
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


def test_integer_tensor_refused(saved):
    rewrite_weights(
        saved, lambda t: t.update({"final_norm.shift": torch.zeros(24, dtype=torch.int64)})
    )
    with pytest.raises(CheckpointError, match=r"final_norm\.shift has dtype I64"):
        load_checkpoint(saved)


def test_missing_files(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_checkpoint(tmp_path / "nope")
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_checkpoint(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_checkpoint(empty)
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="load_book_state_dict"):
        load_checkpoint(pth)


def test_pickle_only_folder_refused(tmp_path, saved):
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle file, which scratchgpt never loads"):
        load_checkpoint(saved)


def test_context_longer_than_position_table(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "context_length": 32}))
    with pytest.raises(
        CheckpointError, match=r"context_length 32.*pos_emb\.weight has 16 positions"
    ):
        load_checkpoint(saved)


def test_bad_config_json(saved):
    (saved / "config.json").write_text('{"vocab_size": 40, "emb_dimm": 3}')
    with pytest.raises(ConfigError, match=r"config\.json: unknown GPTConfig field.*emb_dimm"):
        load_checkpoint(saved)
    (saved / "config.json").write_text('{"model_type": "mamba"}')
    with pytest.raises(CheckpointError, match="model_type is 'mamba'"):
        load_checkpoint(saved)


def test_vocab_smaller_than_tokenizer(saved):
    char_tokenizer(30).save(saved / "tokenizer.json")
    load_checkpoint(saved)  # 40 >= 30: fine (a larger embedding table is allowed)
    char_tokenizer(36).save(saved / "tokenizer.json")
    load_checkpoint(saved)
    get_tokenizer("gpt2").save(saved / "tokenizer.json")
    with pytest.raises(CheckpointError, match=r"vocab_size \(40\) is smaller .* \(50257 tokens\)"):
        load_checkpoint(saved)


def test_newer_manifest_version(saved):
    manifest = json.loads((saved / "scratchgpt.json").read_text())
    (saved / "scratchgpt.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(saved)


def test_model_names_resolve_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="scratchgpt download gpt2-small"):
        load_checkpoint("gpt2")


# --------------------------------------------------------------------------------------------
# The book's state-dict layout
# --------------------------------------------------------------------------------------------


def book_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """What the book's torch.save(model.state_dict()) holds: our keys plus persistent masks."""
    sd = dict(model.state_dict())
    c = model.cfg.context_length
    for i in range(model.cfg.n_layers):
        sd[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(c, c), diagonal=1)
    return sd


def test_book_state_dict_file_and_dict(tmp_path):
    model = make_model()
    torch.save(book_state_dict(model), tmp_path / "model.pth")
    loaded = load_book_state_dict(tmp_path / "model.pth", model.cfg)
    assert_same_weights(model, loaded)
    assert not loaded.training
    sd = book_state_dict(model)
    from_dict = load_book_state_dict(sd, model.cfg)
    assert_same_weights(model, from_dict)
    # Our parameters are not the caller's tensors: changing one leaves the dict alone.
    with torch.no_grad():
        from_dict.tok_emb.weight.zero_()
    assert torch.equal(sd["tok_emb.weight"], model.tok_emb.weight)


def test_book_state_dict_errors(tmp_path):
    model = make_model()
    sd = book_state_dict(model)
    del sd["trf_blocks.0.ff.layers.2.bias"]
    with pytest.raises(
        CheckpointError, match=r"state dict.*missing: trf_blocks\.0\.ff\.layers\.2\.bias"
    ):
        load_book_state_dict(sd, model.cfg)
    with pytest.raises(CheckpointError, match=r"tok_emb\.weight has shape \(40, 24\).*\(50, 24\)"):
        load_book_state_dict(book_state_dict(model), model.cfg.replace(vocab_size=50))
    (tmp_path / "bad.pth").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        load_book_state_dict(tmp_path / "bad.pth", model.cfg)


# --------------------------------------------------------------------------------------------
# CLI: info
# --------------------------------------------------------------------------------------------


def test_info_preset_book_numbers(capsys):
    assert main(["info", "--preset", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "163,009,536" in out and "124,412,160" in out and "621.83 MB" in out
    assert main(["info", "--preset", "gpt2-small", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == 163_009_536
    assert info["parameters"]["without_head"] == 124_412_160
    assert info["memory_mb"]["fp32"] == 621.83
    assert info["config"]["emb_dim"] == 768


def test_info_checkpoint_reads_config_only(tmp_path, capsys):
    model = make_model(tie_weights=True)
    tok = char_tokenizer()
    out = save_checkpoint(tmp_path / "ck", model, tok, metadata={"task": "classifier"})
    # Garbage weights prove the weights are not read.
    (out / "model.safetensors").write_bytes(b"garbage")
    assert main(["info", "--checkpoint", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"] == model.cfg.to_dict()
    assert info["metadata"] == {"task": "classifier"}
    assert info["tokenizer"]["name"] == "char" and info["tokenizer"]["vocab_size"] == tok.vocab_size
    assert info["parameters"]["total"] == model.num_parameters()
    assert main(["info", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert '"task": "classifier"' in text and f"tokenizer: char, {tok.vocab_size} tokens" in text


def test_info_hf_folder(tmp_path, capsys):
    from scratchgpt.weights import save_hf_gpt2

    model = make_model(tie_weights=True, qkv_bias=True)
    save_hf_gpt2(model, tmp_path / "hf")
    assert main(["info", "--checkpoint", str(tmp_path / "hf"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "hf-gpt2"
    assert info["config"] == {**model.cfg.to_dict(), "attention": "sdpa", "init": "gpt2"}
    assert info["tokenizer"] == {"name": "gpt2", "file": None}


def test_load_hf_gpt2_refuses_our_folders(tmp_path):
    from scratchgpt.weights import load_hf_gpt2

    save_checkpoint(tmp_path / "ck", make_model())
    with pytest.raises(CheckpointError, match=r"not a Hugging Face config.*use .*load_checkpoint"):
        load_hf_gpt2(tmp_path / "ck")


def test_info_errors(tmp_path, capsys):
    assert main(["info", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["info", "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info"])


# --------------------------------------------------------------------------------------------
# Peak memory while loading (Linux: the kernel's resettable peak-RSS counter)
# --------------------------------------------------------------------------------------------

_MEASURE = """
import gc, sys, torch
from pathlib import Path
from scratchgpt.weights import load_checkpoint
from scratchgpt.weights import load_hf_gpt2

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

root = Path(sys.argv[1])
loaders = {"ours": lambda p: load_checkpoint(p).model, "hf": load_hf_gpt2,
           "bf16": lambda p: load_checkpoint(p, dtype=torch.bfloat16).model}
for kind, load in loaders.items():
    folder = "hf" if kind == "hf" else "ours"
    load(root / f"warm{folder}")  # imports and allocator warm-up are not what we measure
    gc.collect()
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    model = load(root / folder)
    sum(float(p.float().sum()) for p in model.parameters())  # touch every page of every weight
    print(kind, status("VmHWM") - before)
    del model
    gc.collect()
"""


def _peak_rss_resettable() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM" in Path("/proc/self/status").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    sys.platform != "linux" or not _peak_rss_resettable(), reason="needs Linux peak-RSS reset"
)
def test_loading_does_not_hold_two_copies(tmp_path):
    import subprocess

    from scratchgpt.weights import save_hf_gpt2

    cfg = GPTConfig(
        vocab_size=1000, context_length=128, emb_dim=256, n_heads=4, n_layers=16, qkv_bias=True
    )
    with torch.device("meta"):
        model = GPTModel(cfg)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.fill_(0.001 * i)
    save_checkpoint(tmp_path / "ours", model)
    save_hf_gpt2(model, tmp_path / "hf")
    tiny = GPTModel(GPTConfig.from_preset("tiny", qkv_bias=True))
    save_checkpoint(tmp_path / "warmours", tiny)
    save_hf_gpt2(tiny, tmp_path / "warmhf")
    size = (tmp_path / "ours" / "model.safetensors").stat().st_size  # ~57 MB
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    peak = {kind: int(n) / size for kind, n in (line.split() for line in out.stdout.splitlines())}
    # Two copies would be ~2x; one copy plus bookkeeping and one tensor in flight is ~1x
    # (~0.5x in bf16). The Hugging Face layout is transposed tensor by tensor.
    assert peak["ours"] < 1.3, peak
    assert peak["hf"] < 1.3, peak
    assert peak["bf16"] < 0.8, peak


def test_weights_file_gets_the_same_permissions_as_the_other_files(tmp_path):
    # safetensors writes through its own 0600 temporary file; a checkpoint must stay readable
    # by whoever can read its config.json (a server user, a shared group).
    ck = save_checkpoint(tmp_path / "ck", make_model())
    mode = (ck / "config.json").stat().st_mode & 0o777
    assert (ck / "model.safetensors").stat().st_mode & 0o777 == mode
