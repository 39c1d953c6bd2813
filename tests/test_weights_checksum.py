"""Weight-file checksums: a checkpoint's manifest records each weight file's size and SHA-256,
and every load checks them, so bytes changed inside the tensor data (which the structural checks
cannot see) are refused instead of generating nonsense."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.training.state import read_training_checkpoint, save_training_checkpoint
from scratchgpt.weights import load_model, save_checkpoint

CFG = GPTConfig(vocab_size=40, context_length=16, emb_dim=24, n_heads=3, n_layers=2, drop_rate=0.0)
TOKENIZER = get_tokenizer("char", chars=[chr(ord("a") + i) for i in range(26)])


def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def scribble(path, n: int = 4096) -> None:
    """Overwrite n bytes in the middle of the tensor data (past the header) with garbage: the
    file keeps its size and its header, so it still parses."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    start = header + (len(data) - header - n) // 2
    data[start : start + n] = bytes((i * 37 + 11) % 256 for i in range(n))
    path.write_bytes(bytes(data))


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint(tmp_path / "ck", model(), TOKENIZER)


def test_manifest_records_size_and_sha256(ckpt):
    files = json.loads((ckpt / "scratchgpt.json").read_text())["files"]
    data = (ckpt / "model.safetensors").read_bytes()
    assert files == {
        "model.safetensors": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    }


def test_garbage_inside_the_weights_is_refused(ckpt):
    scribble(ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: contents do not match"):
        load_model(ckpt)
    # Skipping the check is possible, and the model then loads (the bytes parse).
    assert load_model(ckpt, verify=False).model is not None


def test_environment_variable_skips_the_check(ckpt, monkeypatch):
    scribble(ckpt / "model.safetensors")
    monkeypatch.setenv("SCRATCHGPT_VERIFY_WEIGHTS", "0")
    load_model(ckpt)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(ckpt, verify=True)  # an explicit argument wins


def test_replaced_file_of_another_size_names_both_sizes(ckpt):
    path = ckpt / "model.safetensors"
    size = path.stat().st_size
    save_checkpoint(ckpt.parent / "other", GPTModel(CFG.replace(emb_dim=12, n_heads=2)))
    path.write_bytes((ckpt.parent / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=rf"scratchgpt\.json recorded {size} when"):
        load_model(ckpt)


def test_bad_files_field_is_named(ckpt):
    manifest = json.loads((ckpt / "scratchgpt.json").read_text())
    manifest["files"]["model.safetensors"] = "abc"
    (ckpt / "scratchgpt.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"scratchgpt\.json: field files\.model\.safetensors"):
        load_model(ckpt)


def test_checkpoints_without_checksums_still_load(ckpt):
    manifest = json.loads((ckpt / "scratchgpt.json").read_text())
    del manifest["files"]
    (ckpt / "scratchgpt.json").write_text(json.dumps(manifest))
    scribble(ckpt / "model.safetensors")  # nothing recorded: nothing to compare with
    load_model(ckpt)


def test_resume_refuses_a_corrupted_training_checkpoint(tmp_path):
    m = model()
    opt = torch.optim.AdamW(m.parameters())
    state = {
        "step": 1, "epoch": 0, "batch_in_epoch": 1, "tokens_seen": 16,
        "optimizer": opt.state_dict(), "rng": {},
    }  # fmt: skip
    folder = save_training_checkpoint(tmp_path / "checkpoints", 1, m, TOKENIZER, state, {})
    read_training_checkpoint(folder, CFG)
    scribble(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not match"):
        read_training_checkpoint(folder, CFG)


def test_cli_one_line_error_and_no_verify(ckpt, capsys):
    scribble(ckpt / "model.safetensors")
    args = ["generate", "--checkpoint", str(ckpt), "--prompt", "ab", "--max-new-tokens", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "contents do not match" in err and "--no-verify" in err
    assert main([*args, "--no-verify"]) == 0
