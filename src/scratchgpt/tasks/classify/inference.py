"""Classifying texts with a fine-tuned classifier (the book's section 6.8)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from scratchgpt.errors import DataError
from scratchgpt.fileio import PathLike
from scratchgpt.tasks.classify.loading import Classifier, load_classifier
from scratchgpt.tasks.classify.task import classifier_logits


@dataclass
class Prediction:
    """The classification of one text."""

    text: str
    label: str
    label_id: int
    probability: float
    probabilities: dict[str, float]


def classify(
    model_or_dir: Classifier | PathLike,
    texts: str | Sequence[str],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> list[Prediction]:
    """Classify texts with a fine-tuned classifier (a :class:`Classifier` or a checkpoint/run
    folder). Texts longer than the classifier's max_length are truncated, with a warning.
    ``progress``: a bar on a terminal, a line every few seconds elsewhere (None), or nothing
    (False)."""
    from scratchgpt.progress import progress as progress_bar

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
        starts = range(0, len(encoded), batch_size)
        for start in progress_bar(
            starts, desc="classifying", unit="batches", enabled=progress, leave=False
        ):
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
