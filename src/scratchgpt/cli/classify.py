"""`scratchgpt classify`: label texts with a fine-tuned classifier."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from scratchgpt.cli.args import positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "classify",
        help="classify texts with a fine-tuned classifier",
        description=(
            "Print the predicted label and its probability for each text (tab-separated: label, "
            "probability, text). Texts come from the arguments or --file: a text file (one text "
            "per line) or a CSV/TSV/JSONL file with --text-column; with --label-column as well, "
            "the accuracy against those labels is printed at the end."
        ),
        epilog=(
            "examples:\n"
            '  scratchgpt classify --checkpoint runs/spam "You won a prize! Call now"\n'
            "  scratchgpt classify --checkpoint runs/spam --file messages.txt --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", metavar="DIR", required=True, help="classifier checkpoint or run folder"
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", metavar="FILE", help="read the texts from FILE")
    p.add_argument("--text-column", metavar="NAME", help="text column of a CSV/TSV/JSONL --file")
    p.add_argument("--label-column", metavar="NAME", help="true labels in --file: report accuracy")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="texts per forward pass"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per text, with all probabilities"
    )
    p.set_defaults(func=run)


def _read_inputs(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    from pathlib import Path

    from scratchgpt.errors import DataError
    from scratchgpt.fileio import read_text

    texts = list(args.texts)
    labels: list[str] | None = None
    if args.file:
        path = Path(args.file)
        if args.text_column or args.label_column:
            from scratchgpt.data.classification import read_labelled_records

            records = read_labelled_records(
                path,
                text_column=args.text_column or "text",
                label_column=args.label_column or args.text_column or "text",
            )
            texts += [r[0] for r in records]
            if args.label_column:
                labels = [r[1] for r in records]
                for r in records:
                    if not r[0].strip():
                        raise DataError(f"{r[3]}: empty text")
        else:
            for n, line in enumerate(read_text(path).splitlines(), 1):
                if not line.strip():
                    raise DataError(f"{path}, line {n}: empty line (one text per line expected)")
                texts.append(line)
    if not texts:
        raise DataError("no texts: give them as arguments or with --file")
    return texts, labels


def run(args: argparse.Namespace) -> int:
    from scratchgpt.errors import DataError
    from scratchgpt.tasks.classify import classify, load_classifier

    clf = load_classifier(args.checkpoint, device=args.device)
    texts, labels = _read_inputs(args)
    if labels is not None:
        unknown = sorted({x for x in labels if x not in clf.label_names})
        if unknown:
            line = labels.index(unknown[0]) + 1
            raise DataError(
                f"{args.file}: label {unknown[0]!r} (record {line}) is not in the classifier's "
                f"label set {clf.label_names}"
            )
    preds = classify(clf, texts, batch_size=args.batch_size)
    for p in preds:
        if args.json:
            print(json.dumps({"label": p.label, "probability": p.probability,
                              "probabilities": p.probabilities, "text": p.text}))  # fmt: skip
        else:
            print(f"{p.label}\t{p.probability:.4f}\t{p.text}")
    if labels is not None:
        correct = sum(p.label == y for p, y in zip(preds, labels, strict=True))
        print(
            f"accuracy: {correct / len(labels) * 100:.2f}% ({correct}/{len(labels)})",
            file=sys.stderr,
        )
    return 0
