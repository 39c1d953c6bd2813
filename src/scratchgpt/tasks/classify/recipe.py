"""The classification recipe (the book's chapter 6, appendix E's LoRA as an option).

``run(config, out_dir)`` is the whole job: the labelled splits, the starting model with its new
head, :class:`ClassifyTask` on the shared loop (``scratchgpt.training.train``), then the metrics
of every split in ``classification_report.json``. The checkpoints carry ``task: classify``, the
label names and the padding settings in their metadata, so ``load_classifier`` and ``classify``
rebuild the classifier from the folder alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, atomic_write_json
from scratchgpt.tasks.classify.book import book_note
from scratchgpt.tasks.classify.config import (
    EPOCH_EVAL_FIELDS,
    FINETUNE_CONFIG_FILE,
    ClassifyConfig,
    ClassifyData,
)
from scratchgpt.tasks.classify.loading import classifier_metadata, load_base_model, make_classifier
from scratchgpt.tasks.classify.metrics import (
    classification_metrics,
    format_report,
    plot_accuracy,
    predict_dataset,
)
from scratchgpt.tasks.classify.task import ClassifyTask, set_dropout
from scratchgpt.training.config import RUN_CONFIG_FILE, TrainConfig, preset_mapping
from scratchgpt.training.distributed import print0
from scratchgpt.training.loop import train
from scratchgpt.training.run_dir import hold_run_dir
from scratchgpt.training.setup import resolve_device

REPORT_FILE = "classification_report.json"
ADAPTERS_FILE = "adapters.safetensors"


@dataclass
class FinetuneResult:
    """A finished classification run: the loop's result and the final metrics."""

    train_result: Any
    report: dict[str, Any]
    run_dir: Path


@dataclass
class _Data:
    """The three splits as datasets, with what the run prints and stores about them."""

    splits: Any
    train: Any
    val: Any
    test: Any
    labels: list[str]
    max_length: int
    pad_id: int


def build_splits(data: ClassifyData, labels: list[str] | None = None) -> Any:
    """The train/val/test splits of ``data`` (the book's split of the bundled spam set)."""
    from scratchgpt.data.classification import load_labelled, spam_splits

    if data.source == "spam" and not Path("spam").exists():
        return spam_splits(random_state=data.split_seed)
    return load_labelled(
        data.source,
        text_column=data.text_column,
        label_column=data.label_column,
        split_column=data.split_column,
        label_names=labels,
        fmt=data.format,
        train_frac=data.train_frac,
        val_frac=data.val_frac,
        random_state=data.split_seed,
    )


def size_eval_to_epochs(cfg: ClassifyConfig, n_train: int, n_val: int) -> ClassifyConfig:
    """``cfg`` with the ``classify.epoch_eval`` fields of ``train`` set from the split sizes:
    eval_interval = steps per epoch, eval_batches = every validation batch."""
    t = cfg.train
    changes: dict[str, Any] = {}
    if n_train and "eval_interval" in cfg.classify.epoch_eval:
        changes["eval_interval"] = max(1, n_train // t.batch_size // t.grad_accum_steps)
    if n_val and "eval_batches" in cfg.classify.epoch_eval:
        changes["eval_batches"] = max(1, math.ceil(n_val / t.batch_size))
    return cfg.with_overrides(
        {**{f"train.{k}": v for k, v in changes.items()}, "classify.epoch_eval": []}
    )


def _build_datasets(cfg: ClassifyConfig, tokenizer: Any, ctx: int, say: Callable) -> _Data:
    """Tokenized, padded splits; the padding length is the longest training text (at most the
    model's context) unless ``data.max_length`` is given."""
    from scratchgpt.data.classification import ClassificationDataset

    splits = build_splits(cfg.data, cfg.classify.labels)
    if not len(splits.train):
        raise DataError(f"{cfg.data.source}: the training split is empty")
    pad_id = tokenizer.eot_id if getattr(tokenizer, "eot_id", None) is not None else 0
    max_length = cfg.data.max_length
    if max_length is not None and max_length > ctx:
        raise ConfigError(f"--max-length {max_length} exceeds the model's context_length {ctx}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if max_length is None:
            longest = max(len(tokenizer.encode(t)) for t in splits.train.texts)
            if longest > ctx:
                say(
                    f"warning: the longest training text has {longest} tokens, more than the "
                    f"model's context_length {ctx}; texts are truncated to {ctx}"
                )
                max_length = ctx
        train_ds = ClassificationDataset(
            splits.train, tokenizer, max_length, pad_id, name="training"
        )
        max_length = train_ds.max_length
        val_ds = ClassificationDataset(splits.val, tokenizer, max_length, pad_id, name="validation")
        test_ds = ClassificationDataset(splits.test, tokenizer, max_length, pad_id, name="test")
    for w in caught:
        say(f"warning: {w.message}")
    labels = splits.train.label_names
    return _Data(splits, train_ds, val_ds, test_ds, labels, max_length, pad_id)


def _lora_settings(cfg: ClassifyConfig) -> dict[str, Any] | None:
    c = cfg.classify
    if c.trainable != "lora":
        return None
    return {"rank": c.lora_rank, "alpha": c.lora_alpha, "targets": c.lora_targets}


def _describe(cfg: ClassifyConfig, data: _Data, model: nn.Module, base: str, say: Callable) -> None:
    sizes = data.splits.sizes()
    say(
        f"data: {data.splits.info.get('source', cfg.data.source)}: {sizes['train']:,} train / "
        f"{sizes['val']:,} validation / {sizes['test']:,} test texts; labels "
        + ", ".join(f"{n} ({c})" for n, c in data.splits.train.counts().items())
        + f" in train; padded/truncated to {data.max_length} tokens"
    )
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    c = cfg.classify
    say(
        f"model: {base}, {model.cfg.n_layers} layers, emb {model.cfg.emb_dim}; head "
        f"Linear({model.cfg.emb_dim}, {len(data.labels)}); trainable: {c.trainable}"
        + (f" (rank {c.lora_rank}, alpha {c.lora_alpha})" if c.trainable == "lora" else "")
        + f", {n_trainable:,} of {n_total:,} parameters"
    )
    note = book_note(cfg, model)
    if note is not None:
        say(note)


def _report(
    cfg: ClassifyConfig, data: _Data, model: nn.Module, result: Any, train_s: float
) -> dict[str, Any]:
    """Metrics of every split (and how the run ended), for classification_report.json."""
    device = resolve_device(cfg.train.device)
    sizes = data.splits.sizes()
    report: dict[str, Any] = {"labels": data.labels, "sizes": sizes, "train_seconds": train_s}
    for name, ds in (("train", data.train), ("val", data.val), ("test", data.test)):
        if len(ds) == 0:
            continue
        y, p, loss = predict_dataset(
            model,
            ds,
            batch_size=max(cfg.train.batch_size, 32),
            device=device,
            desc=f"accuracy on {name}",
            progress=None if cfg.train.progress else False,
        )
        report[name] = {**classification_metrics(y, p, data.labels), "loss": loss}
    report["status"] = result.status
    report["steps"] = result.steps
    report["checkpoint"] = str(result.last_checkpoint) if result.last_checkpoint else None
    return report


def _write_outputs(
    cfg: ClassifyConfig, model: nn.Module, run_dir: Path, report: dict, base: str, say: Callable
) -> None:
    """The report (file and printout), the LoRA adapters and the accuracy plot."""
    labels = report["labels"]
    atomic_write_json(run_dir / REPORT_FILE, report)
    parts = [
        f"{n} {report[n]['accuracy'] * 100:.2f}%" for n in ("train", "val", "test") if n in report
    ]
    say("accuracy: " + ", ".join(parts))
    if "test" in report:
        say(format_report(report["test"], labels, "test"))
    if _lora_settings(cfg) is not None:
        from scratchgpt.model.lora import save_lora_adapters

        save_lora_adapters(
            model, run_dir / ADAPTERS_FILE, extra=["out_head.linear.weight", "out_head.linear.bias"]
            if "head" in cfg.classify.lora_targets else ["out_head.weight", "out_head.bias"],
            metadata={"label_names": labels, "base_model": base}, overwrite=True,
        )  # fmt: skip
    if cfg.train.plot:
        try:
            bs = cfg.train.batch_size * cfg.train.grad_accum_steps
            plot_accuracy(run_dir, bs)
        except Exception as e:  # a plot must never cost a finished run its result
            warnings.warn(f"could not write the accuracy plot: {e}", stacklevel=2)


def run(
    config: ClassifyConfig | dict[str, Any] | PathLike,
    out_dir: PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
    log: Any = None,
) -> FinetuneResult:
    """Fine-tune a classifier as ``config`` says (a ClassifyConfig, a dict of its sections or a
    YAML/JSON file) on the shared training loop, evaluate it on every split and write the run
    (config.yaml, checkpoints, report, plots) into ``out_dir``."""
    say = functools.partial(print0, writer=log, flush=True)
    config = ClassifyConfig.coerce(config)
    model, tokenizer, base = load_base_model(config.model)
    data = _build_datasets(config, tokenizer, model.cfg.context_length, say)
    cfg = size_eval_to_epochs(config, len(data.splits.train), len(data.splits.val))
    torch.manual_seed(cfg.train.seed)
    drop_rate = cfg.model.drop_rate
    if drop_rate is None and cfg.model.random_init is None:
        drop_rate = 0.0  # the book fine-tunes loaded weights without dropout (GPT-2 says 0.1)
    if drop_rate is not None:
        set_dropout(model, drop_rate)
    c = cfg.classify
    make_classifier(
        model, len(data.labels), trainable=c.trainable, train_blocks=c.train_blocks,
        lora_rank=c.lora_rank, lora_alpha=c.lora_alpha, lora_targets=c.lora_targets,
    )  # fmt: skip
    with hold_run_dir(out_dir, overwrite=overwrite, resume=resume) as run_dir:
        cfg.save(run_dir / RUN_CONFIG_FILE)
        _describe(cfg, data, model, base, say)
        metadata = classifier_metadata(
            data.labels, data.max_length, data.pad_id, trainable=c.trainable,
            lora=_lora_settings(cfg), base=base,
        )  # fmt: skip
        sizes = data.splits.sizes()
        run_config = {
            **cfg.to_dict(),
            "resolved_model": model.cfg.to_dict(),
            "data_info": {**data.splits.info, "sizes": sizes, "labels": data.labels,
                          "max_length": data.max_length},
        }  # fmt: skip
        t0 = time.perf_counter()
        result = train(
            model, ClassifyTask(), data.train, data.val, cfg.train, run_dir,
            tokenizer=tokenizer, run_config=run_config, resume=resume, metadata=metadata,
            argv=argv, log=log,
        )  # fmt: skip
        report = _report(cfg, data, model, result, time.perf_counter() - t0)
        _write_outputs(cfg, model, run_dir, report, base, say)
        return FinetuneResult(result, report, run_dir)


def finetune_classifier(
    cfg: ClassifyConfig,
    train_cfg: TrainConfig | dict[str, Any] | None,
    out_dir: PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
    log: Any = None,
) -> FinetuneResult:
    """Fine-tune a classifier and evaluate it on the test split: :func:`run` with the loop's
    settings given apart.

    ``train_cfg``: a TrainConfig (used as is), the fields to set over the book's chapter-6
    defaults (which evaluate once per epoch), or None for ``cfg.train``.
    """
    return run(
        with_train(cfg, train_cfg), out_dir, overwrite=overwrite, resume=resume, argv=argv, log=log
    )


def with_train(cfg: ClassifyConfig, train_cfg: TrainConfig | dict[str, Any] | None) -> Any:
    """``cfg`` with its train section replaced (a TrainConfig) or changed (a dict of fields)."""
    if train_cfg is None:
        return cfg
    if isinstance(train_cfg, TrainConfig):
        d = cfg.to_dict()
        d["train"] = dataclasses.asdict(train_cfg)
        d["classify"]["epoch_eval"] = []
        return ClassifyConfig.from_dict(d)
    return cfg.with_overrides({f"train.{k}": v for k, v in train_cfg.items()}, "train_cfg")


def default_train_config(
    n_train: int | None = None, n_val: int | None = None, **given: Any
) -> TrainConfig:
    """The book's chapter-6 settings, evaluated once per epoch over the whole validation set
    (when the split sizes are known), with ``given`` fields on top."""
    d = {**preset_mapping("book-ch6")["train"], **given}
    bs = int(d.get("batch_size", 8))
    k = int(d.get("grad_accum_steps", 1))
    if n_train and "eval_interval" not in given:
        d["eval_interval"] = max(1, n_train // bs // k)
    if n_val and "eval_batches" not in given:
        d["eval_batches"] = max(1, math.ceil(n_val / bs))
    return TrainConfig(**d)


def read_finetune_config(run_dir: PathLike) -> dict[str, Any] | None:
    """The saved config of a run folder as nested sections (``config.yaml``, or the
    ``finetune.json`` of older releases), if any."""
    return ClassifyConfig.saved_dict(run_dir)


__all__ = [
    "ADAPTERS_FILE",
    "EPOCH_EVAL_FIELDS",
    "FINETUNE_CONFIG_FILE",
    "REPORT_FILE",
    "FinetuneResult",
    "build_splits",
    "default_train_config",
    "finetune_classifier",
    "read_finetune_config",
    "run",
    "size_eval_to_epochs",
    "with_train",
]
