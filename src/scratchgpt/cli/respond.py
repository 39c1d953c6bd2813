"""`scratchgpt respond`: answer instruction records with a checkpoint (the book's section 7.7)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from scratchgpt.cli.args import (
    add_dtype_flag,
    add_quantize_flag,
    fraction,
    inference_dtype,
    positive_int,
    probability,
)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --prompt-style, --device: how respond, chat and evaluate load a model."""
    from scratchgpt.data.instructions import STYLE_NAMES

    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        required=True,
        help="checkpoint folder, run folder (its newest checkpoint) or Hugging Face folder",
    )
    p.add_argument(
        "--prompt-style",
        choices=STYLE_NAMES,
        help="prompt template (default: the one stored in the checkpoint, else the model's "
        "chat template when it has one (chat), else alpaca)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    add_dtype_flag(p)
    add_quantize_flag(p)


def load_for_inference(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model in eval mode, tokenizer, prompt style name) for --checkpoint."""
    import torch

    from scratchgpt.errors import ConfigError
    from scratchgpt.generation import optimize_for_decoding
    from scratchgpt.tasks.instruct import checkpoint_style, load_instruct_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    dtype = inference_dtype(args.dtype, args.device, args.quantize)
    loaded = load_instruct_model(args.checkpoint, dtype=dtype, quantize=args.quantize)
    model = loaded.model.to(args.device).eval()
    optimize_for_decoding(model)
    return (
        model,
        loaded.tokenizer,
        checkpoint_style(loaded.metadata, args.prompt_style, loaded.tokenizer),
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "respond",
        help="answer instruction records with a checkpoint (writes model_response)",
        description=(
            "Generate a response for each record (greedy, stopping at <|endoftext|>, prompt and "
            "'### Response:' marker removed, as the book's section 7.7) and write the records with a model_response field "
            "as a JSON list, ready for `scratchgpt evaluate judge`."
        ),
    )
    add_model_flags(p)
    p.add_argument(
        "--data",
        metavar="FILE",
        help="JSON or JSONL instruction records (default: the bundled set)",
    )
    add_record_flags(p, default_split="all")
    p.add_argument(
        "--max-new-tokens", type=positive_int, default=256, metavar="N", help="default: 256"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="default: 8")
    p.add_argument(
        "--response-prompt",
        choices=["book", "marker"],
        default="book",
        help="book (default): prompt with the instruction and input alone, the model writes the "
        "response marker (removed), as the book's section 7.7 and finetune-instruct; marker: end "
        "the prompt with the marker and stop at the next user turn",
    )
    p.add_argument("--out", metavar="FILE", help="output JSON file (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep the responses it finished in --out's .partial "
        "file (or --out), generate the rest",
    )
    p.set_defaults(func=run)


def add_record_flags(p: argparse.ArgumentParser, default_split: str) -> None:
    """--split/--train-frac/--test-frac/--limit/--*-field: which records `select_records` takes
    (split as finetune-instruct splits them)."""
    p.add_argument(
        "--split",
        choices=["all", "train", "test", "val"],
        default=default_split,
        help=f"which part of the records (split as finetune-instruct does; default: {default_split})",
    )
    p.add_argument("--train-frac", type=probability, default=0.85, help="default: 0.85")
    p.add_argument("--test-frac", type=fraction, default=0.10, help="default: 0.10")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N records")
    for name in ("instruction", "input", "output"):
        p.add_argument(f"--{name}-field", metavar="NAME", help=f"field holding the {name}")


def select_records(args: argparse.Namespace) -> list[dict[str, str]]:
    """The records of --data, --split and --limit."""
    from scratchgpt.data.instructions import load_instruction_records, split_records
    from scratchgpt.errors import DataError

    fields = {
        n: getattr(args, f"{n}_field")
        for n in ("instruction", "input", "output")
        if getattr(args, f"{n}_field", None)
    }
    records = load_instruction_records(args.data, fields=fields)
    if args.split != "all":
        train, test, val = split_records(records, args.train_frac, args.test_frac)
        records = {"train": train, "test": test, "val": val}[args.split]
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise DataError(
            f"no records to use: the {args.split} split of {args.data or 'the bundled data'} is "
            "empty; choose another --split or other fractions"
        )
    return records


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so an interrupted run saves its work
    (signal handlers can only be set in the main thread; elsewhere nothing changes)."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from scratchgpt.errors import ConfigError, DataError
    from scratchgpt.fileio import check_writable
    from scratchgpt.tasks.instruct import PartialResponses, generate_responses, write_responses

    if args.out and Path(args.out).is_dir():
        raise DataError(f"--out {args.out}: is a folder; name a JSON file to write")
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out FILE: the output file of the interrupted run")
    if args.out and Path(args.out).exists() and not (args.overwrite or args.resume):
        raise FileExistsError(
            f"{args.out} exists; pass --overwrite to replace it (or --resume to continue it)"
        )
    if args.out:
        check_writable(args.out)  # a read-only or full disk shows now, not after generating
    records = select_records(args)
    partial = PartialResponses(args.out) if args.out else None
    done = _finished_before(args, partial, records)
    if done:
        print(f"resuming: {len(done)} of {len(records)} responses already done", file=sys.stderr)
    model, tokenizer, style = load_for_inference(args)
    try:
        with sigterm_as_interrupt():
            out = generate_responses(
                model,
                tokenizer,
                records,
                style,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                response_prompt=args.response_prompt,
                done=done,
                on_batch=partial.update if partial is not None else None,
            )
    except KeyboardInterrupt:
        _report_interruption(args, partial, len(records))
        raise
    if args.out:
        write_responses(args.out, out, overwrite=True)
        partial.remove()  # type: ignore[union-attr]
        print(
            f"wrote {len(out)} responses to {args.out} (prompt style {style}, responses "
            f"prompted as {args.response_prompt})",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0


def _finished_before(args: argparse.Namespace, partial: Any, records: list) -> list:
    """With --resume the responses an interrupted run finished; without, a check that no such
    responses are silently dropped (--overwrite drops them)."""
    if partial is None:
        return []
    if args.resume:
        return partial.load(records)
    if partial.path.exists():
        if not args.overwrite:
            raise FileExistsError(
                f"{partial.path} holds the finished responses of an interrupted run; pass "
                "--resume to continue it, or --overwrite to start over"
            )
        partial.remove()
    return []


def _report_interruption(args: argparse.Namespace, partial: Any, total: int) -> None:
    """Save the finished responses and say how to continue."""
    if partial is None:
        print("interrupted: the finished responses were not kept (no --out FILE)", file=sys.stderr)
        return
    n = partial.save()
    if not n:
        print("interrupted before the first batch of responses was finished", file=sys.stderr)
    else:
        print(
            f"interrupted: {n} of {total} responses saved in {partial.path}; run the same "
            "command with --resume to generate the rest",
            file=sys.stderr,
        )
