"""`scratchgpt train-tokenizer`: learn a byte-level BPE vocabulary from text files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from scratchgpt.cli.args import positive_int

HELP = "train a byte-level BPE tokenizer on text files"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-tokenizer",
        help=HELP,
        description=HELP + " (streamed: only pre-token counts are held in memory), and save it "
        "as one JSON file for `scratchgpt tokenize --tokenizer-file`.",
        epilog="example:\n  scratchgpt train-tokenizer corpus/*.txt --vocab-size 8192 --out bpe.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("corpus", nargs="+", type=Path, help="UTF-8 text files")
    p.add_argument(
        "--vocab-size",
        type=positive_int,
        required=True,
        help="tokens in the vocabulary (>= 256 + specials)",
    )
    p.add_argument("--out", "-o", type=Path, required=True, help="where to save the tokenizer")
    p.add_argument(
        "--special-tokens",
        nargs="*",
        default=["<|endoftext|>"],
        metavar="TOKEN",
        help="special tokens, given the last ids (default: <|endoftext|>; none: give no value)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8 in the corpus: stop with an error (default) or replace it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from scratchgpt.errors import DataError
    from scratchgpt.tokenizers import train_bpe

    if args.out.is_dir():
        raise DataError(f"--out {args.out}: is a folder; name the tokenizer file to write (.json)")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(
            f"{args.out} exists; refusing to overwrite it (use --overwrite to replace it)"
        )
    for path in args.corpus:
        if not path.is_file():
            raise DataError(f"{path}: corpus file not found (or not a file)")
    start = time.perf_counter()
    tok = train_bpe(
        args.corpus,
        args.vocab_size,
        args.special_tokens,
        progress=not args.no_progress,
        encoding_errors=args.encoding_errors,
    )
    seconds = time.perf_counter() - start
    tok.save(args.out, overwrite=args.overwrite)
    info = tok.training_info or {}
    n_special = len(tok.special_tokens)
    print(
        f"vocab size:   {tok.vocab_size:,} (256 bytes + {tok.vocab_size - 256 - n_special:,} "
        f"merged + {n_special} special)"
    )
    if tok.vocab_size < args.vocab_size:
        print(
            f"              (asked for {args.vocab_size:,}: the corpus ran out of pairs to merge)"
        )
    print(f"merges:       {info.get('merges', 0):,}")
    print(
        f"corpus:       {info.get('corpus_bytes', 0):,} bytes in {len(args.corpus)} file(s), "
        f"{info.get('unique_pretokens', 0):,} distinct pre-tokens"
    )
    tokens = info.get("corpus_tokens", 0)
    if tokens:
        print(
            f"compression:  {info['corpus_bytes'] / tokens:.2f} bytes/token "
            f"({tokens:,} tokens on the corpus)"
        )
    print(f"time:         {seconds:.2f} s")
    print(f"saved:        {args.out}")
    return 0
