"""Labelled texts for classification (the book's chapter 6): the SMS Spam Collection prepared
exactly as the book prepares it, any CSV/TSV/JSONL file with a text and a label column, and a
padded token dataset.

The book reads the spam file with pandas; this module reproduces that without pandas:

* ``read_csv(sep="\\t", header=None)`` uses '"' as quote character: a field that *starts* with
  '"' runs to the closing quote, even across line breaks, and ``""`` inside it is one '"'. Two
  messages of the file span two lines each, so its 5,574 lines are 5,572 rows. The csv module
  with the same dialect (``strict=False``) parses identically.
* ``DataFrame.sample(n, random_state=123)`` draws ``RandomState(123).choice(len, n,
  replace=False)``, which is ``RandomState(123).permutation(len)[:n]``; ``sample(frac=1)`` is a
  full permutation. :func:`pandas_sample_positions` is that draw.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchgpt.errors import Advice, ConfigError, DataError
from scratchgpt.fileio import PathLike, read_text

SPAM_SOURCE = "sms-spam"
SPAM_LABELS = ("ham", "spam")
# pandas' default NA strings: a field equal to one of these becomes NaN, not text.
PANDAS_NA = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip


@dataclass
class LabelledData:
    """Texts with integer labels, and the names of the labels (index = label id)."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, positions: Sequence[int]) -> LabelledData:
        """The rows at ``positions``, in that order."""
        return LabelledData(
            [self.texts[i] for i in positions],
            [self.labels[i] for i in positions],
            list(self.label_names),
            self.source,
        )

    def counts(self) -> dict[str, int]:
        """Rows per label name."""
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.label_names)}


@dataclass
class Splits:
    """Train / validation / test parts of a labelled data set."""

    train: LabelledData
    val: LabelledData
    test: LabelledData
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# ---------------------------------------------------------------------------------------------
# Reading rows


def read_delimited(
    path: PathLike, delimiter: str, *, header: bool
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header or None, [(line number, fields)]) of a CSV/TSV file, parsed as pandas' C parser
    does by default (quote '"', doubled quotes, quoted fields may span lines, blank lines
    skipped)."""
    p = Path(path)
    text = read_text(p)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quotechar='"',
        doublequote=True,
        skipinitialspace=False,
        strict=False,
    )
    rows: list[tuple[int, list[str]]] = []
    try:
        start = 1
        for fields in reader:
            line = start
            start = reader.line_num + 1
            if not fields or fields == [""]:
                continue
            rows.append((line, fields))
    except csv.Error as e:
        raise DataError(f"{p}, line {reader.line_num}: cannot parse: {e}") from None
    head = None
    if header:
        if not rows:
            raise DataError(f"{p}: the file is empty (expected a header line with column names)")
        head = rows.pop(0)[1]
    return head, rows


def read_sms_spam(path: PathLike | None = None) -> LabelledData:
    """All 5,572 rows of the SMS Spam Collection (labels ham 0, spam 1), as pandas'
    ``read_csv(path, sep="\\t", header=None, names=["Label", "Text"])`` reads them."""
    if path is None:
        from scratchgpt.data.sources import get_path

        path = get_path(SPAM_SOURCE)
    _, rows = read_delimited(path, "\t", header=False)
    texts, labels = [], []
    for line, fields in rows:
        if len(fields) != 2:
            raise DataError(
                f"{path}, line {line}: expected 2 tab-separated fields (label, text), found "
                f"{len(fields)}"
            )
        label, text = fields
        if label not in SPAM_LABELS:
            raise DataError(f"{path}, line {line}: label {label!r} is not 'ham' or 'spam'")
        if text in PANDAS_NA:
            raise DataError(f"{path}, line {line}: empty message")
        texts.append(text)
        labels.append(SPAM_LABELS.index(label))
    return LabelledData(texts, labels, list(SPAM_LABELS), str(path))


def pandas_sample_positions(n: int, size: int, random_state: int) -> list[int]:
    """The row positions ``DataFrame.sample(size, random_state=random_state)`` picks from ``n``
    rows (``frac=1`` is ``size=n``): ``RandomState(seed).choice(n, size, replace=False)``."""
    import numpy as np

    if not 0 <= size <= n:
        raise ConfigError(f"cannot sample {size} rows from {n}")
    return [int(i) for i in np.random.RandomState(random_state).permutation(n)[:size]]


def balance_book(data: LabelledData, random_state: int = 123) -> LabelledData:
    """The book's ``create_balanced_dataset``: as many ham rows as spam rows, sampled with
    ``random_state``; the sampled ham first (in sampled order), then all spam in file order."""
    ham = [i for i, y in enumerate(data.labels) if y == 0]
    spam = [i for i, y in enumerate(data.labels) if y == 1]
    picks = pandas_sample_positions(len(ham), len(spam), random_state)
    return data.subset([ham[i] for i in picks] + spam)


def split_fractions(
    data: LabelledData,
    train_frac: float = 0.7,
    val_frac: float = 0.1,
    random_state: int = 123,
) -> Splits:
    """The book's ``random_split``: shuffle as ``sample(frac=1, random_state)``, then cut
    ``int(n * train_frac)`` training and ``int(n * val_frac)`` validation rows; the rest test."""
    if not (0 < train_frac < 1 and 0 <= val_frac < 1 and train_frac + val_frac <= 1):
        raise ConfigError(
            f"split fractions train={train_frac}, val={val_frac} must be in (0, 1) and sum to "
            "at most 1 (the rest is the test set)"
        )
    n = len(data)
    order = pandas_sample_positions(n, n, random_state)
    train_end = int(n * train_frac)
    val_end = train_end + int(n * val_frac)
    return Splits(
        data.subset(order[:train_end]),
        data.subset(order[train_end:val_end]),
        data.subset(order[val_end:]),
        {"source": data.source, "split": f"fractions {train_frac}/{val_frac}, seed {random_state}"},
    )


def spam_splits(path: PathLike | None = None, random_state: int = 123) -> Splits:
    """The book's spam data: balanced to 747 + 747 and split 1,045 / 149 / 300."""
    full = read_sms_spam(path)
    splits = split_fractions(balance_book(full, random_state), 0.7, 0.1, random_state)
    splits.info.update(source="SMS Spam Collection (balanced as the book)", rows=len(full))
    return splits


# ---------------------------------------------------------------------------------------------
# Any labelled file


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("csv", "tsv", "jsonl"):
            raise ConfigError(f"unknown data format {fmt!r}; use csv, tsv or jsonl")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise DataError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; name the file .csv, .tsv "
        "or .jsonl, or pass the format (--format)"
    )


def read_labelled_records(
    path: PathLike,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = None,
    fmt: str | None = None,
) -> list[tuple[str, str, str | None, str]]:
    """(text, label, split or None, where) of every row of a CSV, TSV (header line with column
    names) or JSONL (one object per line) file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    kind = _detect_format(p, fmt)
    wanted = [text_column, label_column] + ([split_column] if split_column else [])
    out: list[tuple[str, str, str | None, str]] = []
    if kind in ("csv", "tsv"):
        head, rows = read_delimited(p, "," if kind == "csv" else "\t", header=True)
        assert head is not None
        missing = [c for c in wanted if c not in head]
        if missing:
            raise DataError(
                f"{p}: missing column(s) {missing}; the header has {head}. Name the columns with "
                "--text-column / --label-column"
            )
        idx = [head.index(c) for c in wanted]
        for line, fields in rows:
            if len(fields) != len(head):
                raise DataError(
                    f"{p}, line {line}: {len(fields)} field(s), the header has {len(head)}"
                )
            vals = [fields[i] for i in idx]
            out.append((vals[0], vals[1], vals[2] if split_column else None, f"{p}, line {line}"))
        return out
    for n, line in enumerate(read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}, line {n}: invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in wanted if c not in obj]
        if missing:
            raise DataError(
                f"{p}, line {n}: missing field(s) {missing}; the record has {sorted(obj)}. Name "
                "the fields with --text-column / --label-column"
            )
        text = obj[text_column]
        if not isinstance(text, str):
            raise DataError(f"{p}, line {n}: field {text_column!r} must be a string")
        split = obj[split_column] if split_column else None
        out.append(
            (text, str(obj[label_column]), None if split is None else str(split), f"{p}, line {n}")
        )
    return out


# A label on one row of a file this long is a typo far more often than a class: with the label
# set taken from the data it would silently become one more class.
LONE_LABEL_MIN_ROWS = 10


def _refuse_lone_labels(records: Sequence[tuple[str, str, str | None, str]]) -> None:
    counts = Counter(r[1] for r in records)
    if len(records) < LONE_LABEL_MIN_ROWS:
        return
    lone = [label for label, n in counts.items() if n == 1]
    if not lone:
        return
    where = next(r[3] for r in records if r[1] == lone[0])
    known = sorted(label for label, n in counts.items() if n > 1)
    every = ",".join(sorted(counts))
    raise DataError(
        f"{where}: label {lone[0]!r} appears on this row only; the known labels are {known}. "
        "Fix the row if it is a typo",
        Advice(
            f"or, if it is a class of its own, pass the whole label set: label_names={sorted(counts)}",
            f"or, if it is a class of its own, pass the whole label set: --labels {every}",
            "--labels",
            sep=", ",
        ),
    )


def load_labelled(
    path: PathLike,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = None,
    label_names: Sequence[str] | None = None,
    fmt: str | None = None,
    train_frac: float = 0.7,
    val_frac: float = 0.1,
    random_state: int = 123,
) -> Splits:
    """Train/val/test splits of a labelled file.

    Labels are the distinct values of the label column (sorted, or ``label_names`` in that
    order). With ``split_column`` each row names its split (train, val/validation/dev, test);
    otherwise the rows are shuffled and cut by ``train_frac``/``val_frac`` as :func:`split_fractions`.
    """
    records = read_labelled_records(
        path, text_column=text_column, label_column=label_column, split_column=split_column, fmt=fmt
    )
    if not records:
        raise DataError(f"{path}: no rows")
    for text, _, _, where in records:
        if not text.strip():
            raise DataError(f"{where}: empty text in column {text_column!r}; remove the row")
    found = sorted({r[1] for r in records})
    if label_names is not None:
        names = list(label_names)
        unknown = [x for x in found if x not in names]
        if unknown:
            first = next(r[3] for r in records if r[1] == unknown[0])
            raise DataError(
                f"{first}: label {unknown[0]!r} is not in the given label set {names} "
                f"(labels found: {found})"
            )
    else:
        names = found
        _refuse_lone_labels(records)
    if len(found) < 2:
        raise DataError(
            f"{path}: every row has the label {found[0]!r}; a classifier needs at least two classes"
        )
    data = LabelledData(
        [r[0] for r in records], [names.index(r[1]) for r in records], names, str(path)
    )
    if split_column is None:
        return split_fractions(data, train_frac, val_frac, random_state)
    aliases = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test"}  # fmt: skip
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, (_, _, split, where) in enumerate(records):
        key = aliases.get((split or "").strip().lower())
        if key is None:
            raise DataError(
                f"{where}: split {split!r} in column {split_column!r} is not train, val or test"
            )
        parts[key].append(i)
    if not parts["train"]:
        raise DataError(f"{path}: no rows have split 'train' in column {split_column!r}")
    return Splits(
        data.subset(parts["train"]),
        data.subset(parts["val"]),
        data.subset(parts["test"]),
        {"source": str(path), "split": f"given by column {split_column!r}"},
    )


# ---------------------------------------------------------------------------------------------
# Token dataset


class ClassificationDataset:
    """Token ids of labelled texts, padded with ``pad_token_id`` (the book's ``SpamDataset``).

    Each item is ``(input_ids, attention_mask, label)``: (T,) int64 ids, (T,) int64 mask (1 for
    real tokens) and a scalar label. Texts are right-padded to ``max_length`` (default: the
    longest text here, as the book does for the training set); longer texts are truncated, with
    one warning naming how many.
    """

    def __init__(
        self,
        data: LabelledData,
        tokenizer: Any,
        max_length: int | None = None,
        pad_token_id: int = 50256,
        *,
        context_length: int | None = None,
        name: str = "data",
    ) -> None:
        import torch

        self.label_names = list(data.label_names)
        encoded = []
        for i, text in enumerate(data.texts):
            if not text.strip():
                raise DataError(f"{data.source or name}: text {i} of the {name} set is empty")
            encoded.append(list(tokenizer.encode(text)))
        longest = max((len(e) for e in encoded), default=0)
        if max_length is None:
            max_length = longest
            if context_length is not None and max_length > context_length:
                max_length = context_length
        if max_length < 1:
            raise DataError(f"{name}: no tokens to classify")
        if context_length is not None and max_length > context_length:
            raise ConfigError(
                f"max_length {max_length} exceeds the model's context_length {context_length}"
            )
        n_long = sum(len(e) > max_length for e in encoded)
        if n_long:
            warnings.warn(
                f"{n_long} text(s) of the {name} set are longer than {max_length} tokens and were "
                "truncated to their first tokens",
                stacklevel=2,
            )
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        n = len(encoded)
        self.input_ids = torch.full((n, max_length), pad_token_id, dtype=torch.long)
        self.attention_mask = torch.zeros((n, max_length), dtype=torch.long)
        for i, e in enumerate(encoded):
            e = e[:max_length]
            self.input_ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            self.attention_mask[i, : len(e)] = 1
        self.labels = torch.tensor(data.labels, dtype=torch.long)
        self.num_truncated = n_long

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, Any, Any]:
        return self.input_ids[i], self.attention_mask[i], self.labels[i]
