"""The one loader: load_model resolves every kind of input, and the config describes the whole
architecture (a classifier head, LoRA adapters), so GPTModel(cfg) + load_state_dict round-trip."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from scratchgpt.config import GPTConfig, LoRAConfig
from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.model import GPTModel
from scratchgpt.model.lora import LoRALayer, apply_lora, has_lora
from scratchgpt.tasks.classify import classifier_metadata, make_classifier
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import (
    load_checkpoint,
    load_model,
    load_weights_into,
    save_checkpoint,
    save_hf_gpt2,
)

TINY = dict(vocab_size=60, context_length=16, emb_dim=24, n_heads=3, n_layers=2, drop_rate=0.0)


def randomised(model: GPTModel, seed: int = 0) -> GPTModel:
    """Every tensor random (LoRA's B too), so a swapped or dropped tensor cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def logits(model: GPTModel, vocab: int = 60) -> torch.Tensor:
    idx = torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(idx)


def lora_classifier() -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**TINY))
    make_classifier(model, 3, trainable="lora", lora_rank=2, lora_alpha=4.0)
    return randomised(model)


# --------------------------------------------------------------------------------------------
# The config is the architecture


def test_config_records_classifier_and_lora_and_round_trips_strictly():
    model = lora_classifier()
    cfg = model.cfg
    assert cfg.num_classes == 3 and not cfg.tie_weights
    assert cfg.lora == LoRAConfig(2, 4.0, ("attention", "feed_forward", "head"))
    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # One constructor and one strict load_state_dict rebuild the same model.
    again = GPTModel(cfg)
    again.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(logits(again.eval()), logits(model))
    assert logits(model).shape == (2, 7, 3)


def test_plain_config_json_is_unchanged():
    cfg = GPTConfig(**TINY)
    assert "num_classes" not in cfg.to_dict() and "lora" not in cfg.to_dict()
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_architecture_configs():
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
        GPTConfig(**TINY, num_classes=1)
    with pytest.raises(ConfigError, match="cannot be tied"):
        GPTConfig(**TINY, num_classes=2, tie_weights=True)
    with pytest.raises(ConfigError, match="LoRA cannot adapt a head tied"):
        GPTConfig(**TINY, tie_weights=True, lora={"rank": 2})
    with pytest.raises(ConfigError, match="choose from"):
        GPTConfig(**TINY, lora={"rank": 2, "targets": ["embeddings"]})
    with pytest.raises(ConfigError, match="lora needs rank"):
        GPTConfig.from_dict({**TINY, "lora": {"alpha": 2}})


# --------------------------------------------------------------------------------------------
# Every kind of input


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as training leaves it: two checkpoints, ``latest`` and ``best`` pointers."""
    run = tmp_path / "run"
    tok = get_tokenizer("char", chars=list("abcdefghij"))
    for step, seed in ((1, 1), (2, 2)):
        model = randomised(GPTModel(GPTConfig(**TINY)), seed)
        save_checkpoint(
            run / "checkpoints" / f"step-00000{step}", model, tok, metadata={"step": step}
        )
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    (run / "checkpoints" / "best").write_text("step-000001\n")
    return run


def test_run_folder_checkpoint_folder_and_pointer_files(run_folder):
    ckpts = run_folder / "checkpoints"
    for name, step in [
        (run_folder, 2),  # a run folder: its newest checkpoint
        (ckpts, 2),  # its checkpoints folder
        (ckpts / "latest", 2),  # a pointer file
        (ckpts / "best", 1),
        (ckpts / "step-000001", 1),  # a checkpoint folder
        (ckpts / "step-000001" / "model.safetensors", 1),  # its weights file
    ]:
        loaded = load_model(name)
        assert loaded.metadata == {"step": step}, name
        want = ckpts / f"step-00000{step}"
        assert loaded.path in (want, want / "model.safetensors"), name
        assert loaded.format == "scratchgpt" and loaded.tokenizer.vocab_size == 11
        assert not loaded.model.training
    expected = randomised(GPTModel(GPTConfig(**TINY)), 1)
    assert torch.equal(logits(load_model(ckpts / "best").model), logits(expected))


def test_hugging_face_folder_from_save_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    loaded = load_model(tmp_path / "hf")
    assert loaded.format == "hf-gpt2" and loaded.tokenizer.vocab_size == 50257
    idx = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        want = hf(idx).logits
        got = loaded.model(idx)
    assert (want - got).abs().max() < 1e-4


def test_hub_name_through_the_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    model = randomised(GPTModel(GPTConfig(**{**TINY, "qkv_bias": True, "tie_weights": True})))
    with pytest.raises(CheckpointError, match="scratchgpt download gpt2-small"):
        load_model("gpt2-small")
    # A small model under the cache name, as `scratchgpt download` would leave it (its vocabulary
    # is smaller than GPT-2's, so the bundled tokenizer is refused: the name did resolve).
    save_hf_gpt2(model, tmp_path / "cache" / "models" / "gpt2-small")
    with pytest.raises(CheckpointError, match=r"vocab_size \(60\) is smaller"):
        load_model("gpt2")


def test_lora_checkpoint_merges_or_keeps_adapters(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**TINY))
    apply_lora(model, rank=2, alpha=8.0, targets=["attention", "feed_forward", "head"])
    randomised(model)
    save_checkpoint(tmp_path / "ck", model, metadata={"task": "instruct", "prompt_style": "alpaca"})
    merged = load_model(tmp_path / "ck")
    assert not has_lora(merged.model) and merged.config.lora is None
    assert merged.model.cfg == merged.config
    torch.testing.assert_close(logits(merged.model), logits(model), atol=1e-5, rtol=1e-5)
    kept = load_model(tmp_path / "ck", merge_lora=False)
    assert has_lora(kept.model) and kept.config.lora.rank == 2
    assert torch.equal(logits(kept.model), logits(model))
    # A merged model saves as a plain language model.
    save_checkpoint(tmp_path / "merged", merged.model)
    assert "lora" not in json.loads((tmp_path / "merged" / "config.json").read_text())


def test_classifier_checkpoint(tmp_path):
    model = lora_classifier()
    meta = classifier_metadata(["a", "b", "c"], 16, 0, trainable="lora")
    save_checkpoint(tmp_path / "clf", model, metadata=meta)
    loaded = load_model(tmp_path / "clf")
    assert loaded.config.num_classes == 3 and loaded.metadata["label_names"] == ["a", "b", "c"]
    torch.testing.assert_close(logits(loaded.model), logits(model), atol=1e-5, rtol=1e-5)
    # Commands that need a language model refuse it (the check is theirs, via load_checkpoint).
    with pytest.raises(
        CheckpointError, match=r"classifier checkpoint \(labels \['a', 'b', 'c'\]\)"
    ):
        load_checkpoint(tmp_path / "clf")


def test_classifier_written_before_the_config_described_it(tmp_path):
    """Older classifier checkpoints kept num_classes and LoRA settings in the metadata only."""
    model = lora_classifier()
    lora = {"rank": 2, "alpha": 4.0, "targets": ["attention", "feed_forward", "head"]}
    meta = classifier_metadata(["a", "b", "c"], 16, 0, trainable="lora", lora=lora)
    out = save_checkpoint(tmp_path / "old", model, metadata=meta)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["num_classes"], cfg["lora"]
    (out / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(out, merge_lora=False)
    assert loaded.config == model.cfg
    assert torch.equal(logits(loaded.model), logits(model))


def test_resume_loads_into_the_existing_model_with_clear_errors(tmp_path):
    model = lora_classifier()
    save_checkpoint(tmp_path / "ck", model)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "ck" / "model.safetensors")
    target = GPTModel(model.cfg)
    params = list(target.parameters())
    load_weights_into(target, weights, tmp_path / "ck" / "model.safetensors")
    assert list(target.parameters()) == params  # the same tensors: an optimizer keeps them
    assert torch.equal(logits(target.eval()), logits(model))
    del weights["out_head.lora.B"]
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing: out_head\.lora\.B"):
        load_weights_into(target, weights, tmp_path / "ck" / "model.safetensors")
    weights["out_head.lora.B"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"out_head\.lora\.B has shape \(3, 3\).*\(2, 3\)"):
        load_weights_into(target, weights, "ck")


def test_lora_layers_are_random_until_loaded():
    # GPTModel(cfg) builds the adapters (initialised like apply_lora's); loading overwrites them.
    model = GPTModel(GPTConfig(**TINY, lora={"rank": 2}))
    assert sum(isinstance(m, LoRALayer) for m in model.modules()) == 2 * 6 + 1


# --------------------------------------------------------------------------------------------
# The old import paths


def test_old_import_paths_still_work_and_warn():
    import scratchgpt
    import scratchgpt.checkpoints as old_checkpoints
    import scratchgpt.interop as old_interop
    from scratchgpt.weights import hub

    with pytest.warns(DeprecationWarning, match=r"scratchgpt\.checkpoints\.load_checkpoint"):
        assert old_checkpoints.load_checkpoint is load_checkpoint
    with pytest.warns(DeprecationWarning, match="use scratchgpt.weights.load.resolve_path"):
        old_checkpoints.resolve_checkpoint_path  # noqa: B018
    with pytest.warns(DeprecationWarning, match=r"scratchgpt\.interop\.save_hf_gpt2"):
        assert old_interop.save_hf_gpt2 is save_hf_gpt2
    with pytest.warns(DeprecationWarning):
        from scratchgpt.interop.hub import resolve_model_path
    assert resolve_model_path is hub.resolve_model_path
    with pytest.raises(AttributeError):
        old_checkpoints.nothing_here  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scratchgpt.load_model is load_model  # the new top-level name does not warn
