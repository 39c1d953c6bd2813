"""Training configuration: dataclasses validated on construction, loaded from YAML or JSON.

A run is described by one ``RunConfig`` with three sections: ``model`` (a GPT preset plus field
overrides), ``data`` (what to train on and how to cut it into windows) and ``train`` (the loop's
hyperparameters). Every field has a command-line flag (see ``scratchgpt pretrain --help``) and
the fully resolved config is written beside every checkpoint and into ``run.json``, so any run can
be repeated from its folder alone.

This module does not import torch: the CLI builds its flags from these dataclasses at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_text, read_text


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with the help text (and allowed values) its CLI flag shows."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Hyperparameters of the training loop (shared by every task)."""

    seed: int = _f(123, "seed for initialisation, data order and dropout")
    device: str = _f("auto", "cpu, cuda, cuda:N, mps, or auto (cuda when available)")
    precision: str = _f(
        "fp32",
        "fp32; bf16 autocast (CPU or GPU); auto: bf16 where the hardware has fast bf16",
        ("fp32", "bf16", "auto"),
    )
    compile: bool = _f(False, "wrap the model in torch.compile")
    strategy: str = _f(
        "ddp",
        "under torchrun: ddp (replicate the model) or fsdp (shard parameters, gradients and "
        "optimizer state with FSDP2); ignored in a single process",
        ("ddp", "fsdp"),
    )
    batch_size: int = _f(2, "sequences per micro-batch (one forward/backward)")
    grad_accum_steps: int = _f(
        1,
        "micro-batches per optimizer step; the global batch is batch_size * this * ranks "
        "(torchrun processes)",
    )
    max_steps: int | None = _f(None, "stop after this many optimizer steps")
    max_epochs: int | None = _f(None, "stop after this many passes over the training data")
    max_tokens: int | None = _f(None, "stop once this many training tokens have been seen")
    lr: float = _f(4e-4, "peak learning rate (AdamW)")
    schedule: str = _f(
        "constant",
        "learning-rate schedule after warm-up: constant, or cosine decay to min_lr",
        ("constant", "cosine"),
    )
    warmup_steps: int = _f(0, "steps of linear warm-up from warmup_init_lr to lr")
    warmup_init_lr: float = _f(0.0, "learning rate at step 0 of the warm-up")
    min_lr: float = _f(0.0, "learning rate at the end of the cosine decay")
    weight_decay: float = _f(0.1, "AdamW weight decay, applied to weight matrices only")
    decay_embeddings: bool = _f(
        True, "also decay the embedding tables (biases and norms are never decayed)"
    )
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(0.0, "clip gradients to this global L2 norm (0: no clipping)")
    shuffle: bool = _f(True, "shuffle the training windows each epoch (seeded by seed + epoch)")
    drop_last: bool = _f(True, "drop an incomplete last micro-batch of each epoch")
    num_workers: int = _f(0, "DataLoader worker processes")
    eval_interval: int = _f(5, "evaluate train/val loss every this many steps (0: only at the end)")
    eval_batches: int = _f(5, "batches per evaluation (train and validation each)")
    eval_at_start: bool = _f(False, "also evaluate before the first step")
    log_interval: int = _f(1, "write a metrics.jsonl record every this many steps")
    sample_interval: int = _f(0, "print a text sample every this many steps (0: only at the end)")
    sample_prompt: str = _f("Every effort moves you", "prompt of the text samples")
    sample_tokens: int = _f(50, "new tokens per sample (greedy; 0: no samples)")
    checkpoint_interval: int = _f(0, "save a checkpoint every this many steps (0: only at the end)")
    keep_last: int = _f(2, "keep this many most recent checkpoints")
    keep_best: bool = _f(True, "also keep the checkpoint with the lowest validation loss")
    tensorboard: bool = _f(False, "also log to TensorBoard (needs the tensorboard package)")
    progress: bool = _f(True, "show a progress bar")
    plot: bool = _f(True, "write loss and learning-rate plots at the end")
    peak_tflops: float | None = _f(
        None, "the device's peak TFLOP/s for the MFU estimate (default: measured with a matmul)"
    )

    def __post_init__(self) -> None:
        _validate(self, "train")
        positive = ("batch_size", "grad_accum_steps", "eval_batches", "log_interval", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        non_negative = (
            "warmup_steps",
            "num_workers",
            "eval_interval",
            "sample_interval",
            "sample_tokens",
            "checkpoint_interval",
            "weight_decay",
            "grad_clip",
            "min_lr",
            "warmup_init_lr",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_steps", "max_epochs", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(
                    f"train.{name} must be >= 1 (or null for no limit), got {value!r}"
                )
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr!r}")
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"train.peak_tflops must be > 0, got {self.peak_tflops!r}")

    @property
    def has_stop(self) -> bool:
        return any(v is not None for v in (self.max_steps, self.max_epochs, self.max_tokens))


@dataclass
class DataConfig:
    """What to train on: a text (bundled name or file) or a prepared token-shard folder."""

    source: str = _f(
        "the-verdict",
        "bundled text name (the-verdict), a UTF-8 text file, or a folder written by "
        "`scratchgpt prepare`",
    )
    tokenizer: str = _f(
        "gpt2", "gpt2, char (alphabet of the text), or a saved tokenizer file (JSON)"
    )
    max_length: int = _f(256, "tokens per training window")
    stride: int | None = _f(None, "distance between window starts (default: max_length)")
    train_ratio: float = _f(0.9, "share of a text used for training; the rest validates")
    encoding_errors: str = _f(
        "strict", "invalid UTF-8 in a text file: strict (error) or replace", ("strict", "replace")
    )

    def __post_init__(self) -> None:
        _validate(self, "data")
        if self.max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {self.max_length!r}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {self.stride!r}")
        if not 0.0 < self.train_ratio <= 1.0:
            raise ConfigError(f"data.train_ratio must be in (0, 1], got {self.train_ratio!r}")


@dataclass
class ModelSpec:
    """A GPT preset plus overrides; None keeps the preset's value. The vocabulary size defaults
    to the tokenizer's."""

    preset: str = _f("gpt2-small", "model preset (gpt2-small, gpt2-medium, ..., mini, tiny)")
    vocab_size: int | None = _f(None, "vocabulary size (default: the tokenizer's)")
    context_length: int | None = _f(None, "longest sequence the model accepts")
    emb_dim: int | None = _f(None, "embedding width")
    n_heads: int | None = _f(None, "attention heads")
    n_layers: int | None = _f(None, "transformer blocks")
    drop_rate: float | None = _f(None, "dropout rate")
    qkv_bias: bool | None = _f(None, "bias in the query/key/value projections")
    tie_weights: bool | None = _f(None, "share the token embedding with the output head")
    attention: str | None = _f(None, "attention implementation", ("sdpa", "explicit"))
    init: str | None = _f(None, "weight initialisation", ("pytorch", "gpt2"))
    ln_eps: float | None = _f(None, "LayerNorm epsilon")

    def __post_init__(self) -> None:
        _validate(self, "model")

    def overrides(self) -> dict[str, Any]:
        """The GPTConfig fields set here (everything but the preset name)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "preset" and getattr(self, f.name) is not None
        }


SECTIONS: dict[str, type] = {"model": ModelSpec, "data": DataConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    """Everything a pretraining run needs besides its output folder."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> RunConfig:
        """Build from nested dicts; unknown sections or fields are errors naming them."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping with sections {sorted(SECTIONS)}")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {unknown}; known sections: {sorted(SECTIONS)}"
            )
        parts = {}
        for name, klass in SECTIONS.items():
            parts[name] = config_from_dict(klass, d.get(name) or {}, f"{source}: {name}")
        return cls(**parts)

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> RunConfig:
        """A copy with dotted keys (``"train.lr"``) changed, validated again."""
        d = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in SECTIONS or not name:
                raise ConfigError(f"{source}: {key!r} is not a 'section.field' key")
            d[section][name] = value
        return RunConfig.from_dict(d, source)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: PathLike) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            return atomic_write_text(p, self.to_yaml())
        return atomic_write_text(p, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> RunConfig:
        """Read a YAML or JSON config file."""
        return cls.from_dict(_load_mapping(path), source=str(path))

    @classmethod
    def preset(cls, name: str) -> RunConfig:
        """A bundled run preset (see ``list_presets()``)."""
        names = list_presets()
        if name not in names:
            raise ConfigError(f"unknown training preset {name!r}; choose one of {names}")
        text = (resources.files(__package__) / "presets" / f"{name}.yaml").read_text("utf-8")
        return cls.from_dict(_parse_yaml(text, f"preset {name!r}"), source=f"preset {name!r}")


def file_overrides(path: PathLike) -> dict[str, Any]:
    """The fields a YAML/JSON config file sets, as dotted keys (validated by loading the file)."""
    raw = _load_mapping(path) or {}
    cfg = RunConfig.from_dict(raw, source=str(path))
    return {
        f"{s}.{k}": getattr(getattr(cfg, s), k) for s, fields in raw.items() for k in fields or {}
    }


def list_presets() -> list[str]:
    """Names of the bundled run presets (``training/presets/*.yaml``)."""
    folder = resources.files(__package__) / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _parse_yaml(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def _load_mapping(path: PathLike) -> Any:
    p = Path(path)
    text = read_text(p)
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            ) from None
    # JSON is YAML too, so any other suffix is read as YAML.
    return _parse_yaml(text, str(p))


def config_from_dict(klass: type, d: Any, source: str) -> Any:
    """One config section (TrainConfig, DataConfig, ...) from a mapping; errors name ``source``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    try:
        return klass(**d)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def field_types(klass: type) -> dict[str, tuple[type, bool]]:
    """For each field: (base type, whether None is allowed)."""
    hints = typing.get_type_hints(klass)
    out = {}
    for f in dataclasses.fields(klass):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if args else hint
        out[f.name] = (base, optional)
    return out


def coerce_value(value: Any, base: type, optional: bool, where: str) -> Any:
    """Check (and gently convert) one field value; a ConfigError naming ``where`` if it is wrong."""
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where} must not be null")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value.replace("_", ""))
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads "4e-4" (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _validate(obj: Any, section: str) -> None:
    """Coerce every field of a config dataclass to its declared type, checking choices."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        base, optional = types[f.name]
        where = f"{section}.{f.name}"
        value = coerce_value(getattr(obj, f.name), base, optional, where)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")
        object.__setattr__(obj, f.name, value)


# Instruction fine-tuning: the book's section 7.6 loop settings; the rest is TrainConfig's default.
BOOK_CH7_TRAIN: dict[str, Any] = {
    "lr": 5e-5,
    "weight_decay": 0.1,
    "max_epochs": 2,
    "batch_size": 8,
    "eval_interval": 5,
    "eval_batches": 5,
    "eval_at_start": True,
    "sample_interval": 5,
    "sample_tokens": 50,
    "keep_last": 1,
}
