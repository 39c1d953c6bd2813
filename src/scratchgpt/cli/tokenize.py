"""`scratchgpt tokenize`: text -> token ids, or ids -> text, with any scratchgpt tokenizer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "encode text to token ids, or decode token ids to text"

EXAMPLES = """\
examples:
  scratchgpt tokenize "Hello, world"                       # GPT-2 ids: 15496 11 995
  scratchgpt tokenize --decode "15496 11 995"
  scratchgpt tokenize --file notes.txt --show-tokens
  scratchgpt tokenize "a <|endoftext|> b" --allow-special
  scratchgpt tokenize "Hello" --tokenizer simple            # vocabulary of The Verdict
  scratchgpt tokenize "hi" --tokenizer-file my-bpe.json     # from train-tokenizer --out
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help=HELP,
        description=HELP + ". Prints the ids separated by spaces (or the decoded text).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", nargs="?", help="text to encode (default: --file, or standard input)")
    p.add_argument("--file", "-f", type=Path, help="encode this UTF-8 text file")
    p.add_argument(
        "--tokenizer",
        "-t",
        choices=("gpt2", "simple", "char", "bpe"),
        help="which tokenizer (default: gpt2, or the type saved in --tokenizer-file)",
    )
    p.add_argument(
        "--backend",
        choices=("tiktoken", "scratch"),
        help="gpt2 implementation: tiktoken (fast, default) or scratch (pure Python); same ids",
    )
    p.add_argument(
        "--tokenizer-file",
        type=Path,
        help="a tokenizer saved by scratchgpt (e.g. by train-tokenizer --out); needed for bpe",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        help="simple/char: build the vocabulary from this file (default: bundled The Verdict)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--decode", metavar="IDS", help='decode these ids, e.g. "15496 11 995"')
    g.add_argument("--ids-file", type=Path, help="decode the ids in this file (spaces or commas)")
    p.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special tokens such as <|endoftext|> to their ids (default: an error)",
    )
    p.add_argument("--show-tokens", action="store_true", help="print each token id and its text")
    p.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8 in input files: stop with an error (default) or replace it",
    )
    p.set_defaults(func=run)


def parse_ids(text: str, source: str) -> list[int]:
    """Parse ids separated by whitespace or commas (optionally in [brackets])."""
    from scratchgpt.errors import TokenizerError

    ids = []
    for lineno, line in enumerate(text.replace("[", " ").replace("]", " ").splitlines(), 1):
        for item in line.replace(",", " ").split():
            try:
                ids.append(int(item))
            except ValueError:
                raise TokenizerError(
                    f"{source}, line {lineno}: {item!r} is not a token id (an integer); give ids "
                    'separated by spaces or commas, e.g. "15496 11 995"'
                ) from None
    return ids


def make_tokenizer(args: argparse.Namespace) -> Any:
    """The tokenizer the options ask for."""
    from scratchgpt.errors import TokenizerError
    from scratchgpt.tokenizers import GPT2Tokenizer, get_tokenizer, load_tokenizer

    if args.tokenizer_file is not None:
        tok = load_tokenizer(args.tokenizer_file)
        if args.tokenizer is not None and args.tokenizer != tok.name:
            raise TokenizerError(
                f"{args.tokenizer_file} holds a {tok.name!r} tokenizer, but --tokenizer "
                f"{args.tokenizer} was given; drop --tokenizer or pick the matching file"
            )
        if isinstance(tok, GPT2Tokenizer) and args.backend and args.backend != tok.backend:
            tok = GPT2Tokenizer(args.backend, files=tok.files)
        return tok
    name = args.tokenizer or "gpt2"
    if name == "gpt2":
        return get_tokenizer("gpt2", backend=args.backend or "tiktoken")
    if name == "bpe":
        raise TokenizerError(
            "--tokenizer bpe needs --tokenizer-file FILE (train one with scratchgpt "
            "train-tokenizer CORPUS --vocab-size N --out FILE)"
        )
    from scratchgpt.assets import asset_path
    from scratchgpt.fileio import read_text

    corpus = args.corpus if args.corpus is not None else asset_path("the-verdict.txt")
    return get_tokenizer(name, corpus=read_text(corpus, errors=args.encoding_errors))


def _piece(tok: Any, token_id: int) -> str:
    data = tok.decode_bytes([token_id])
    try:
        return json.dumps(data.decode("utf-8"), ensure_ascii=False)
    except UnicodeDecodeError:
        return repr(data)  # part of a multi-byte character


def run(args: argparse.Namespace) -> int:
    from scratchgpt.errors import TokenizerError
    from scratchgpt.fileio import decode_utf8, read_text

    tok = make_tokenizer(args)
    decoding = args.decode is not None or args.ids_file is not None
    if decoding:
        if args.text is not None or args.file is not None:
            raise TokenizerError("give text to encode or ids to decode, not both")
        if args.ids_file is not None:
            ids = parse_ids(read_text(args.ids_file), str(args.ids_file))
        else:
            ids = parse_ids(args.decode, "--decode")
        if args.show_tokens:
            for i in ids:
                print(f"{i}\t{_piece(tok, i)}")
        else:
            print(tok.decode(ids))
        return 0
    if args.text is not None and args.file is not None:
        raise TokenizerError("give TEXT or --file, not both")
    if args.text is not None:
        text = args.text
    elif args.file is not None:
        text = read_text(args.file, errors=args.encoding_errors)
    elif not sys.stdin.isatty():
        text = decode_utf8(sys.stdin.buffer.read(), "<stdin>", args.encoding_errors)
    else:
        raise TokenizerError("nothing to encode: give TEXT, --file FILE, or pipe text in")
    options = {"allowed_special": "all"} if args.allow_special else {}
    ids = tok.encode(text, **options)
    if args.show_tokens:
        for i in ids:
            print(f"{i}\t{_piece(tok, i)}")
    else:
        print(" ".join(map(str, ids)))
    return 0
