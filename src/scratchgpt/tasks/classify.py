"""Fine-tuning for classification (the book's chapter 6, with appendix E's LoRA as an option).

A GPT becomes a classifier by replacing its output head with ``Linear(emb_dim, num_classes)``
and reading the logits at the last real (non-padding) token of each text: under causal attention
that is the one position that has seen the whole text. Training runs on the shared loop
(``scratchgpt.training.train``) with :class:`ClassifyTask`; the checkpoints it writes carry
``task: classify``, the label names and the padding settings in their metadata, so
:func:`load_classifier` and :func:`classify` rebuild the classifier from the folder alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.errors import CheckpointError, ConfigError, DataError
from scratchgpt.fileio import PathLike, atomic_path, atomic_write_json, read_json
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.task import Task

TASK_NAME = "classify"
FINETUNE_CONFIG_FILE = "finetune.json"
REPORT_FILE = "classification_report.json"
ADAPTERS_FILE = "adapters.safetensors"
TRAINABLE_CHOICES = ("last-blocks", "all", "head", "lora")

# The book's chapter-6 hyperparameters (batch 8, AdamW lr 5e-5, weight decay 0.1, 5 epochs).
BOOK_TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 8,
    "lr": 5e-5,
    "weight_decay": 0.1,
    "max_epochs": 5,
    "sample_tokens": 0,
}


# ---------------------------------------------------------------------------------------------
# Model: head, trainable parts, forward


def make_classifier(
    model: nn.Module,
    num_classes: int,
    *,
    trainable: str = "last-blocks",
    train_blocks: int = 1,
    lora_rank: int = 16,
    lora_alpha: float = 16.0,
    lora_targets: Sequence[str] = ("attention", "feed_forward", "head"),
) -> nn.Module:
    """Turn a GPTModel into a classifier, in place: a new ``Linear(emb_dim, num_classes)`` head
    and the chosen trainable parameters.

    trainable: ``last-blocks`` (the book: the last ``train_blocks`` transformer blocks, the final
    LayerNorm and the head), ``all``, ``head`` (the head alone) or ``lora`` (everything frozen,
    LoRA adapters on ``lora_targets``; with ``head`` among them the new head is frozen and adapted
    too, as in appendix E, otherwise the head is trained fully).
    """
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if trainable not in TRAINABLE_CHOICES:
        raise ConfigError(f"trainable must be one of {list(TRAINABLE_CHOICES)}, got {trainable!r}")
    cfg = model.cfg
    n_layers = len(model.trf_blocks)
    if trainable == "last-blocks" and not 0 <= train_blocks <= n_layers:
        raise ConfigError(
            f"train_blocks must be in 0..{n_layers} (the model's blocks), got {train_blocks}"
        )
    dev = model.tok_emb.weight.device
    model.out_head = nn.Linear(cfg.emb_dim, num_classes, device=dev)
    # The head is no longer the embedding matrix; the config must say so, or the checkpoint
    # would leave the head out of the weights file.
    model.cfg = cfg.replace(tie_weights=False)
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
    if trainable == "last-blocks":
        for block in list(model.trf_blocks)[n_layers - train_blocks :]:
            block.requires_grad_(True)
        model.final_norm.requires_grad_(True)
        model.out_head.requires_grad_(True)
    elif trainable == "head":
        model.out_head.requires_grad_(True)
    elif trainable == "lora":
        from scratchgpt.model.lora import apply_lora

        apply_lora(model, lora_rank, lora_alpha, lora_targets, freeze=True)
        if "head" not in lora_targets:
            # A new head has nothing to adapt from: without LoRA on it, it is trained fully.
            model.out_head.requires_grad_(True)
    return model


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set every dropout rate of a GPTModel (and its config) to ``rate``."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_rate must be in [0, 1), got {rate}")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = rate
    model.cfg = model.cfg.replace(drop_rate=rate)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of the last 1 in each row of a (B, T) mask."""
    t = attention_mask.shape[1]
    return t - 1 - attention_mask.flip(1).to(torch.int64).argmax(1)


def classifier_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, num_classes) logits at the last real token of each row.

    Without a mask the last position is used (the book). Columns that are padding in every row
    are dropped first (the same result, computed on fewer tokens). With padding before a real
    token (left padding) the padding is masked out of attention and positions count real tokens
    only, so a text's logits do not depend on which side it was padded.
    """
    if attention_mask is None:
        return model(input_ids)[:, -1, :]
    mask = attention_mask.bool()
    if not bool(mask.any(1).all()):
        raise DataError("a row of the batch has no real tokens (empty text)")
    cols = mask.any(0).nonzero().flatten()
    first, last = int(cols[0]), int(cols[-1]) + 1
    ids, mask = input_ids[:, first:last], mask[:, first:last]
    idx = last_token_index(mask)
    # With right padding only, causal attention never lets a real token see a pad token; a pad
    # before a real token (a 0 -> 1 step in the mask) needs masking and shifted positions.
    left_padded = bool((mask.int().diff(dim=1) > 0).any())
    if left_padded:
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        out = model(ids, attention_mask=mask.long(), position_ids=positions)
    else:
        out = model(ids)
    return out[torch.arange(ids.shape[0], device=ids.device), idx]


class ClassifyTask(Task):
    """Cross-entropy on the last real token's logits; batches are (ids, mask, labels)."""

    name = TASK_NAME

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        ids, mask, labels = batch
        return F.cross_entropy(classifier_logits(model, ids, mask).float(), labels)

    def count_tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Mean loss and accuracy over the batches."""
        losses, correct, total = [], 0, 0
        for ids, mask, labels in batches:
            logits = classifier_logits(model, ids, mask).float()
            losses.append(float(F.cross_entropy(logits, labels)))
            correct += int((logits.argmax(-1) == labels).sum())
            total += int(labels.numel())
        if not losses:
            return {}
        return {"loss": sum(losses) / len(losses), "accuracy": correct / total}


# ---------------------------------------------------------------------------------------------
# Metrics


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
) -> list[list[int]]:
    """matrix[true][predicted] counts."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        m[t][p] += 1
    return m


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, the confusion matrix, and precision/recall/F1/support per class (0 where a
    ratio is undefined), plus their macro averages."""
    k = len(label_names)
    cm = confusion_matrix(y_true, y_pred, k)
    per_class = {}
    for i, name in enumerate(label_names):
        tp = cm[i][i]
        predicted = sum(cm[r][i] for r in range(k))
        actual = sum(cm[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    n = len(y_true)
    return {
        "accuracy": sum(cm[i][i] for i in range(k)) / n if n else float("nan"),
        "n": n,
        "confusion_matrix": cm,
        "per_class": per_class,
        "macro": {
            m: sum(c[m] for c in per_class.values()) / k for m in ("precision", "recall", "f1")
        },
    }


@torch.no_grad()
def predict_dataset(
    model: nn.Module, dataset: Any, batch_size: int = 32, device: torch.device | str | None = None
) -> tuple[list[int], list[int], float]:
    """(labels, predictions, mean loss) of a ClassificationDataset."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    y_true: list[int] = []
    y_pred: list[int] = []
    loss_sum = 0.0
    n = len(dataset)
    for start in range(0, n, batch_size):
        ids = dataset.input_ids[start : start + batch_size].to(device)
        mask = dataset.attention_mask[start : start + batch_size].to(device)
        labels = dataset.labels[start : start + batch_size].to(device)
        logits = classifier_logits(model, ids, mask).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        y_true += labels.tolist()
        y_pred += logits.argmax(-1).tolist()
    model.train(was_training)
    return y_true, y_pred, loss_sum / n if n else float("nan")


def format_report(metrics: dict[str, Any], label_names: Sequence[str], title: str = "test") -> str:
    """A printable confusion matrix and per-class table."""
    w = max(9, *(len(n) for n in label_names)) + 2
    lines = [f"{title}: accuracy {metrics['accuracy'] * 100:.2f}% of {metrics['n']}"]
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * w + "".join(f"{n:>{w}}" for n in label_names))
    for name, row in zip(label_names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    lines.append(f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, c in metrics["per_class"].items():
        lines.append(
            f"{name:<{w}}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10}"
        )
    return "\n".join(lines)


def plot_accuracy(run_dir: PathLike, examples_per_step: int | None = None) -> Path | None:
    """``accuracy.png``: training and validation accuracy against steps (the book's figure
    6.17), with examples seen on the top axis. None when the run logged no accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from scratchgpt.training.logging import METRICS_FILE, read_metrics

    run = Path(run_dir)
    records = sorted(read_metrics(run / METRICS_FILE), key=lambda r: r["step"])
    tr = [(r["step"], r["eval_train_accuracy"]) for r in records if "eval_train_accuracy" in r]
    va = [(r["step"], r["val_accuracy"]) for r in records if "val_accuracy" in r]
    if not tr and not va:
        return None
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if tr:
        ax.plot(*zip(*tr, strict=True), color="tab:blue", marker="o", label="Training accuracy")
    if va:
        ax.plot(*zip(*va, strict=True), color="tab:orange", linestyle="-.", marker="o",
                label="Validation accuracy")  # fmt: skip
    ax.set_xlabel("Steps")
    ax.set_ylabel("Accuracy")
    ax.legend(loc="lower right")
    if examples_per_step:
        top = ax.secondary_xaxis(
            "top", functions=(lambda s: s * examples_per_step, lambda e: e / examples_per_step)
        )
        top.set_xlabel("Examples seen")
    fig.tight_layout()
    out = run / "accuracy.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    return out


# ---------------------------------------------------------------------------------------------
# Loading and using a classifier


@dataclass
class Classifier:
    """A loaded classifier: the model (eval mode), its tokenizer and how it reads texts."""

    model: nn.Module
    tokenizer: Any
    label_names: list[str]
    max_length: int
    pad_token_id: int
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """The classification of one text."""

    text: str
    label: str
    label_id: int
    probability: float
    probabilities: dict[str, float]


def classifier_metadata(
    label_names: Sequence[str],
    max_length: int,
    pad_token_id: int,
    *,
    trainable: str,
    lora: dict[str, Any] | None = None,
    base: str = "",
) -> dict[str, Any]:
    """The checkpoint metadata that lets :func:`load_classifier` rebuild a classifier."""
    return {
        "task": TASK_NAME,
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "max_length": int(max_length),
        "pad_token_id": int(pad_token_id),
        "trainable": trainable,
        "lora": lora,
        "base_model": base,
    }


def load_classifier(
    path: PathLike, *, device: torch.device | str = "cpu", merge: bool = True
) -> Classifier:
    """A classifier from a checkpoint folder or a run folder (its newest checkpoint) written by
    fine-tuning; LoRA adapters are merged into the weights unless ``merge`` is False."""
    from safetensors.torch import load_file

    from scratchgpt.checkpoints import (
        CHECKPOINTS_DIR,
        CONFIG_FILE,
        TOKENIZER_FILE,
        WEIGHTS_FILE,
        read_manifest,
        resolve_checkpoint,
    )
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import GPTModel

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint folder")
    if p.is_dir() and not (p / CONFIG_FILE).is_file() and (p / CHECKPOINTS_DIR).is_dir():
        p = resolve_checkpoint(p)
    if not (p / CONFIG_FILE).is_file():
        raise CheckpointError(f"{p}: not a checkpoint folder (no {CONFIG_FILE})")
    raw = read_json(p / CONFIG_FILE)
    meta = read_manifest(p).get("metadata", {}) if isinstance(raw, dict) else {}
    if not isinstance(raw, dict) or "model_type" in raw or meta.get("task") != TASK_NAME:
        what = (
            "a Hugging Face GPT-2 model"
            if isinstance(raw, dict) and "model_type" in raw
            else (f"a {meta.get('task') or 'language-model'} checkpoint")
        )
        raise CheckpointError(
            f"{p}: not a classifier ({what}, whose head predicts tokens); fine-tune it first: "
            f"scratchgpt finetune-classifier --checkpoint {p} --data spam --out RUN"
        )
    for key in ("label_names", "max_length", "pad_token_id"):
        if key not in meta:
            raise CheckpointError(f"{p}: classifier metadata lacks {key!r} (scratchgpt.json)")
    cfg = GPTConfig.from_dict(raw, source=str(p / CONFIG_FILE))
    labels = [str(x) for x in meta["label_names"]]
    model = GPTModel(cfg.replace(init="pytorch"))
    lora = meta.get("lora") or None
    make_classifier(
        model,
        len(labels),
        trainable="lora" if lora else "all",
        **(
            {
                "lora_rank": lora["rank"],
                "lora_alpha": lora["alpha"],
                "lora_targets": lora["targets"],
            }
            if lora
            else {}
        ),
    )
    model.cfg = cfg
    try:
        weights = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p / WEIGHTS_FILE}: corrupt or missing ({e})") from None
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{p / WEIGHTS_FILE}: weights do not match the classifier its metadata describes "
            f"(missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]})"
        )
    if lora and merge:
        from scratchgpt.model.lora import merge_lora

        merge_lora(model)
    tokenizer = None
    if (p / TOKENIZER_FILE).is_file():
        from scratchgpt.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(p / TOKENIZER_FILE)
    else:
        from scratchgpt.tokenizers import get_tokenizer

        tokenizer = get_tokenizer("gpt2")
    model.requires_grad_(False)
    return Classifier(
        model.to(device).eval(), tokenizer, labels, int(meta["max_length"]),
        int(meta["pad_token_id"]), p, dict(meta),
    )  # fmt: skip


def classify(
    model_or_dir: Classifier | PathLike,
    texts: str | Sequence[str],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> list[Prediction]:
    """Classify texts with a fine-tuned classifier (a :class:`Classifier` or a checkpoint/run
    folder). Texts longer than the classifier's max_length are truncated, with a warning."""
    clf = model_or_dir if isinstance(model_or_dir, Classifier) else load_classifier(model_or_dir)
    if isinstance(texts, str):
        texts = [texts]
    model = clf.model
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    limit = min(clf.max_length, model.cfg.context_length)
    encoded = []
    n_long = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"text {i + 1} is empty; give each text some content")
        ids = list(clf.tokenizer.encode(text))
        if len(ids) > limit:
            n_long += 1
            ids = ids[:limit]
        encoded.append(ids)
    if n_long:
        warnings.warn(
            f"{n_long} text(s) are longer than the classifier's {limit} tokens and were truncated "
            "to their first tokens",
            stacklevel=2,
        )
    out: list[Prediction] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), width), clf.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, e in enumerate(chunk):
                ids[r, : len(e)] = torch.tensor(e, dtype=torch.long)
                mask[r, : len(e)] = 1
            probs = torch.softmax(classifier_logits(model, ids.to(dev), mask.to(dev)).float(), -1)
            for r, row in enumerate(probs.cpu().tolist()):
                k = max(range(len(row)), key=row.__getitem__)
                out.append(
                    Prediction(
                        texts[start + r],
                        clf.label_names[k],
                        k,
                        row[k],
                        dict(zip(clf.label_names, row, strict=True)),
                    )
                )
    model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# The fine-tuning job


@dataclass
class ClassifyConfig:
    """Everything a classification fine-tuning run needs besides the loop's TrainConfig."""

    checkpoint: str | None = None  # a scratchgpt checkpoint or run folder
    gpt2: str | None = None  # a GPT-2 name (gpt2-small, ...) or Hugging Face folder
    random_init: str | None = None  # a model preset, randomly initialised
    data: str = "spam"  # "spam" or a CSV/TSV/JSONL file
    format: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    labels: list[str] | None = None
    train_frac: float = 0.7
    val_frac: float = 0.1
    split_seed: int = 123
    max_length: int | None = None
    trainable: str = "last-blocks"
    train_blocks: int = 1
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["attention", "feed_forward", "head"])
    drop_rate: float | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("checkpoint", "gpt2", "random_init") if getattr(self, n)]
        if len(given) != 1:
            raise ConfigError(
                "give exactly one starting model: --checkpoint DIR, --gpt2 NAME|DIR or "
                f"--random-init PRESET (got {given or 'none'})"
            )
        if self.trainable not in TRAINABLE_CHOICES:
            raise ConfigError(f"trainable must be one of {list(TRAINABLE_CHOICES)}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {self.lora_rank}")
        from scratchgpt.model.lora import check_targets

        self.lora_targets = list(check_targets(self.lora_targets))


@dataclass
class FinetuneResult:
    """A finished classification run: the loop's result and the final metrics."""

    train_result: Any
    report: dict[str, Any]
    run_dir: Path


def load_base_model(cfg: ClassifyConfig) -> tuple[nn.Module, Any, str]:
    """(GPTModel, tokenizer, description) of the starting model."""
    from scratchgpt.checkpoints import load_checkpoint
    from scratchgpt.tokenizers import get_tokenizer

    if cfg.random_init:
        from scratchgpt.config import GPTConfig
        from scratchgpt.model import GPTModel

        tokenizer = get_tokenizer("gpt2")
        mcfg = GPTConfig.from_preset(cfg.random_init, vocab_size=tokenizer.vocab_size)
        return GPTModel(mcfg), tokenizer, f"random {cfg.random_init}"
    if cfg.gpt2:
        from scratchgpt.interop.hub import resolve_model_path

        loaded = load_checkpoint(resolve_model_path(cfg.gpt2))
        return loaded.model, loaded.tokenizer, f"GPT-2 {cfg.gpt2}"
    path = Path(str(cfg.checkpoint))
    if not path.exists():
        raise CheckpointError(f"--checkpoint {path}: no such folder")
    loaded = load_checkpoint(path)
    if loaded.metadata.get("task") == TASK_NAME:
        raise CheckpointError(
            f"{loaded.path} is already a classifier; to continue its run use --resume with its "
            "--out folder"
        )
    tokenizer = loaded.tokenizer or get_tokenizer("gpt2")
    return loaded.model, tokenizer, f"checkpoint {loaded.path}"


def build_splits(cfg: ClassifyConfig) -> Any:
    from scratchgpt.data.classification import load_labelled, spam_splits

    if cfg.data == "spam" and not Path("spam").exists():
        return spam_splits(random_state=cfg.split_seed)
    return load_labelled(
        cfg.data,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        split_column=cfg.split_column,
        label_names=cfg.labels,
        fmt=cfg.format,
        train_frac=cfg.train_frac,
        val_frac=cfg.val_frac,
        random_state=cfg.split_seed,
    )


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
    """Fine-tune a classifier on the shared training loop and evaluate it on the test split.

    ``train_cfg``: a TrainConfig, or the fields to set over the book's chapter-6 defaults
    (:func:`default_train_config`, which evaluates once per epoch).
    """
    from scratchgpt.data.classification import ClassificationDataset
    from scratchgpt.training.distributed import print0
    from scratchgpt.training.loop import train
    from scratchgpt.training.run_dir import prepare_run_dir
    from scratchgpt.training.setup import resolve_device

    say = functools.partial(print0, writer=log, flush=True)
    splits = build_splits(cfg)
    if not len(splits.train):
        raise DataError(f"{cfg.data}: the training split is empty")
    if not isinstance(train_cfg, TrainConfig):
        train_cfg = default_train_config(len(splits.train), len(splits.val), **(train_cfg or {}))
    model, tokenizer, base = load_base_model(cfg)
    labels = splits.train.label_names
    pad_id = tokenizer.eot_id if getattr(tokenizer, "eot_id", None) is not None else 0
    ctx = model.cfg.context_length
    max_length = cfg.max_length
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

    torch.manual_seed(train_cfg.seed)
    if cfg.drop_rate is not None:
        set_dropout(model, cfg.drop_rate)
    make_classifier(
        model, len(labels), trainable=cfg.trainable, train_blocks=cfg.train_blocks,
        lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets,
    )  # fmt: skip
    lora = (
        {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": cfg.lora_targets}
        if cfg.trainable == "lora"
        else None
    )
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    run_dir = prepare_run_dir(out_dir, overwrite=overwrite, resume=resume)
    atomic_write_json(
        run_dir / FINETUNE_CONFIG_FILE,
        {"classify": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg)},
    )
    sizes = splits.sizes()
    say(
        f"data: {splits.info.get('source', cfg.data)}: {sizes['train']:,} train / "
        f"{sizes['val']:,} validation / {sizes['test']:,} test texts; labels "
        + ", ".join(f"{n} ({c})" for n, c in splits.train.counts().items())
        + f" in train; padded/truncated to {max_length} tokens"
    )
    say(
        f"model: {base}, {model.cfg.n_layers} layers, emb {model.cfg.emb_dim}; head "
        f"Linear({model.cfg.emb_dim}, {len(labels)}); trainable: {cfg.trainable}"
        + (f" (rank {cfg.lora_rank}, alpha {cfg.lora_alpha})" if lora else "")
        + f", {n_trainable:,} of {n_total:,} parameters"
    )
    metadata = classifier_metadata(
        labels, max_length, pad_id, trainable=cfg.trainable, lora=lora, base=base
    )
    run_config = {
        "classify": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(train_cfg),
        "resolved_model": model.cfg.to_dict(),
        "data_info": {**splits.info, "sizes": sizes, "labels": labels, "max_length": max_length},
    }
    t0 = time.perf_counter()
    result = train(
        model, ClassifyTask(), train_ds, val_ds, train_cfg, run_dir,
        tokenizer=tokenizer, run_config=run_config, resume=resume, metadata=metadata,
        argv=argv, log=log,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    device = resolve_device(train_cfg.device)
    report: dict[str, Any] = {"labels": labels, "sizes": sizes, "train_seconds": train_s}
    for name, ds in (("train", train_ds), ("val", val_ds), ("test", test_ds)):
        if len(ds) == 0:
            continue
        y, p, loss = predict_dataset(
            model, ds, batch_size=max(train_cfg.batch_size, 32), device=device
        )
        report[name] = {**classification_metrics(y, p, labels), "loss": loss}
    report["status"] = result.status
    report["steps"] = result.steps
    report["checkpoint"] = str(result.last_checkpoint) if result.last_checkpoint else None
    atomic_write_json(run_dir / REPORT_FILE, report)
    parts = [
        f"{n} {report[n]['accuracy'] * 100:.2f}%" for n in ("train", "val", "test") if n in report
    ]
    say("accuracy: " + ", ".join(parts))
    if "test" in report:
        say(format_report(report["test"], labels, "test"))
    if lora is not None:
        from scratchgpt.model.lora import save_lora_adapters

        save_lora_adapters(
            model, run_dir / ADAPTERS_FILE, extra=["out_head.linear.weight", "out_head.linear.bias"]
            if "head" in cfg.lora_targets else ["out_head.weight", "out_head.bias"],
            metadata={"label_names": labels, "base_model": base}, overwrite=True,
        )  # fmt: skip
    if train_cfg.plot:
        try:
            bs = train_cfg.batch_size * train_cfg.grad_accum_steps
            plot_accuracy(run_dir, bs)
        except Exception as e:  # a plot must never cost a finished run its result
            warnings.warn(f"could not write the accuracy plot: {e}", stacklevel=2)
    return FinetuneResult(result, report, run_dir)


def default_train_config(
    n_train: int | None = None, n_val: int | None = None, **given: Any
) -> TrainConfig:
    """The book's chapter-6 settings, evaluated once per epoch over the whole validation set
    (when the split sizes are known), with ``given`` fields on top."""
    d = dict(BOOK_TRAIN_DEFAULTS)
    d.update(given)
    bs = int(d.get("batch_size", 8))
    k = int(d.get("grad_accum_steps", 1))
    if n_train and "eval_interval" not in given:
        d["eval_interval"] = max(1, n_train // bs // k)
    if n_val and "eval_batches" not in given:
        d["eval_batches"] = max(1, math.ceil(n_val / bs))
    return TrainConfig(**d)


def read_finetune_config(run_dir: PathLike) -> dict[str, Any] | None:
    """The saved {"classify": ..., "train": ...} of a run folder, if any."""
    p = Path(run_dir) / FINETUNE_CONFIG_FILE
    if not p.is_file():
        return None
    data = read_json(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object")
    return data
