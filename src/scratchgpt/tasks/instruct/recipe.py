"""The instruction-tuning recipe (the book's chapter 7) on the shared training loop.

``run(config, out_dir)`` is the whole job: a base model (a scratchgpt checkpoint or GPT-2
weights), instruction records split 85/10/5 in file order, :class:`InstructTask` (next-token loss
that ignores padding, and optionally the prompt), the loop with the book's settings (the preset
``book-ch7``), then greedy responses for the test split written to ``responses.json``. The
prompt style goes into every checkpoint's metadata, so ``respond`` and ``chat`` format prompts
the way the model was trained.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchgpt.data.instructions import (
    InstructionCollator,
    InstructionDataset,
    load_instruction_records,
    split_records,
)
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike
from scratchgpt.tasks.instruct.config import InstructConfig
from scratchgpt.tasks.instruct.loading import (
    load_base_model,
    load_instruct_model,
    pad_id_for,
    prepare_for_training,
    resolve_prompt_style,
)
from scratchgpt.tasks.instruct.responses import answer_test_split
from scratchgpt.tasks.instruct.task import InstructTask
from scratchgpt.training.config import RUN_CONFIG_FILE
from scratchgpt.training.distributed import print0
from scratchgpt.training.loop import TrainResult, train
from scratchgpt.training.run_dir import hold_run_dir


@dataclass
class InstructResult:
    """What ``finetune_instruct`` returns."""

    train: TrainResult
    run_dir: Path
    responses_path: Path | None
    split_sizes: dict[str, int]
    initial_val_loss: float | None
    val_loss: float | None


def build_instruction_data(
    cfg: InstructConfig, tokenizer: Any, context_length: int
) -> tuple[Any, Any, list[dict[str, str]], list[dict[str, str]], InstructionCollator]:
    """(train dataset, val dataset or None, test records, val records, collate) for ``cfg``."""
    data, style = cfg.data, cfg.instruct.prompt_style
    records = load_instruction_records(data.source, fields=data.fields)
    train_recs, test_recs, val_recs = split_records(records, data.train_frac, data.test_frac)
    train_ds = InstructionDataset(train_recs, tokenizer, style)
    val_ds = InstructionDataset(val_recs, tokenizer, style) if val_recs else None
    max_len = data.allowed_max_length or context_length
    if max_len > context_length:
        raise ConfigError(
            f"allowed_max_length {max_len} exceeds the model's context length {context_length}"
        )
    collate = InstructionCollator(
        pad_token_id=pad_id_for(tokenizer),
        allowed_max_length=max_len,
        mask_prompt=cfg.instruct.mask_prompt,
    )
    return train_ds, val_ds, test_recs, val_recs, collate


def _as_config(config: InstructConfig | Mapping[str, Any] | PathLike) -> InstructConfig:
    if not isinstance(config, Mapping) or set(config) <= set(InstructConfig.SECTIONS):
        return InstructConfig.coerce(dict(config) if isinstance(config, Mapping) else config)
    warnings.warn(
        "finetune_instruct(flat dict) is deprecated; pass an InstructConfig or a dict of its "
        f"sections {list(InstructConfig.SECTIONS)}",
        DeprecationWarning,
        stacklevel=3,
    )
    return InstructConfig.from_flat_dict(dict(config))


def _say(text: str) -> None:
    print0(text, flush=True)


def _describe(cfg: InstructConfig, model: Any, sizes: dict[str, int], prep: dict) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opts = cfg.instruct
    _say(
        f"model: {n_params:,} parameters ({n_train:,} trained"
        + (f", LoRA rank {opts.lora_rank}" if prep["lora"] else "")
        + f") from {cfg.model.checkpoint or cfg.model.gpt2}, dropout {model.cfg.drop_rate}"
        + (", output head untied (its own copy of the token embeddings)" if prep["untied"] else "")
        + f"; data: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test records, "
        f"prompt style {opts.prompt_style}"
        + (", prompt masked in the loss" if opts.mask_prompt else "")
        + f"; responses prompted as {opts.response_prompt}"
    )


def finetune_instruct(
    config: InstructConfig | Mapping[str, Any] | PathLike,
    out_dir: PathLike = "runs/instruct",
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> InstructResult:
    """Fine-tune a GPT on instruction records as ``config`` says (an InstructConfig, a dict of
    its sections, a YAML/JSON file or a preset name) and write the run (config.yaml,
    checkpoints, metrics, plots, ``responses.json`` for the test split) into ``out_dir``."""
    cfg = _as_config(config)
    m = cfg.model
    loaded = load_instruct_model(m.checkpoint) if m.checkpoint else load_base_model(gpt2=m.gpt2)
    model, tokenizer = loaded.model, loaded.tokenizer
    opts = cfg.instruct
    opts.prompt_style = resolve_prompt_style(opts.prompt_style, tokenizer, model.cfg.family)
    train_ds, val_ds, test_recs, val_recs, collate = build_instruction_data(
        cfg, tokenizer, loaded.config.context_length
    )
    if val_ds is None:
        print("warning: the validation split is empty: no validation loss", file=sys.stderr)
    with hold_run_dir(out_dir, overwrite=overwrite, resume=resume) as run_dir:
        cfg.save(run_dir / RUN_CONFIG_FILE)
        prep = prepare_for_training(model, cfg)
        model.train()
        sizes = {"train": len(train_ds), "test": len(test_recs), "val": len(val_recs)}
        _describe(cfg, model, sizes, prep)
        task = InstructTask(
            tokenizer,
            cfg.instruct.prompt_style,
            sample_entry=val_recs[0] if val_recs else None,
            sample_tokens=cfg.train.sample_tokens,
        )
        metadata = {
            "task": "instruct",
            "prompt_style": cfg.instruct.prompt_style,
            "base_model": m.checkpoint or m.gpt2,
            "mask_prompt": cfg.instruct.mask_prompt,
            "lora": prep["lora"],
        }
        run_config = {**cfg.to_dict(), "resolved_model": model.cfg.to_dict()}
        result = train(
            model, task, train_ds, val_ds, cfg.train, run_dir, tokenizer=tokenizer,
            run_config=run_config, resume=resume, collate_fn=collate, metadata=metadata, argv=argv,
        )  # fmt: skip
        responses_path = None
        if cfg.instruct.responses and result.status != "interrupted" and test_recs:
            responses_path, n = answer_test_split(
                model, tokenizer, test_recs, cfg.instruct, run_dir, progress=cfg.train.progress
            )
            _say(f"wrote {n} test responses to {responses_path}")
        return InstructResult(
            train=result,
            run_dir=run_dir,
            responses_path=responses_path,
            split_sizes=sizes,
            initial_val_loss=_initial_val_loss(run_dir),
            val_loss=result.val_loss,
        )


# The recipe's entry point, the same shape as pretraining's and classification's.
run = finetune_instruct


def _initial_val_loss(run_dir: Path) -> float | None:
    """The step-0 validation loss from metrics.jsonl (with ``eval_at_start``)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step") == 0 and "val_loss" in rec:
            return float(rec["val_loss"])
    return None


def load_instruct_config(run_dir: PathLike) -> InstructConfig:
    """The InstructConfig saved in a run folder (``config.yaml``, or the
    ``instruct_config.json`` of older releases), for ``--resume``."""
    if InstructConfig.saved_dict(run_dir) is None:
        raise DataError(
            f"{Path(run_dir) / RUN_CONFIG_FILE}: not found; {run_dir} is not an instruction "
            "fine-tuning run"
        )
    return InstructConfig.from_run_dir(run_dir)
