"""The book's chapter-5 training loop (``train_model_simple``) and appendix D's ``train_model``
(linear warm-up, cosine decay, clipping after warm-up), reproduced step for step by the
``book-ch5`` and ``book-appendix-d`` presets on a tiny model.

The reference is the book's loop written out below in plain torch (its order of zero_grad,
learning rate, loss, backward, clipping and step; its ``global_step`` that starts at -1; its
``evaluate_model`` over the first ``eval_iter`` batches; its AdamW over ``model.parameters()``).
Both sides use the same seed, the same windows of The Verdict and the same model class. Data
order and dropout are turned off on both sides: the book draws them from the global RNG through
its DataLoader, scratchgpt from private generators (a documented difference).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scratchgpt.model import GPTModel
from scratchgpt.tasks.pretrain import (
    _load_source_text,
    make_tokenizer,
    pretrain,
    resolve_model_config,
)
from scratchgpt.training.config import DataConfig, RunConfig
from scratchgpt.training.logging import read_metrics

MAX_LENGTH = 64  # the tiny model's context; windows of 64 every 64 tokens
TINY = {
    "model.preset": "tiny",
    "model.context_length": MAX_LENGTH,
    "model.drop_rate": 0.0,
    "data.max_length": MAX_LENGTH,
    "data.stride": MAX_LENGTH,
    "train.shuffle": False,
    "train.precision": "fp32",
    "train.device": "cpu",
    "train.sample_tokens": 0,
    "train.progress": False,
    "train.plot": False,
    "train.peak_tflops": 1.0,
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The book's code, written out (chapter 5.1-5.2 and appendix D.4)


def book_batches(ids: list[int], batch_size: int, drop_last: bool) -> list[tuple]:
    """GPTDatasetV1's windows in order, batched as a DataLoader without shuffling."""
    inputs, targets = [], []
    for i in range(0, len(ids) - MAX_LENGTH, MAX_LENGTH):
        inputs.append(torch.tensor(ids[i : i + MAX_LENGTH]))
        targets.append(torch.tensor(ids[i + 1 : i + MAX_LENGTH + 1]))
    out = []
    for b in range(0, len(inputs), batch_size):
        if drop_last and b + batch_size > len(inputs):
            break
        out.append(
            (torch.stack(inputs[b : b + batch_size]), torch.stack(targets[b : b + batch_size]))
        )
    return out


def calc_loss_batch(input_batch, target_batch, model):
    logits = model(input_batch)
    return nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(loader, model, num_batches):
    num_batches = min(num_batches, len(loader))
    total = sum(calc_loss_batch(x, y, model).item() for x, y in loader[:num_batches])
    return total / num_batches


def book_train(model, train_loader, val_loader, optimizer, n_epochs, eval_freq, eval_iter,
               warmup_steps=None, initial_lr=3e-05, min_lr=1e-6):  # fmt: skip
    """``train_model_simple`` (warmup_steps None) or appendix D's ``train_model``; returns the
    loss of every step and the evaluations as ``{global_step: (train_loss, val_loss)}``."""
    losses, evals, global_step = [], {}, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_training_steps = len(train_loader) * n_epochs
    if warmup_steps is not None:
        lr_increment = (peak_lr - initial_lr) / warmup_steps
    for _epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            if warmup_steps is not None:
                if global_step < warmup_steps:
                    lr = initial_lr + global_step * lr_increment
                else:
                    progress = (global_step - warmup_steps) / (total_training_steps - warmup_steps)
                    lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
            loss = calc_loss_batch(input_batch, target_batch, model)
            loss.backward()
            if warmup_steps is not None and global_step >= warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            losses.append(loss.item())
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_loss = calc_loss_loader(train_loader, model, eval_iter)
                    val_loss = calc_loss_loader(val_loader, model, eval_iter)
                model.train()
                evals[global_step] = (train_loss, val_loss)
    return losses, evals


def book_loaders():
    """Section 5.1.3: the first 90% of The Verdict's characters train, the rest validate."""
    text, _ = _load_source_text(DataConfig())
    split = int(0.90 * len(text))
    tokenizer = make_tokenizer("gpt2")
    train_loader = book_batches(tokenizer.encode(text[:split]), 2, drop_last=True)
    val_loader = book_batches(tokenizer.encode(text[split:]), 2, drop_last=False)
    return tokenizer, train_loader, val_loader


def run_book(cfg: RunConfig, n_epochs: int, **schedule):
    tokenizer, train_loader, val_loader = book_loaders()
    torch.manual_seed(123)
    model = GPTModel(resolve_model_config(cfg, tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=0.1)
    losses, evals = book_train(
        model, train_loader, val_loader, optimizer, n_epochs, cfg.train.eval_interval,
        cfg.train.eval_batches, **schedule,
    )  # fmt: skip
    return losses, evals


def run_ours(cfg: RunConfig, tmp_path):
    pretrain(cfg, tmp_path / "run")
    return read_metrics(tmp_path / "run" / "metrics.jsonl")


def assert_same_run(records, losses, evals):
    steps = [r for r in records if "train_loss" in r]
    assert len(steps) == len(losses) >= 10
    for r, book_loss in zip(steps, losses):
        assert r["train_loss"] == pytest.approx(book_loss, abs=1e-5), r["step"]
    # The book evaluates after its update global_step + 1 and labels it global_step.
    ours = {r["step"] - 1: (r["eval_train_loss"], r["val_loss"]) for r in steps if "val_loss" in r}
    assert set(evals) <= set(ours)
    for g, (train_loss, val_loss) in evals.items():
        assert ours[g] == pytest.approx((train_loss, val_loss), abs=1e-5), g


def test_book_ch5_reproduces_train_model_simple(tmp_path, capsys):
    cfg = RunConfig.preset("book-ch5").with_overrides({**TINY, "train.max_epochs": 1})
    losses, evals = run_book(cfg, n_epochs=1)
    assert len(losses) >= 30 and len(evals) >= 6
    assert_same_run(run_ours(cfg, tmp_path), losses, evals)
    # The printed lines are the book's: same labels, same numbers, and the log says so.
    out = capsys.readouterr().out
    assert "book step labels: evaluation lines count steps as the book" in out
    assert "Ep 1 (untrained): Train loss" in out  # eval_at_start: before any update
    for g, (train_loss, val_loss) in evals.items():
        assert f"Ep 1 (Step {g:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}" in out


def test_appendix_d_preset_reproduces_train_model(tmp_path):
    """Warm-up from 1e-5 to 1e-3 over 20% of the steps, cosine to 1e-5, clipping at 1.0 from
    step warmup_steps on. The warm-up's gradient norms are above 1.0, so clipping them too (our
    default) changes the losses from step 5 on by more than 1e-5."""
    per_epoch = len(book_loaders()[1])
    # 128 wide: gradient norms above the clipping norm 1.0 during the warm-up.
    cfg = RunConfig.preset("book-appendix-d").with_overrides(
        {**TINY, "model.emb_dim": 128, "train.max_epochs": 1,
         "train.warmup_steps": int(0.2 * per_epoch)}
    )  # fmt: skip
    t = cfg.train
    losses, evals = run_book(
        cfg, 1, warmup_steps=t.warmup_steps, initial_lr=t.warmup_init_lr, min_lr=t.min_lr
    )
    records = run_ours(cfg, tmp_path)
    norms = [r["grad_norm"] for r in records if "grad_norm" in r]
    assert max(norms[: t.warmup_steps]) > 1.1  # clipping in warm-up would change the losses
    assert_same_run(records, losses, evals)


def test_clip_norm_follows_the_warmup_rule():
    from scratchgpt.training.config import TrainConfig
    from scratchgpt.training.setup import clip_norm

    inf = float("inf")
    book = TrainConfig(grad_clip=1.0, warmup_steps=3, clip_during_warmup=False)
    assert [clip_norm(book, s) for s in range(5)] == [inf, inf, inf, 1.0, 1.0]
    ours = TrainConfig(grad_clip=1.0, warmup_steps=3)
    assert [clip_norm(ours, s) for s in range(5)] == [1.0] * 5
    assert clip_norm(TrainConfig(warmup_steps=3, clip_during_warmup=False), 7) == inf
