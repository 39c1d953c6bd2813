"""The book's chapter-6, chapter-7 DPO bonus and appendix-E code, written out as plain torch: the reference that the
classification and LoRA tests compare scratchgpt's recipes with (the book's code is not a
dependency). Each function is the book's, line for line, where it matters for the numbers.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.data.classification import load_labelled
from scratchgpt.tasks.classify import ClassifyConfig
from scratchgpt.tasks.classify.recipe import run
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.training.sampler import epoch_seed
from scratchgpt.weights import load_model

# ---------------------------------------------------------------------------------------------
# Appendix E: LoRALayer, LinearWithLoRA, replace_linear_with_lora


class BookLoRALayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.alpha, self.rank = alpha, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / self.rank) * (x @ self.A @ self.B)


class BookLinearWithLoRA(nn.Module):
    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.lora = BookLoRALayer(linear.in_features, linear.out_features, rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.lora(x)


def book_replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> None:
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, BookLinearWithLoRA(module, rank, alpha))
        else:
            book_replace_linear_with_lora(module, rank, alpha)


# ---------------------------------------------------------------------------------------------
# Chapter 6: the classifier set-up of gpt_class_finetune.py and train_classifier_simple


def book_classifier(model: nn.Module, *, lora: tuple[int, float] | None = None) -> nn.Module:
    """Section 6.5: freeze, seed 123, a new Linear(emb_dim, 2) head, the last block and the
    final norm trainable. Appendix E (``lora=(rank, alpha)``): seed 123, the new head, freeze
    everything, LoRA on every Linear layer."""
    if lora is None:
        for param in model.parameters():
            param.requires_grad = False
    torch.manual_seed(123)
    model.out_head = nn.Linear(in_features=model.cfg.emb_dim, out_features=2)
    if lora is None:
        for param in model.trf_blocks[-1].parameters():
            param.requires_grad = True
        for param in model.final_norm.parameters():
            param.requires_grad = True
        return model
    for param in model.parameters():
        param.requires_grad = False
    book_replace_linear_with_lora(model, *lora)
    return model


def book_calc_loss_batch(input_batch, target_batch, model, last_real=None):
    """Section 6.6: cross-entropy of the logits at the last position. ``last_real`` (the (B,)
    index of each row's last real token) reads that position instead: scratchgpt's choice."""
    out = model(input_batch)
    rows = torch.arange(out.shape[0])
    logits = out[:, -1, :] if last_real is None else out[rows, last_real]
    return torch.nn.functional.cross_entropy(logits, target_batch)


def book_optimizer(model: nn.Module, lr: float, weight_decay: float, *, matrices_only: bool):
    """``AdamW(model.parameters(), lr, weight_decay)`` (the book: every tensor decays);
    ``matrices_only`` decays only tensors of 2+ dimensions (scratchgpt's choice)."""
    torch.manual_seed(123)
    if not matrices_only:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def book_calc_loss_loader(batches, model, num_batches: int, read_last_real: bool) -> float:
    """Section 6.6: the mean of the first ``num_batches`` batch losses."""
    batches = list(batches)[:num_batches]
    total = 0.0
    for input_batch, mask, target_batch in batches:
        last = mask.sum(1) - 1 if read_last_real else None
        total += book_calc_loss_batch(input_batch, target_batch, model, last).item()
    return total / len(batches)


def book_calc_accuracy_loader(batches, model, num_batches: int, read_last_real: bool) -> float:
    """Section 6.6: the share of correct argmax predictions in the first ``num_batches``."""
    model.eval()
    correct_predictions, num_examples = 0, 0
    for input_batch, mask, target_batch in list(batches)[:num_batches]:
        with torch.no_grad():
            out = model(input_batch)
        rows = torch.arange(out.shape[0])
        logits = out[rows, mask.sum(1) - 1] if read_last_real else out[:, -1, :]
        predicted_labels = torch.argmax(logits, dim=-1)
        num_examples += predicted_labels.shape[0]
        correct_predictions += (predicted_labels == target_batch).sum().item()
    return correct_predictions / num_examples


def book_train_classifier_simple(
    model: nn.Module,
    epochs: Iterable[Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    *,
    read_last_real: bool = False,
    val: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = (),
    eval_iter: int = 5,
) -> tuple[list[float], list[tuple[float, float]]]:
    """Section 6.7's loop: per batch zero_grad, loss, backward, step. Returns the training loss
    of every step and, after each epoch, the validation loss and accuracy over ``eval_iter``
    batches of ``val`` (the book's evaluations run in eval mode and change no weight, so when
    they run does not matter)."""
    losses, evals = [], []
    for batches in epochs:
        model.train()
        for input_batch, mask, target_batch in batches:
            optimizer.zero_grad()
            last = mask.sum(1) - 1 if read_last_real else None
            loss = book_calc_loss_batch(input_batch, target_batch, model, last)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if val:
            model.eval()
            with torch.no_grad():
                val_loss = book_calc_loss_loader(val, model, eval_iter, read_last_real)
            val_acc = book_calc_accuracy_loader(val, model, eval_iter, read_last_real)
            evals.append((val_loss, val_acc))
    return losses, evals


# ---------------------------------------------------------------------------------------------
# Data: a small spam-like CSV and the book's SpamDataset padding


HAM = (" see", " you", " soon", " home", " dinner", " later", " ok", " love")
SPAM = (" win", " cash", " prize", " now", " call", " free", " claim", " urgent")


def write_spam_like_csv(path: Path, *, n_train: int = 40, equal_length: bool = False) -> Path:
    """Texts of single-token words (so their token counts are known): ``n_train`` training
    rows, 8 validation and 8 test rows, named by a split column."""
    rng = random.Random(0)
    rows = []
    for i in range(n_train + 16):
        spam = i % 2 == 1
        words = SPAM if spam else HAM
        n = 8 if equal_length else rng.randint(3, 12)
        text = ("free" if spam else "hey") + "".join(rng.choice(words) for _ in range(n - 1))
        split = "train" if i < n_train else "val" if i < n_train + 8 else "test"
        rows.append({"text": text, "label": "spam" if spam else "ham", "split": split})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def book_padded(texts, labels, tokenizer, max_length=None, pad_token_id=50256):
    """SpamDataset: token ids padded to ``max_length`` (default: the longest text), with the
    mask of real tokens."""
    encoded = [tokenizer.encode(t)[:max_length] for t in texts]
    max_length = max_length or max(len(e) for e in encoded)
    ids = torch.tensor([e + [pad_token_id] * (max_length - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (max_length - len(e)) for e in encoded])
    return ids, mask, torch.tensor(labels)


def epoch_batches(ids, mask, labels, order: Sequence[int], batch_size=8, drop_last=True):
    """One epoch's batches in ``order``, an incomplete last one dropped with ``drop_last``."""
    n = len(order) // batch_size * batch_size if drop_last else len(order)
    for b in range(0, n, batch_size):
        idx = torch.tensor(order[b : b + batch_size])
        yield ids[idx], mask[idx], labels[idx]


# ---------------------------------------------------------------------------------------------
# Both sides on the same data: a scratchgpt preset run and the book's code


def run_preset(preset: str, base: Path, data: Path, out: Path, **over: Any) -> tuple:
    """A classify preset run on ``data`` from the checkpoint ``base``, dropout off as the book's
    BASE_CONFIG: (training loss of every step, the printed log, the metrics.jsonl records)."""
    overrides = {
        "model.checkpoint": str(base), "model.drop_rate": 0.0, "data.source": str(data),
        "data.split_column": "split", "train.device": "cpu", "train.progress": False,
        "train.plot": False, **over,
    }  # fmt: skip
    cfg = ClassifyConfig.from_dict(
        ClassifyConfig.merge(ClassifyConfig.preset_dict(preset), overrides, "test")
    )
    log: list[str] = []
    run(cfg, out, log=log.append)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r], "\n".join(log), records


def book_run(
    base: Path,
    data: Path,
    *,
    lr: float,
    epochs: int,
    lora=None,
    read_last_real: bool = False,
    matrices_only: bool = False,
) -> tuple[list[float], list[tuple[float, float]]]:
    """The book's set-up, optimizer and loop on the same data in scratchgpt's data order:
    training loss of every step, validation loss and accuracy after every epoch. The flags swap
    in the choices scratchgpt makes differently by default: the last real token
    (``read_last_real``), weight decay on matrices only (``matrices_only``)."""
    splits = load_labelled(data, split_column="split")
    tokenizer = get_tokenizer("gpt2")
    ids, mask, labels = book_padded(splits.train.texts, splits.train.labels, tokenizer)
    val_data = book_padded(splits.val.texts, splits.val.labels, tokenizer, ids.shape[1])
    val = list(epoch_batches(*val_data, range(len(val_data[2])), drop_last=False))
    model = book_classifier(load_model(base).model, lora=lora)
    optimizer = book_optimizer(model, lr, 0.1, matrices_only=matrices_only)
    orders = [
        torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch_seed(123, e)))
        for e in range(epochs)
    ]
    epochs_data = (epoch_batches(ids, mask, labels, o.tolist()) for o in orders)
    return book_train_classifier_simple(
        model, epochs_data, optimizer, read_last_real=read_last_real, val=val
    )


# ---------------------------------------------------------------------------------------------
# Chapter 7 bonus (ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb): compute_dpo_loss,
# compute_logprobs


def book_compute_dpo_loss(
    model_chosen_logprobs, model_rejected_logprobs,
    reference_chosen_logprobs, reference_rejected_logprobs, beta=0.1,
):  # fmt: skip
    import torch.nn.functional as F

    model_logratios = model_chosen_logprobs - model_rejected_logprobs
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
    logits = model_logratios - reference_logratios
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def book_compute_logprobs(logits, labels, selection_mask=None):
    import torch.nn.functional as F

    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    log_probs = F.log_softmax(logits, dim=-1)
    selected_log_probs = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(
        -1
    )
    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()
        selected_log_probs = selected_log_probs * mask
        return selected_log_probs.sum(-1) / mask.sum(-1)
    return selected_log_probs.mean(-1)
