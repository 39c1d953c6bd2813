"""Pretraining (the book's chapter 5): next-token prediction on a text or on token shards.

The recipe is :class:`PretrainConfig` (``RunConfig``: ``model`` / ``data`` / ``train``, presets
``book-ch5`` and ``char-small``) + :class:`PretrainTask` + :func:`run`, the same shape as the
fine-tuning recipes. ``pretrain(config, out_dir)`` (= ``run``) is the whole job: tokenizer and data from ``config.data``, a GPT
from ``config.model``, then the shared training loop. ``calc_loss_batch`` and
``calc_loss_loader`` are the book's functions of section 5.1, for readers who follow along.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, read_text
from scratchgpt.model_presets import PRESETS as MODEL_PRESETS
from scratchgpt.model_presets import repeat_layer_pattern
from scratchgpt.training.config import RUN_CONFIG_FILE, DataConfig, RunConfig
from scratchgpt.training.distributed import print0
from scratchgpt.training.loop import TrainResult, train
from scratchgpt.training.run_dir import hold_run_dir
from scratchgpt.training.task import Task, next_token_loss

# The pretraining recipe's config (RunConfig is its older name, still the class itself).
PretrainConfig = RunConfig


def calc_loss_batch(
    input_batch: torch.Tensor, target_batch: torch.Tensor, model: nn.Module, device: Any = None
) -> torch.Tensor:
    """Mean next-token cross-entropy of one batch (book section 5.1.2)."""
    if device is not None:
        input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    return next_token_loss(model, input_batch, target_batch)


def calc_loss_loader(
    data_loader: Iterable[Any], model: nn.Module, device: Any = None, num_batches: int | None = None
) -> float:
    """Mean of ``calc_loss_batch`` over the first ``num_batches`` batches (book section 5.1.3);
    NaN for an empty loader, as the book's."""
    total, count = 0.0, 0
    n = len(data_loader) if num_batches is None else num_batches  # type: ignore[arg-type]
    if n == 0:
        return float("nan")
    with torch.no_grad():
        for i, (inputs, targets) in enumerate(data_loader):
            if i >= n:
                break
            total += float(calc_loss_batch(inputs, targets, model, device))
            count += 1
    return total / count if count else float("nan")


class PretrainTask(Task):
    """Next-token prediction: batches are ``(inputs, targets)`` id tensors of shape (B, T)."""

    name = "pretrain"

    def __init__(
        self,
        tokenizer: Any = None,
        sample_prompt: str = "Every effort moves you",
        sample_tokens: int = 50,
    ) -> None:
        self.tokenizer = tokenizer
        self.sample_prompt = sample_prompt
        self.sample_tokens = sample_tokens
        if tokenizer is not None and sample_tokens > 0 and sample_prompt:
            # Fail now rather than at the first sample, possibly hours into the run.
            from scratchgpt.errors import Advice, TokenizerError

            try:
                tokenizer.encode(sample_prompt)
            except TokenizerError as e:
                raise ConfigError(
                    f"train.sample_prompt {sample_prompt!r} cannot be encoded by the tokenizer "
                    f"({e.message})",
                    Advice(
                        "choose another train.sample_prompt or set train.sample_tokens to 0",
                        "choose another --sample-prompt or pass --sample-tokens 0",
                        "--sample-prompt",
                    ),
                ) from None

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return calc_loss_batch(inputs, targets, model)

    def count_tokens(self, batch: Any) -> int:
        return int(batch[1].numel())

    def sample(self, model: nn.Module) -> str | None:
        """Greedy continuation of the fixed prompt, printed with the prompt (as the book does)."""
        if self.tokenizer is None or self.sample_tokens <= 0 or not self.sample_prompt:
            return None
        from scratchgpt.generation import generate_text

        text = generate_text(
            model,
            self.tokenizer,
            self.sample_prompt,
            max_new_tokens=self.sample_tokens,
            temperature=0.0,
        )
        return self.sample_prompt + str(text)


# ---------------------------------------------------------------------------------------------
# Data


def _load_source_text(data: DataConfig) -> tuple[str, str]:
    """(text, description) of a bundled name or a text file."""
    from scratchgpt.data.sources import SOURCES, load_text

    if data.source in SOURCES and not Path(data.source).exists():
        return load_text(data.source), f"bundled {data.source!r}"
    p = Path(data.source)
    if not p.exists():
        raise DataError(
            f"data.source {data.source!r}: no such file or folder, and not a bundled text "
            f"(bundled: {', '.join(sorted(SOURCES))})"
        )
    return read_text(p, errors=data.encoding_errors), str(p)


def make_tokenizer(name: str, corpus: str | None = None) -> Any:
    """The tokenizer of ``data.tokenizer``: gpt2, char/simple (built from ``corpus``), a saved
    tokenizer file, or a Hugging Face tokenizer (a model folder or its tokenizer.json: Llama 3's
    or Qwen3's vocabulary for a model of that family pretrained here)."""
    from scratchgpt.tokenizers import get_tokenizer, load_tokenizer

    if Path(name).is_file() or (Path(name) / "tokenizer.json").is_file():
        return load_tokenizer(name)
    if name in ("char", "simple"):
        if corpus is None:
            raise ConfigError(
                f"data.tokenizer {name!r} builds its vocabulary from a text; with token shards "
                "the tokenizer comes from the prepared folder"
            )
        return get_tokenizer(name, corpus=corpus)
    return get_tokenizer(name)


def build_pretraining_data(data: DataConfig) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(tokenizer, train dataset, validation dataset or None, info) for ``data``.

    A text is split by characters (the first ``train_ratio`` for training, the rest for
    validation, as in the book's section 5.1.3) and each part is cut into windows. A folder from
    ``scratchgpt prepare`` gives its train and val shards and its own tokenizer.
    """
    from scratchgpt.data.pretraining import ShardDataset, SlidingWindowDataset

    stride = data.stride or data.max_length
    src = Path(data.source)
    if src.is_dir():
        from scratchgpt.fileio import read_json

        meta_path = src / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                f"{src}: a data folder needs meta.json; write it with `scratchgpt prepare`"
            )
        meta = read_json(meta_path)
        tok_file = meta.get("tokenizer_file") if isinstance(meta, dict) else None
        if data.tokenizer != "gpt2" and Path(data.tokenizer).is_file():
            tokenizer = make_tokenizer(data.tokenizer)
        elif tok_file:
            tokenizer = make_tokenizer(str(src / tok_file))
        else:
            tokenizer = make_tokenizer("gpt2")
        train_ds = ShardDataset(src, "train", data.max_length, stride)
        val_ds = None
        if meta.get("shards", {}).get("val"):
            try:
                val_ds = ShardDataset(src, "val", data.max_length, stride)
            except DataError as e:
                warnings.warn(f"no validation loss: {e}", stacklevel=2)
        info = {
            "source": str(src),
            "train_tokens": train_ds.num_tokens,
            "val_tokens": val_ds.num_tokens if val_ds is not None else 0,
        }
        return tokenizer, train_ds, val_ds, info

    text, what = _load_source_text(data)
    tokenizer = make_tokenizer(data.tokenizer, corpus=text)
    split = int(data.train_ratio * len(text))
    train_text, val_text = text[:split], text[split:]
    if not train_text:
        raise DataError(
            f"{what}: the training part is empty; raise data.train_ratio or use more text"
        )
    train_ds = SlidingWindowDataset(train_text, tokenizer, data.max_length, stride)
    val_ds = None
    if val_text:
        try:
            val_ds = SlidingWindowDataset(val_text, tokenizer, data.max_length, stride)
        except DataError as e:
            warnings.warn(
                f"no validation loss: the validation part of {what} is too short ({e})",
                stacklevel=2,
            )
    info = {
        "source": what,
        "characters": len(text),
        "train_tokens": train_ds.num_tokens,
        "val_tokens": val_ds.num_tokens if val_ds is not None else 0,
    }
    return tokenizer, train_ds, val_ds, info


def resolve_model_config(config: RunConfig, tokenizer: Any) -> GPTConfig:
    """The GPTConfig of a run: preset + overrides, vocabulary from the tokenizer by default."""
    overrides = config.model.overrides()
    tok_vocab = int(tokenizer.vocab_size)
    overrides.setdefault("vocab_size", tok_vocab)
    preset_types = MODEL_PRESETS.get(config.model.preset, {}).get("layer_types")
    if preset_types and overrides.get("n_layers", len(preset_types)) != len(preset_types):
        # A deeper or shallower Gemma keeps its preset's local/global pattern.
        overrides["layer_types"] = repeat_layer_pattern(preset_types, overrides["n_layers"])
    cfg = GPTConfig.from_preset(config.model.preset, **overrides)
    if cfg.vocab_size < tok_vocab:
        raise ConfigError(
            f"model.vocab_size ({cfg.vocab_size}) is smaller than the tokenizer's vocabulary "
            f"({tok_vocab}); leave it unset to use the tokenizer's"
        )
    if cfg.context_length < config.data.max_length:
        raise ConfigError(
            f"data.max_length ({config.data.max_length}) exceeds the model's context_length "
            f"({cfg.context_length}); use shorter windows or a longer context"
        )
    return cfg


def pretrain(
    config: RunConfig | dict | PathLike | str = "book-ch5",
    out_dir: PathLike = "runs/pretrain",
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> TrainResult:
    """Pretrain a GPT as ``config`` says (a RunConfig, a dict, a YAML/JSON file or a preset
    name) and write the run into ``out_dir``."""
    cfg = RunConfig.coerce(config)
    tokenizer, train_ds, val_ds, info = build_pretraining_data(cfg.data)
    model_cfg = resolve_model_config(cfg, tokenizer)
    with hold_run_dir(out_dir, overwrite=overwrite, resume=resume) as run_dir:
        cfg.save(run_dir / RUN_CONFIG_FILE)
        torch.manual_seed(cfg.train.seed)
        from scratchgpt.model import build_model

        model = build_model(model_cfg)
        n_params = model.num_parameters()
        print0(
            f"model: {n_params:,} parameters ({cfg.model.preset}: {model_cfg.family}, {model_cfg.n_layers} layers, "
            f"emb {model_cfg.emb_dim}, context {model_cfg.context_length}, vocab {model_cfg.vocab_size}); "
            f"data: {info['source']}, {info['train_tokens']:,} train / {info['val_tokens']:,} val tokens, "
            f"{len(train_ds)} training windows",
            flush=True,
        )
        task = PretrainTask(tokenizer, cfg.train.sample_prompt, cfg.train.sample_tokens)
        run_config = {**cfg.to_dict(), "resolved_model": model_cfg.to_dict(), "data_info": info}
        return train(
            model,
            task,
            train_ds,
            val_ds,
            cfg.train,
            run_dir,
            tokenizer=tokenizer,
            run_config=run_config,
            resume=resume,
            metadata={"task": "pretrain"},
            argv=argv,
        )


# The recipe's entry point, the same shape as classification's and instruction tuning's.
run = pretrain
