"""Training configs: validation, YAML/JSON files, presets, CLI flags; schedules (appendix D)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest

from scratchgpt.cli import build_parser
from scratchgpt.cli.pretrain import resolve_run_config
from scratchgpt.errors import ConfigError
from scratchgpt.training.config import (
    SECTIONS,
    DataConfig,
    ModelSpec,
    RunConfig,
    TrainConfig,
    list_presets,
)
from scratchgpt.training.schedules import LRSchedule


def test_presets_load_and_match_the_book_settings():
    assert {"book-ch5", "book-ch6", "book-ch7", "char-small"} <= set(list_presets())
    assert list_presets("pretrain") == ["book-appendix-d", "book-ch5", "char-small"]
    assert list_presets("classify") == ["book-appendix-e", "book-ch6"]
    assert list_presets("instruct") == ["book-ch7"]
    assert list_presets("dpo") == ["book-dpo"]
    cfg = RunConfig.preset("book-ch5")
    # Book chapter 5: GPT-2 small with a 256 context, AdamW(lr=4e-4, wd=0.1), 10 epochs,
    # batch 2, windows of 256 every 256 tokens, 90/10 split, eval every 5 steps over 5 batches.
    assert (cfg.model.preset, cfg.model.context_length, cfg.model.qkv_bias) == (
        "gpt2-small",
        256,
        False,
    )
    assert (cfg.data.max_length, cfg.data.stride, cfg.data.train_ratio) == (256, 256, 0.9)
    t = cfg.train
    assert (t.lr, t.weight_decay, t.max_epochs, t.batch_size) == (4e-4, 0.1, 10, 2)
    assert (t.eval_interval, t.eval_batches, t.seed) == (5, 5, 123)
    assert t.sample_prompt == "Every effort moves you"
    # The book's AdamW decays every parameter; its lines label steps by global_step.
    assert (t.decay_all_parameters, t.step_labels) == (True, "book")
    # Appendix D: 15 epochs of the same data, peak lr 1e-3, 27 warm-up steps from 1e-5 (20% of
    # 135), cosine to 1e-5, clipping at 1.0 after the warm-up only, evaluation over 1 batch.
    d = RunConfig.preset("book-appendix-d")
    assert (d.model, d.data) == (cfg.model, cfg.data)
    t = d.train
    assert (t.max_epochs, t.lr, t.schedule, t.warmup_steps) == (15, 1e-3, "cosine", 27)
    assert (t.warmup_init_lr, t.min_lr, t.grad_clip, t.clip_during_warmup) == (
        1e-5,
        1e-5,
        1.0,
        False,
    )
    assert (t.eval_interval, t.eval_batches, t.decay_all_parameters) == (5, 1, True)
    # Our own defaults: clip from the first step, decay matrices only, label updates done.
    plain = TrainConfig()
    assert (plain.clip_during_warmup, plain.decay_all_parameters) == (True, False)
    assert plain.step_labels == "updates"
    # char-small, as the issue specifies it: 4 layers, 4 heads, 128 dims, context 64, batch 12,
    # lr 1e-3, 100 warm-up steps, cosine to 1e-4 over 2,000 steps, betas (0.9, 0.99), wd 0.1,
    # clip 1.0, dropout 0.0, eval every 250 steps.
    char = RunConfig.preset("char-small")
    m, c = char.model, char.train
    assert char.data.tokenizer == "char" and c.schedule == "cosine"
    assert (m.n_layers, m.n_heads, m.emb_dim, m.context_length, m.drop_rate) == (4, 4, 128, 64, 0.0)
    assert (c.batch_size, c.lr, c.warmup_steps, c.min_lr, c.max_steps) == (
        12,
        1e-3,
        100,
        1e-4,
        2000,
    )
    assert (c.beta1, c.beta2, c.weight_decay, c.grad_clip, c.eval_interval) == (
        0.9,
        0.99,
        0.1,
        1.0,
        250,
    )
    with pytest.raises(ConfigError, match="unknown training preset 'nope'"):
        RunConfig.preset("nope")


def test_yaml_round_trip_and_json(tmp_path):
    cfg = RunConfig.preset("char-small").with_overrides({"train.lr": 1e-3, "model.n_layers": 3})
    cfg.save(tmp_path / "run.yaml")
    cfg.save(tmp_path / "run.json")
    assert RunConfig.load(tmp_path / "run.yaml") == cfg
    assert RunConfig.load(tmp_path / "run.json") == cfg
    assert json.loads((tmp_path / "run.json").read_text())["model"]["n_layers"] == 3


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 4e-4 as a string; the config must still mean the number.
    (tmp_path / "c.yaml").write_text("train:\n  lr: 4e-4\n  max_steps: 1e3\n")
    cfg = RunConfig.load(tmp_path / "c.yaml")
    assert cfg.train.lr == 4e-4 and cfg.train.max_steps == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lrr: 0.1\n", r"unknown field\(s\) \['lrr'\]"),
        ("trian:\n  lr: 0.1\n", r"unknown section\(s\) \['trian'\]"),
        ("train:\n  batch_size: two\n", "train.batch_size must be an integer, got 'two'"),
        ("train:\n  batch_size: 0\n", "train.batch_size must be >= 1"),
        (
            "train:\n  precision: fp8\n",
            r"train.precision must be one of \['fp32', 'bf16', 'auto'\]",
        ),
        ("train:\n  lr: -1\n", "train.lr must be > 0"),
        ("train:\n  lr: 0.001\n  min_lr: 0.01\n", "min_lr .* must not exceed"),
        ("train:\n  shuffle: maybe\n", "train.shuffle must be true or false"),
        ("data:\n  train_ratio: 1.5\n", r"data.train_ratio must be in \(0, 1\]"),
        ("model:\n  attention: flash\n", "model.attention must be one of"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("train:\n  lr: [oops\n", "invalid YAML at line 3, column 1"),
    ],
)
def test_bad_config_files_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig.load(path)
    assert str(path) in str(info.value)


def test_every_field_has_a_flag_and_flags_override_preset_and_file(tmp_path):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["pretrain"]
    dests = {a.dest for a in sub._actions}
    for section, klass in SECTIONS.items():
        for f in dataclasses.fields(klass):
            assert f"cfg__{section}__{f.name}" in dests, f"no flag for {section}.{f.name}"
    (tmp_path / "c.yaml").write_text("train:\n  lr: 0.002\n  batch_size: 8\n")
    args = parser.parse_args(
        [
            "pretrain",
            "--preset",
            "char-small",
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--batch-size",
            "4",
            "--no-shuffle",
            "--max-tokens",
            "none",
            "--model",
            "tiny",
            "--data",
            "file.txt",
            "--qkv-bias",
        ]
    )
    cfg = resolve_run_config(args)
    assert cfg.train.lr == 0.002  # from the file
    assert cfg.train.batch_size == 4  # flag beats file
    assert cfg.train.shuffle is False and cfg.train.max_tokens is None
    assert cfg.train.schedule == "cosine"  # preset value kept
    assert (cfg.model.preset, cfg.data.source, cfg.model.qkv_bias) == ("tiny", "file.txt", True)


def test_train_config_checks():
    with pytest.raises(ConfigError, match=r"train\.grad_accum_steps must be >= 1"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ConfigError, match=r"train\.max_steps must be >= 1"):
        TrainConfig(max_steps=0)
    assert not TrainConfig().has_stop and TrainConfig(max_tokens=10).has_stop
    with pytest.raises(ConfigError, match=r"data\.stride must be >= 1"):
        DataConfig(stride=0)


def _book_appendix_d_lr(global_step, peak_lr, initial_lr, min_lr, warmup_steps, total_steps):
    """The schedule exactly as written in the book's appendix D training loop."""
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    if global_step < warmup_steps:
        return initial_lr + global_step * lr_increment
    progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def test_cosine_schedule_equals_appendix_d():
    peak, init, total, warm = 5e-4, 1e-5, 90, 18
    sched = LRSchedule(peak, "cosine", warm, init, min_lr=0.1 * init, total_steps=total)
    for step in range(total):
        expected = _book_appendix_d_lr(step, peak, init, 0.1 * init, warm, total)
        assert sched(step) == pytest.approx(expected, rel=1e-12)
    assert sched(0) == init
    assert sched(warm) == pytest.approx(peak)
    assert sched(total) == pytest.approx(0.1 * init) and sched(total + 50) == pytest.approx(
        0.1 * init
    )
    # The warm-up rises strictly, the decay falls monotonically.
    lrs = [sched(s) for s in range(total + 1)]
    assert all(a < b for a, b in itertools.pairwise(lrs[: warm + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))


def test_constant_schedule_and_errors():
    sched = LRSchedule(1e-3, "constant", warmup_steps=4)
    assert [sched(s) for s in range(6)] == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    with pytest.raises(ConfigError, match="needs the total number of steps"):
        LRSchedule(1e-3, "cosine")
    with pytest.raises(ConfigError, match="unknown schedule"):
        LRSchedule(1e-3, "linear")


def test_model_spec_is_derived_from_gpt_config():
    from scratchgpt.config import GPTConfig

    names = [f.name for f in dataclasses.fields(ModelSpec)]
    # Every GPTConfig field but what fine-tuning adds (set by the classify/instruct sections)
    # and the inference-time quantization (load_model(quantize=...), --quantize), and the list
    # of Qwen3-MoE's dense layers (loaded folders bring it; pretraining uses decoder_sparse_step)
    # and Gemma 3's layer types (the preset's pattern, repeated to the depth asked for).
    added = {"num_classes", "lora", "quantization", "mlp_only_layers", "layer_types"}
    expected = [f.name for f in dataclasses.fields(GPTConfig) if f.name not in added]
    assert names == ["preset", *expected]
    spec = ModelSpec(n_layers="3", attention="explicit")  # coerced like every config field
    assert spec.overrides() == {"n_layers": 3, "attention": "explicit"}
    attention = next(f for f in dataclasses.fields(ModelSpec) if f.name == "attention")
    assert attention.metadata["choices"] == ("sdpa", "explicit")  # from GPTConfig's Literal
    with pytest.raises(ConfigError, match=r"model\.attention must be one of"):
        ModelSpec(attention="flash")


def test_book_presets_are_the_recipe_defaults():
    """The dataclass defaults of each fine-tuning recipe equal its book preset, field for field."""
    from scratchgpt.tasks.classify import ClassifyConfig
    from scratchgpt.tasks.instruct import InstructConfig

    for klass, name in ((ClassifyConfig, "book-ch6"), (InstructConfig, "book-ch7")):
        preset = klass.preset_dict(name)
        for section, fields in preset.items():
            if section == "train":
                continue  # the loop's defaults are TrainConfig's; the preset changes some
            defaults = dataclasses.asdict(klass.SECTIONS[section]())
            assert {k: defaults[k] for k in fields} == fields, (name, section)
    with pytest.raises(ConfigError, match="is a classify preset"):
        RunConfig.preset("book-ch6")


@pytest.mark.parametrize(
    ("command", "preset", "start", "check"),
    [
        ("pretrain", "char-small", [], "tokenizer: char"),
        ("finetune-classifier", "book-ch6", ["--random-init", "tiny"], "trainable: last-blocks"),
        ("finetune-instruct", "book-ch7", ["--gpt2", "gpt2-small"], "prompt_style: auto"),
    ],
)
def test_every_recipe_takes_preset_config_file_and_flags(
    tmp_path, capsys, command, preset, start, check
):
    import yaml

    from scratchgpt.cli import main

    (tmp_path / "c.yaml").write_text("train:\n  lr: 0.002\n  batch_size: 3\n")
    out = ["--out", str(tmp_path / "run"), "--print-config"]
    assert main([command, *start, *out]) == 0
    default = capsys.readouterr().out
    assert main([command, "--preset", preset, *start, *out]) == 0
    chosen = capsys.readouterr().out
    assert (chosen == default) == (command != "pretrain")  # book-ch6/7 are the defaults there
    assert main([command, "--preset", preset, "--config", str(tmp_path / "c.yaml"), *start,
                 "--batch-size", "5", *out]) == 0  # fmt: skip
    text = capsys.readouterr().out
    cfg = yaml.safe_load(text)
    assert check in text and (cfg["train"]["lr"], cfg["train"]["batch_size"]) == (0.002, 5)
