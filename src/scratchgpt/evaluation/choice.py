"""Multiple-choice accuracy by log-likelihood (the way MMLU- and HellaSwag-style benchmarks score
a base model): each choice is scored as the continuation of the question, and the model's answer
is the choice it finds most likely, by its total log-probability (``accuracy``) or by that
divided by the choice's length in characters (``accuracy_norm``, the harness's ``acc_norm``).

Items come from JSON (a list), JSONL or CSV files, or a folder of them:

- JSON/JSONL: ``{"question": str, "choices": [str, ...], "answer": index | letter | choice text,
  "subject": str (optional)}``.
- CSV with a header: ``question``, ``answer``, the choices as a JSON list in ``choices`` or as
  columns ``A``, ``B``, ``C`` ... (and ``subject``).
- CSV without a header (MMLU's files): question, the choices, the answer letter; the subject is
  the file's name without ``_test``/``_val``/``_dev``.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from scratchgpt.errors import DataError
from scratchgpt.evaluation.loglik import encode_pair, prefix_token, score_continuations
from scratchgpt.fileio import PathLike, read_text

LETTERS = string.ascii_uppercase
SUFFIXES = (".json", ".jsonl", ".csv")


@dataclass(frozen=True)
class ChoiceItem:
    """One question: its choices, the index of the right one, and its subject (or None)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None

    def context(self) -> str:
        """What each choice continues: the question, then ``Answer:``."""
        return f"{self.question}\nAnswer:"


def _answer_index(value: Any, choices: Sequence[str], where: str) -> int:
    """An answer given as an index, a letter or the text of a choice -> its index."""
    if isinstance(value, bool):
        raise DataError(f"{where}: field 'answer' must be an index, a letter or a choice's text")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip() in LETTERS:
        index = LETTERS.index(value.strip())
    elif isinstance(value, str) and value in choices:
        index = list(choices).index(value)
    else:
        raise DataError(
            f"{where}: field 'answer' is {json.dumps(value)[:40]}: give the right choice's index "
            "(0 for the first), its letter (A for the first) or its text"
        )
    if not 0 <= index < len(choices):
        raise DataError(f"{where}: answer {value!r} is out of range for {len(choices)} choices")
    return index


def _item(rec: Any, where: str, subject: str | None) -> ChoiceItem:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected an object, got a {type(rec).__name__}")
    for key in ("question", "choices", "answer"):
        if key not in rec:
            raise DataError(f"{where}: no field {key!r} (it has {sorted(rec)})")
    question, choices = rec["question"], rec["choices"]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: field 'question' must be a non-empty string")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise DataError(f"{where}: field 'choices' must be a list of two or more non-empty strings")
    answer = _answer_index(rec["answer"], choices, where)
    sub = rec.get("subject", subject)
    return ChoiceItem(question, tuple(choices), answer, None if sub is None else str(sub))


def _csv_items(path: Path, text: str) -> list[ChoiceItem]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    items = []
    if "question" in header and "answer" in header:
        letters = [h for h in header if len(h) == 1 and h in LETTERS]
        for lineno, row in enumerate(rows[1:], 2):
            rec = dict(zip(header, row))
            where = f"{path}: line {lineno}"
            if "choices" in rec:
                try:
                    rec["choices"] = json.loads(rec["choices"])
                except json.JSONDecodeError:
                    raise DataError(f"{where}: field 'choices' must be a JSON list") from None
            else:
                rec["choices"] = [rec[x] for x in letters if rec.get(x, "").strip()]
            items.append(_item(rec, where, rec.get("subject") or None))
        return items
    subject = path.stem
    for tail in ("_test", "_val", "_dev"):
        subject = subject.removesuffix(tail)
    for lineno, row in enumerate(rows, 1):
        if len(row) < 4:
            raise DataError(
                f"{path}: line {lineno}: {len(row)} column(s); a CSV without a header needs "
                "question, two or more choices and the answer letter (MMLU's layout)"
            )
        rec = {"question": row[0], "choices": row[1:-1], "answer": row[-1]}
        items.append(_item(rec, f"{path}: line {lineno}", subject))
    return items


def load_choice_items(data: PathLike) -> list[ChoiceItem]:
    """Multiple-choice items from a JSON/JSONL/CSV file or a folder of such files (in name
    order)."""
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"{path}: no {'/'.join(SUFFIXES)} files in this folder")
        return [item for f in files for item in load_choice_items(f)]
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder of multiple-choice items")
    text = read_text(path)
    if path.suffix == ".csv":
        items = _csv_items(path, text)
    elif path.suffix == ".jsonl" or not text.lstrip().startswith("["):
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            items.append(_item(rec, f"{path}: line {lineno}", None))
    else:
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        items = [_item(rec, f"{path}: item {i}", None) for i, rec in enumerate(recs)]
    if not items:
        raise DataError(f"{path}: no multiple-choice items")
    return items


def _accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    n = len(rows)
    return {
        "accuracy": sum(r["correct"] for r in rows) / n,
        "accuracy_norm": sum(r["correct_norm"] for r in rows) / n,
        "count": n,
    }


def evaluate_choice(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[ChoiceItem],
    *,
    batch_size: int = 8,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Accuracy (and length-normalised accuracy) of ``model`` on the items, overall and per
    subject, with each item's choice log-likelihoods and answers under ``items``."""
    requests, owners = [], []
    for i, item in enumerate(items):
        for choice in item.choices:
            requests.append(encode_pair(tokenizer, item.context(), " " + choice))
            owners.append(i)
    scores = score_continuations(
        model, requests, pad_id=prefix_token(tokenizer), batch_size=batch_size, progress=progress
    )
    per_item: list[list[float]] = [[] for _ in items]
    for owner, score in zip(owners, scores):
        per_item[owner].append(score.logprob)
    rows = []
    for item, lls in zip(items, per_item):
        normed = [ll / len(" " + c) for ll, c in zip(lls, item.choices)]
        pick = max(range(len(lls)), key=lls.__getitem__)
        pick_norm = max(range(len(normed)), key=normed.__getitem__)
        rows.append({
            "question": item.question,
            "subject": item.subject,
            "answer": item.answer,
            "loglikelihoods": lls,
            "prediction": pick,
            "prediction_norm": pick_norm,
            "correct": pick == item.answer,
            "correct_norm": pick_norm == item.answer,
        })  # fmt: skip
    report: dict[str, Any] = _accuracy(rows)
    subjects = sorted({r["subject"] for r in rows if r["subject"] is not None})
    if subjects:
        report["subjects"] = {
            s: _accuracy([r for r in rows if r["subject"] == s]) for s in subjects
        }
    report["items"] = rows
    return report


EXAMPLE_FILE = "choice-example.jsonl"
MMLU = "mmlu"


def example_path() -> Path:
    """The bundled example: 12 questions in 4 subjects."""
    from scratchgpt.assets import asset_path

    return asset_path(EXAMPLE_FILE)


def mmlu_test_folder(cache_dir: PathLike | None = None) -> Path:
    """MMLU's test CSV files (one per subject), extracted once from the downloaded archive
    (``scratchgpt data download mmlu``) into a folder beside it."""
    import shutil
    import tarfile
    import tempfile

    from scratchgpt.data.sources import get_path

    archive = get_path(MMLU, cache_dir=cache_dir)
    folder = archive.parent / "test"
    if folder.is_dir():
        return folder
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".test-extract-") as tmp:
        with tarfile.open(archive) as tar:
            members = [
                m for m in tar.getmembers()
                if m.isfile() and m.name.startswith("data/test/") and m.name.endswith(".csv")
            ]  # fmt: skip
            if not members:
                raise DataError(
                    f"{archive}: holds no data/test/*.csv files; is it MMLU's data.tar?"
                )
            out = Path(tmp) / "test"
            out.mkdir()
            for m in members:
                src = tar.extractfile(m)
                if src is None:
                    continue
                with src, open(out / Path(m.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        out.rename(folder)  # whole, or not at all
    return folder


def resolve_choice_data(data: PathLike | None, cache_dir: PathLike | None = None) -> Path:
    """A file or folder of items: the bundled example (None), MMLU's test set (``"mmlu"``,
    downloaded first), or the path given."""
    if data is None:
        return example_path()
    if str(data) == MMLU and not Path(data).exists():
        return mmlu_test_folder(cache_dir)
    return Path(data)
