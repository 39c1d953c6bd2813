"""Plots of a run's metrics.jsonl: loss against steps with a tokens-seen axis on top (the book's
figure 5.12), and the learning rate against steps.

Figures are drawn with matplotlib's Agg canvas directly, so plotting never needs a display and
never changes the global matplotlib backend of a user's session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.errors import DataError
from scratchgpt.fileio import PathLike, atomic_path, make_folder
from scratchgpt.training.logging import METRICS_FILE, read_metrics


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig: Any, out_base: Path, pdf: bool) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    paths = [out_base.with_suffix(".png")]
    if pdf:
        paths.append(out_base.with_suffix(".pdf"))
    for p in paths:
        # Written beside the target, then renamed: a reader never sees half an image.
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight")
    return paths


def _plot_rewards(records: list[dict[str, Any]], out: Path, pdf: bool) -> list[Path]:
    """``rewards.png`` of a preference-tuning run: the reward margins and the chosen and
    rejected rewards on training and validation data, and the reward accuracy (none otherwise)."""
    from matplotlib.figure import Figure

    if not any("val_reward_margin" in r or "eval_train_reward_margin" in r for r in records):
        return []
    fig = Figure(figsize=(10, 3.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for prefix, name, style in (("eval_train_", "Training", "-"), ("val_", "Validation", "-.")):
        for key, color in (("reward_margin", "tab:blue"), ("chosen_reward", "tab:green"),
                           ("rejected_reward", "tab:red")):  # fmt: skip
            xs, ys = _series(records, prefix + key)
            if xs:
                label = f"{name} {key.replace('_', ' ')}"
                left.plot(xs, ys, color=color, linestyle=style, label=label)
        xs, ys = _series(records, prefix + "reward_accuracy")
        if xs:
            right.plot(xs, ys, linestyle=style, label=f"{name} reward accuracy")
    left.set_xlabel("Steps")
    left.set_ylabel("Reward (log-probability vs reference)")
    left.legend(fontsize="small")
    right.set_xlabel("Steps")
    right.set_ylabel("Reward accuracy")
    right.set_ylim(-0.05, 1.05)
    right.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out / "rewards", pdf)


def plot_run(
    run_dir: PathLike, *, pdf: bool = False, out_dir: PathLike | None = None
) -> list[Path]:
    """Write ``loss.png`` and ``lr.png`` (and ``rewards.png`` for a preference-tuning run; PDFs
    with ``pdf``) for a run; returns the paths."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run = Path(run_dir)
    metrics = run / METRICS_FILE
    if not metrics.is_file():
        raise DataError(f"{run}: no {METRICS_FILE}; is this a training run folder?")
    records = sorted(read_metrics(metrics), key=lambda r: r["step"])
    if not records:
        raise DataError(f"{metrics}: no records yet; plot again once training has logged a step")
    out = Path(out_dir) if out_dir is not None else run
    make_folder(out)
    written: list[Path] = []

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    steps, train = _series(records, "train_loss")
    if steps:
        ax.plot(
            steps, train, color="tab:blue", alpha=0.25, linewidth=0.8, label="Training loss (step)"
        )
    es, eval_train = _series(records, "eval_train_loss")
    if es:
        ax.plot(es, eval_train, color="tab:blue", label="Training loss")
    vs, val = _series(records, "val_loss")
    if vs:
        ax.plot(vs, val, color="tab:orange", linestyle="-.", label="Validation loss")
    ax.set_xlabel("Steps")
    ax.set_ylabel("Loss")
    ax.legend(loc="upper right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ts, tokens = _series(records, "tokens_seen")
    if len(ts) >= 2 and tokens[-1] > tokens[0]:
        s_arr, t_arr = np.asarray(ts, dtype=float), np.asarray(tokens, dtype=float)

        # Linear beyond the logged range too: np.interp alone would clamp, and the axis margins
        # would show a wrong tick at the edges.
        slope = (t_arr[-1] - t_arr[0]) / (s_arr[-1] - s_arr[0]) if s_arr[-1] > s_arr[0] else 1.0

        def to_tokens(x: Any) -> Any:
            x = np.asarray(x, dtype=float)
            inside = np.interp(x, s_arr, t_arr)
            below = t_arr[0] + (x - s_arr[0]) * slope
            above = t_arr[-1] + (x - s_arr[-1]) * slope
            return np.where(x < s_arr[0], below, np.where(x > s_arr[-1], above, inside))

        def to_steps(x: Any) -> Any:
            x = np.asarray(x, dtype=float)
            inside = np.interp(x, t_arr, s_arr)
            below = s_arr[0] + (x - t_arr[0]) / slope
            above = s_arr[-1] + (x - t_arr[-1]) / slope
            return np.where(x < t_arr[0], below, np.where(x > t_arr[-1], above, inside))

        top = ax.secondary_xaxis("top", functions=(to_tokens, to_steps))
        top.set_xlabel("Tokens seen")
    fig.tight_layout()
    written += _save(fig, out / "loss", pdf)

    written += _plot_rewards(records, out, pdf)

    ls, lrs = _series(records, "lr")
    if ls:
        fig = Figure(figsize=(6, 3))
        ax = fig.add_subplot()
        ax.plot(ls, lrs, color="tab:green")
        ax.set_xlabel("Steps")
        ax.set_ylabel("Learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.tight_layout()
        written += _save(fig, out / "lr", pdf)
    return written
