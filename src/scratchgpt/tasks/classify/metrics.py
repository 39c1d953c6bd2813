"""Classification metrics, the printed report and the accuracy plot (the book's section 6.6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.fileio import PathLike, atomic_path
from scratchgpt.tasks.classify.task import classifier_logits


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
    model: nn.Module,
    dataset: Any,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    *,
    desc: str = "predicting",
    progress: bool | None = None,
) -> tuple[list[int], list[int], float]:
    """(labels, predictions, mean loss) of a ClassificationDataset. ``progress``: a bar on a
    terminal, a line every few seconds elsewhere (None), or nothing (False)."""
    from scratchgpt.progress import progress as progress_bar

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    y_true: list[int] = []
    y_pred: list[int] = []
    loss_sum = 0.0
    n = len(dataset)
    starts = range(0, n, batch_size)
    for start in progress_bar(starts, desc=desc, unit="batches", enabled=progress):
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
