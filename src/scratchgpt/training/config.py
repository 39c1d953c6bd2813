"""Training configuration: the loop's TrainConfig and the pretraining recipe's RunConfig.

Every recipe (pretraining, classification fine-tuning, instruction tuning) is described by one
config of the same shape: ``model`` (where the model comes from and what changes in it), ``data``
(what to train on), ``train`` (the loop's hyperparameters, :class:`TrainConfig`, the same for
every recipe) and, for the fine-tuning recipes, one section of their own (``classify:`` or
``instruct:``, declared in their task packages). What they share (dict/YAML round trips, dotted
overrides, presets, the run folder's ``config.yaml``) is :class:`RecipeConfig` in
``training.recipe``; field declaration and coercion are in ``training.fields``. Every field has
a command-line flag (see ``scratchgpt pretrain --help``), so any run can be repeated from its
folder alone.

This module does not import torch: the CLI builds its flags from these dataclasses at start-up.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from scratchgpt._moved import moved_constant
from scratchgpt.config import PRESETS as MODEL_PRESETS
from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike
from scratchgpt.training.fields import (
    coerce_value,
    config_from_dict,
    field_types,
    setting,
    validate_fields,
)
from scratchgpt.training.recipe import (
    RUN_CONFIG_FILE,
    RecipeConfig,
    list_presets,
    preset_mapping,
)

__all__ = [
    "RUN_CONFIG_FILE",
    "SECTIONS",
    "DataConfig",
    "ModelSpec",
    "RecipeConfig",
    "RunConfig",
    "TrainConfig",
    "coerce_value",
    "config_from_dict",
    "field_types",
    "file_overrides",
    "list_presets",
    "preset_mapping",
    "setting",
]


@dataclass
class TrainConfig:
    """Hyperparameters of the training loop (shared by every task)."""

    seed: int = setting(123, "seed for initialisation, data order and dropout")
    device: str = setting("auto", "cpu, cuda, cuda:N, mps, or auto (cuda when available)")
    precision: str = setting(
        "fp32",
        "fp32; bf16 autocast (CPU or GPU); auto: bf16 where the hardware has fast bf16",
        ("fp32", "bf16", "auto"),
    )
    compile: bool = setting(False, "wrap the model in torch.compile")
    strategy: str = setting(
        "ddp",
        "under torchrun: ddp (replicate the model) or fsdp (shard parameters, gradients and "
        "optimizer state with FSDP2); ignored in a single process",
        ("ddp", "fsdp"),
    )
    batch_size: int = setting(2, "sequences per micro-batch (one forward/backward)")
    grad_accum_steps: int = setting(
        1,
        "micro-batches per optimizer step; the global batch is batch_size * this * ranks "
        "(torchrun processes)",
    )
    max_steps: int | None = setting(None, "stop after this many optimizer steps")
    max_epochs: int | None = setting(None, "stop after this many passes over the training data")
    max_tokens: int | None = setting(None, "stop once this many training tokens have been seen")
    lr: float = setting(4e-4, "peak learning rate (AdamW)")
    schedule: str = setting(
        "constant",
        "learning-rate schedule after warm-up: constant, or cosine decay to min_lr",
        ("constant", "cosine"),
    )
    warmup_steps: int = setting(0, "steps of linear warm-up from warmup_init_lr to lr")
    warmup_init_lr: float = setting(0.0, "learning rate at step 0 of the warm-up")
    min_lr: float = setting(0.0, "learning rate at the end of the cosine decay")
    weight_decay: float = setting(0.1, "AdamW weight decay, applied to weight matrices only")
    decay_embeddings: bool = setting(
        True, "also decay the embedding tables (biases and norms are never decayed)"
    )
    decay_all_parameters: bool = setting(
        False,
        "decay every trainable parameter, biases and norm scales/shifts too, as the book's "
        "AdamW(model.parameters()) (default: weight matrices only)",
    )
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.999, "AdamW beta2")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    grad_clip: float = setting(0.0, "clip gradients to this global L2 norm (0: no clipping)")
    moe_aux_loss_coef: float = setting(
        0.001,
        "mixture-of-experts models: weight of the routers' load-balancing loss added to the "
        "training loss (Qwen3-MoE's router_aux_loss_coef; 0: off); ignored by dense models",
    )
    clip_during_warmup: bool = setting(
        True,
        "clip from the first step on; false: only from step warmup_steps on (the first step "
        "after warm-up), as the book's appendix D",
    )
    shuffle: bool = setting(
        True, "shuffle the training windows each epoch (seeded by seed + epoch)"
    )
    drop_last: bool = setting(True, "drop an incomplete last micro-batch of each epoch")
    num_workers: int = setting(0, "DataLoader worker processes")
    eval_interval: int = setting(
        5, "evaluate train/val loss every this many steps (0: only at the end)"
    )
    eval_batches: int = setting(5, "batches per evaluation (train and validation each)")
    eval_at_start: bool = setting(False, "also evaluate before the first step")
    step_labels: str = setting(
        "updates",
        "evaluation lines: updates (after every eval_interval updates, 'Step N' = N updates "
        "done) or book (as the book's train_model_simple: after updates 1, 1 + eval_interval, "
        "..., labelled Step 000000, 000005, ...); metrics.jsonl counts updates either way",
        ("updates", "book"),
    )
    log_interval: int = setting(1, "write a metrics.jsonl record every this many steps")
    sample_interval: int = setting(
        0, "print a text sample every this many steps (0: only at the end)"
    )
    sample_prompt: str = setting("Every effort moves you", "prompt of the text samples")
    sample_tokens: int = setting(50, "new tokens per sample (greedy; 0: no samples)")
    checkpoint_interval: int = setting(
        0, "save a checkpoint every this many steps (0: only at the end)"
    )
    keep_last: int = setting(2, "keep this many most recent checkpoints")
    keep_best: bool = setting(True, "also keep the checkpoint with the lowest validation loss")
    tensorboard: bool = setting(False, "also log to TensorBoard (needs the tensorboard package)")
    progress: bool = setting(True, "show a progress bar")
    plot: bool = setting(True, "write loss and learning-rate plots at the end")
    peak_tflops: float | None = setting(
        None, "the device's peak TFLOP/s for the MFU estimate (default: measured with a matmul)"
    )

    def __post_init__(self) -> None:
        validate_fields(self, "train")
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
            "moe_aux_loss_coef",
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

    source: str = setting(
        "the-verdict",
        "bundled text name (the-verdict), a UTF-8 text file, or a folder written by "
        "`scratchgpt prepare`",
    )
    tokenizer: str = setting(
        "gpt2",
        "gpt2, char (alphabet of the text), a saved tokenizer file (JSON), or a Hugging Face "
        "tokenizer folder (tokenizer.json: a Llama 3 or Qwen3 vocabulary)",
    )
    max_length: int = setting(256, "tokens per training window")
    stride: int | None = setting(None, "distance between window starts (default: max_length)")
    train_ratio: float = setting(0.9, "share of a text used for training; the rest validates")
    encoding_errors: str = setting(
        "strict", "invalid UTF-8 in a text file: strict (error) or replace", ("strict", "replace")
    )

    def __post_init__(self) -> None:
        validate_fields(self, "data")
        if self.max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {self.max_length!r}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {self.stride!r}")
        if not 0.0 < self.train_ratio <= 1.0:
            raise ConfigError(f"data.train_ratio must be in (0, 1], got {self.train_ratio!r}")


# ---------------------------------------------------------------------------------------------
# The model section of pretraining: a GPT preset plus overrides of GPTConfig's fields


# Help texts of the flags; a GPTConfig field without one (added later) still gets its flag.
_MODEL_HELP = {
    "vocab_size": "vocabulary size (default: the tokenizer's)",
    "context_length": "longest sequence the model accepts",
    "emb_dim": "embedding width",
    "n_heads": "attention heads",
    "n_layers": "transformer blocks",
    "drop_rate": "dropout rate",
    "qkv_bias": "bias in the query/key/value projections",
    "tie_weights": "share the token embedding with the output head",
    "attention": "attention implementation",
    "init": "weight initialisation",
    "ln_eps": "LayerNorm (GPT-2) or RMSNorm (Llama, Qwen3) epsilon",
    "family": "architecture: gpt2, llama3 (RoPE, RMSNorm, SwiGLU, GQA), qwen3 (+ QK-norm) or "
    "gemma3 (+ sliding windows, GeGLU, four norms per block)",
    "hidden_dim": "feed-forward width (default: 4 * emb_dim for gpt2)",
    "n_kv_groups": "key/value heads of grouped-query attention (default: n_heads)",
    "head_dim": "width of one attention head (default: emb_dim / n_heads)",
    "rope_base": "RoPE theta (llama3/qwen3)",
    "rope_scaling": "Llama 3 RoPE scaling as JSON: {factor, low_freq_factor, high_freq_factor, "
    "original_context_length}",
    "qk_norm": "RMSNorm on each head's queries and keys (qwen3)",
    "num_experts": "experts per mixture-of-experts layer (qwen3; unset: a dense model)",
    "num_experts_per_tok": "experts each token is routed to (top-k)",
    "moe_intermediate_size": "width of one expert's SwiGLU",
    "norm_topk_prob": "renormalise the top-k router weights to sum to 1",
    "decoder_sparse_step": "every this many blocks is a mixture-of-experts one",
    "sliding_window": "keys a local layer's query sees (gemma3; unset: every layer global)",
    "rope_local_base": "RoPE theta of the local layers (gemma3; default: rope_base)",
    "query_pre_attn_scalar": "attention scores are scaled by 1/sqrt(this) (default: head_dim)",
    "final_softcap": "soft-cap the logits at this value, cap * tanh(logits / cap)",
}


# What fine-tuning adds to a model (a classifier head, LoRA adapters) is set by the classify and
# instruct recipes' own sections, which build it in the book's order; int8 quantization is for
# inference (load_model(quantize=...), --quantize); pretraining has no flag for either.
_ADDED_BY_FINETUNING = ("num_classes", "lora", "quantization")
# Per-layer lists have no flag: a model pretrained here places Qwen3-MoE's dense layers with
# decoder_sparse_step, and keeps its preset's local/global pattern for Gemma 3's layer_types
# (repeated to the depth asked for); loaded folders bring their own lists.
_NO_FLAG = ("mlp_only_layers", "layer_types")


class _ModelSpecBase:
    """Behaviour of the generated ModelSpec dataclass."""

    def __post_init__(self) -> None:
        validate_fields(self, "model")

    def overrides(self) -> dict[str, Any]:
        """The GPTConfig fields set here (everything but the preset name)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name != "preset" and getattr(self, f.name) is not None
        }


def _override_field(name: str, hint: Any) -> tuple[str, Any, Any]:
    """(name, Optional type, field) of one GPTConfig field; Literal types become choices."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not Literal and type(None) in typing.get_args(hint):
        hint = args[0] if len(args) == 1 else hint  # already Optional: unwrap
    choices = None
    if typing.get_origin(hint) is Literal:
        choices = tuple(typing.get_args(hint))
        hint = type(choices[0])
    if dataclasses.is_dataclass(hint):
        hint = dict  # a nested setting (rope_scaling): an object in files, JSON on the command line
    help_text = _MODEL_HELP.get(name, f"GPTConfig.{name} (default: the preset's)")
    return name, hint | None, setting(None, help_text, choices)


def _model_spec_class() -> type:
    """ModelSpec, generated from GPTConfig's fields so a new field needs no second declaration."""
    hints = typing.get_type_hints(GPTConfig)
    presets = ", ".join(MODEL_PRESETS)
    specs: list[tuple[str, Any, Any]] = [
        ("preset", str, setting("gpt2-small", f"model preset ({presets})"))
    ]
    specs += [
        _override_field(f.name, hints[f.name])
        for f in dataclasses.fields(GPTConfig)
        if f.name not in _ADDED_BY_FINETUNING + _NO_FLAG
    ]
    cls = dataclasses.make_dataclass("ModelSpec", specs, bases=(_ModelSpecBase,))
    cls.__module__ = __name__
    cls.__doc__ = (
        "A GPT preset plus overrides, one per GPTConfig field; None keeps the preset's value. "
        "The vocabulary size defaults to the tokenizer's."
    )
    return cls


ModelSpec: Any = _model_spec_class()


@dataclass(init=False)
class RunConfig(RecipeConfig):
    """Everything a pretraining run needs besides its output folder."""

    model: ModelSpec
    data: DataConfig
    train: TrainConfig

    SECTIONS: ClassVar[dict[str, type]] = {
        "model": ModelSpec,
        "data": DataConfig,
        "train": TrainConfig,
    }
    RECIPE: ClassVar[str] = "pretrain"


# The pretraining sections (the shared flag builders of the CLI default to them).
SECTIONS: dict[str, type] = RunConfig.SECTIONS


def file_overrides(path: PathLike) -> dict[str, Any]:
    """The fields a pretraining config file sets, as dotted keys."""
    return RunConfig.file_overrides(path)


# The book's loop settings moved into presets/book-ch7.yaml.
__getattr__ = moved_constant(
    "scratchgpt.training.config.BOOK_CH7_TRAIN",
    lambda: dict(preset_mapping("book-ch7")["train"]),
    "the book's chapter-7 settings are the preset book-ch7 (preset_mapping('book-ch7')['train'])",
)
