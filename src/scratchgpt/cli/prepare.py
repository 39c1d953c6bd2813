"""`scratchgpt prepare`: tokenize a corpus into token shards for pretraining."""

from __future__ import annotations

import argparse
import shlex
import sys

from scratchgpt.cli.args import fraction, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` command."""
    p = subparsers.add_parser(
        "prepare",
        help="tokenize text files, folders or JSONL into token shards for pretraining",
        description=(
            "Tokenize a corpus (text files, folders of them searched recursively, or JSONL files) "
            "in parallel into token shards train_000000.bin, val_000000.bin, ... plus meta.json "
            "and tokenizer.json in --out. Each document is followed by <|endoftext|>."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text file, folder or .jsonl file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        metavar="NAME|FILE",
        help="tokenizer name (gpt2) or a file saved by a scratchgpt tokenizer (default: gpt2)",
    )
    p.add_argument(
        "--jsonl-field",
        metavar="NAME",
        help="read every input as JSONL and take the text from this field "
        "(.jsonl files are read as JSONL with field 'text' anyway)",
    )
    p.add_argument(
        "--glob", default="*.txt", help="file pattern inside folders (default: %(default)s)"
    )
    p.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.0005,
        metavar="F",
        help="chance that a document goes to the validation split (default: %(default)s)",
    )
    p.add_argument(
        "--shard-tokens",
        type=positive_int,
        default=100_000_000,
        metavar="N",
        help="tokens per shard file (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes (default: all cores)",
    )
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/val split")
    p.add_argument(
        "--encoding-errors",
        choices=("strict", "replace", "ignore"),
        default="strict",
        help="what to do with bytes that are not UTF-8 (default: strict = stop with an error)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _command_line(args: argparse.Namespace) -> str:
    """The command with every option spelled out, recorded in meta.json to reproduce the run."""
    words = ["scratchgpt", "prepare", *args.inputs, "--out", args.out]
    words += ["--tokenizer", args.tokenizer, "--glob", args.glob]
    if args.jsonl_field is not None:
        words += ["--jsonl-field", args.jsonl_field]
    words += ["--val-fraction", str(args.val_fraction), "--shard-tokens", str(args.shard_tokens)]
    words += ["--seed", str(args.seed), "--encoding-errors", args.encoding_errors]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Prepare the corpus and print a summary."""
    from scratchgpt.data.corpus import prepare

    result = prepare(
        args.inputs,
        args.out,
        args.tokenizer,
        jsonl_field=args.jsonl_field,
        glob=args.glob,
        val_fraction=args.val_fraction,
        shard_tokens=args.shard_tokens,
        num_workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        encoding_errors=args.encoding_errors,
        seed=args.seed,
        command=_command_line(args),
    )
    shards = {s: len(v) for s, v in result.shards.items()}
    print(f"prepared {result.out_dir}")
    for split in ("train", "val"):
        print(
            f"  {split:5s}  {result.documents[split]:>10,d} documents  "
            f"{result.tokens[split]:>14,d} tokens  {shards[split]:>4d} shard(s)"
        )
    print(
        f"  {result.total_tokens:,d} tokens in {result.seconds:.2f} s "
        f"({result.tokens_per_second:,.0f} tokens/s)"
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
