"""The preference-tuning recipe (the book's ``ch07/04_preference-tuning-with-dpo``) on the shared
training loop.

``run(config, out_dir)`` is the whole job: the policy (an instruction-tuned checkpoint), preference
records split 85/10/5 in file order, :class:`DPOTask` against a reference model (a frozen copy of
the policy as it starts, or with LoRA the policy with its adapters off), the loop with the book's
settings (the preset ``book-dpo``), then greedy responses for the test split written to
``responses.json``, as instruction tuning writes them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchgpt.data.chat_style import AUTO_STYLE
from scratchgpt.data.instructions import load_preference_records, split_records
from scratchgpt.data.preferences import PreferenceCollator, PreferenceDataset
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike
from scratchgpt.tasks.dpo.config import DPOConfig
from scratchgpt.tasks.dpo.task import DPOTask, reference_copy
from scratchgpt.tasks.instruct.loading import (
    load_base_model,
    pad_id_for,
    prepare_for_training,
    resolve_prompt_style,
)
from scratchgpt.tasks.instruct.responses import answer_test_split
from scratchgpt.training.config import RUN_CONFIG_FILE
from scratchgpt.training.distributed import print0
from scratchgpt.training.loop import TrainResult, train
from scratchgpt.training.run_dir import hold_run_dir


@dataclass
class DPOResult:
    """What ``finetune_dpo`` returns."""

    train: TrainResult
    run_dir: Path
    responses_path: Path | None
    split_sizes: dict[str, int]


def build_preference_data(
    cfg: DPOConfig, tokenizer: Any, context_length: int
) -> tuple[PreferenceDataset, PreferenceDataset | None, list, list, PreferenceCollator]:
    """(train pairs, val pairs or None, test records, val records, collate) for ``cfg``."""
    data, style = cfg.data, cfg.dpo.prompt_style
    records = load_preference_records(data.source, fields=data.fields)
    train_recs, test_recs, val_recs = split_records(records, data.train_frac, data.test_frac)
    train_ds = PreferenceDataset(train_recs, tokenizer, style)
    val_ds = PreferenceDataset(val_recs, tokenizer, style) if val_recs else None
    max_len = data.allowed_max_length or context_length
    if max_len > context_length:
        raise ConfigError(
            f"allowed_max_length {max_len} exceeds the model's context length {context_length}"
        )
    collate = PreferenceCollator(pad_token_id=pad_id_for(tokenizer), allowed_max_length=max_len)
    return train_ds, val_ds, test_recs, val_recs, collate


def _say(text: str) -> None:
    print0(text, flush=True)


def finetune_dpo(
    config: DPOConfig | Mapping[str, Any] | PathLike,
    out_dir: PathLike = "runs/dpo",
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> DPOResult:
    """Preference-tune a model with DPO as ``config`` says (a DPOConfig, a dict of its sections,
    a YAML/JSON file or a preset name) and write the run (config.yaml, checkpoints, metrics with
    rewards, plots, ``responses.json`` for the test split) into ``out_dir``."""
    cfg = DPOConfig.coerce(dict(config) if isinstance(config, Mapping) else config)
    m, opts = cfg.model, cfg.dpo
    loaded = load_base_model(m.checkpoint, m.gpt2)
    model, tokenizer = loaded.model, loaded.tokenizer
    style = opts.prompt_style
    if style == AUTO_STYLE and loaded.metadata.get("prompt_style"):
        style = loaded.metadata["prompt_style"]  # the style the policy was instruction-tuned in
    opts.prompt_style = resolve_prompt_style(style, tokenizer, model.cfg.family)
    train_ds, val_ds, test_recs, val_recs, collate = build_preference_data(
        cfg, tokenizer, loaded.config.context_length
    )
    if val_ds is None:
        print("warning: the validation split is empty: no validation metrics", file=sys.stderr)
    with hold_run_dir(out_dir, overwrite=overwrite, resume=resume) as run_dir:
        cfg.save(run_dir / RUN_CONFIG_FILE)
        prep = prepare_for_training(model, cfg, opts)
        # The reference is the policy as it starts; with LoRA that is the model with its
        # adapters off, so no copy is needed.
        reference = None if prep["lora"] else reference_copy(model)
        model.train()
        sizes = {"train": len(train_ds), "test": len(test_recs), "val": len(val_recs)}
        _describe(cfg, model, sizes, prep)
        task = DPOTask(
            reference,
            beta=opts.beta,
            logprob=opts.logprob,
            tokenizer=tokenizer,
            style=opts.prompt_style,
            sample_entry=val_recs[0] if val_recs else None,
            sample_tokens=cfg.train.sample_tokens,
        )
        metadata = {
            "task": "dpo",
            "prompt_style": opts.prompt_style,
            "base_model": m.checkpoint or m.gpt2,
            "beta": opts.beta,
            "lora": prep["lora"],
        }
        run_config = {**cfg.to_dict(), "resolved_model": model.cfg.to_dict()}
        result = train(
            model, task, train_ds, val_ds, cfg.train, run_dir, tokenizer=tokenizer,
            run_config=run_config, resume=resume, collate_fn=collate, metadata=metadata, argv=argv,
        )  # fmt: skip
        responses_path = None
        if opts.responses and result.status != "interrupted" and test_recs:
            responses_path, n = answer_test_split(
                model, tokenizer, test_recs, opts, run_dir, progress=cfg.train.progress
            )
            _say(f"wrote {n} test responses to {responses_path}")
        return DPOResult(
            train=result, run_dir=run_dir, responses_path=responses_path, split_sizes=sizes
        )


# The recipe's entry point, the same shape as the other recipes'.
run = finetune_dpo


def _describe(cfg: DPOConfig, model: Any, sizes: dict[str, int], prep: dict) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opts = cfg.dpo
    _say(
        f"model: {n_params:,} parameters ({n_train:,} trained"
        + (f", LoRA rank {opts.lora_rank}" if prep["lora"] else "")
        + f") from {cfg.model.checkpoint or cfg.model.gpt2}; reference: "
        + ("the same model with its LoRA adapters off" if prep["lora"] else "a frozen copy")
        + f"; DPO beta {opts.beta}, {opts.logprob} log-probability of the response tokens; "
        f"data: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test pairs, "
        f"prompt style {opts.prompt_style}"
    )
