"""`scratchgpt evaluate judge|loss|choice`: score responses with an LLM judge, measure held-out
loss, or multiple-choice accuracy by log-likelihood."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scratchgpt.cli.args import nonnegative_float, nonnegative_int, positive_float, positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score responses with an LLM judge, held-out loss, or multiple-choice accuracy",
        description=(
            "Evaluate a model: `evaluate judge` (the book's section 7.8), `evaluate loss` or "
            "`evaluate choice`."
        ),
    )
    sub = p.add_subparsers(dest="evaluate_command", metavar="WHAT", title="evaluations")
    p.set_defaults(func=lambda args: p.error("choose what to evaluate: judge, loss or choice"))
    _register_judge(sub)
    _register_loss(sub)
    _register_choice(sub)


def _register_judge(sub: Any) -> None:
    j = sub.add_parser(
        "judge",
        help="score model responses 0-100 with an LLM over HTTP (Ollama or OpenAI-compatible)",
        description=(
            "Send the book's scoring prompt for every record of --responses (from `scratchgpt "
            "respond` or finetune-instruct's responses.json) to a judge model, with temperature 0 "
            "and a fixed seed, and report the mean score, the counts scored and unparseable, the "
            "distribution and per-item scores."
        ),
        epilog=(
            "examples:\n"
            "  ollama serve & ollama pull llama3\n"
            "  scratchgpt evaluate judge --responses runs/sft/responses.json \\\n"
            "      --judge-url http://localhost:11434 --judge-model llama3 --out judge.json\n"
            "  OPENAI_API_KEY=... scratchgpt evaluate judge --responses r.json \\\n"
            "      --judge-url https://api.openai.com/v1 --judge-model gpt-4o-mini"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    j.add_argument("--responses", metavar="FILE", required=True, help="JSON list of records")
    j.add_argument(
        "--judge-url",
        required=True,
        metavar="URL",
        help="http://host:port (Ollama's /api/chat is added), or a full /api/chat or "
        "/v1/chat/completions URL",
    )
    j.add_argument("--judge-model", required=True, metavar="NAME", help="the judge model's name")
    j.add_argument(
        "--judge-api",
        choices=["auto", "ollama", "openai"],
        default="auto",
        help="request format (default auto: openai when the URL has /v1, else ollama)",
    )
    j.add_argument(
        "--api-key-env",
        metavar="VAR",
        default="OPENAI_API_KEY",
        help="environment variable holding a bearer API key, sent if set (default: OPENAI_API_KEY)",
    )
    j.add_argument("--response-key", default="model_response", help="field with the response")
    j.add_argument(
        "--prompt-style",
        default="alpaca",
        help="how the judge sees the instruction (default: alpaca, as the book)",
    )
    j.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds per request (default 60)"
    )
    j.add_argument(
        "--retries", type=nonnegative_int, default=3, help="extra attempts per item (default 3)"
    )
    j.add_argument(
        "--backoff",
        type=nonnegative_float,
        default=1.0,
        help="seconds before the first retry, doubling",
    )
    j.add_argument("--seed", type=int, default=123, help="judge sampling seed (default 123)")
    j.add_argument("--limit", type=positive_int, metavar="N", help="only the first N records")
    j.add_argument("--out", metavar="FILE", help="write the JSON report here")
    j.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    j.set_defaults(func=run_judge)


def _register_loss(sub: Any) -> None:
    lo = sub.add_parser(
        "loss",
        help="held-out loss and perplexity of a checkpoint",
        description=(
            "Mean next-token loss (every target token counted once) and perplexity of a "
            "checkpoint on instruction records (JSON/JSONL, formatted in the checkpoint's prompt "
            "style, a split chosen with --split) or on a plain text file (.txt, windows of the "
            "model's context length)."
        ),
    )
    from scratchgpt.cli.respond import add_model_flags, add_record_flags

    add_model_flags(lo)
    lo.add_argument("--data", metavar="FILE", help="records (default: the bundled set) or .txt")
    add_record_flags(lo, default_split="val")  # the last 5%: held out from training
    lo.add_argument(
        "--mask-prompt", action="store_true", help="records: count only the response tokens"
    )
    lo.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="default: 8")
    lo.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    lo.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    lo.set_defaults(func=run_loss)


def _register_choice(sub: Any) -> None:
    c = sub.add_parser(
        "choice",
        help="multiple-choice accuracy by log-likelihood (MMLU-style)",
        description=(
            "Score every choice of every question as the continuation of 'QUESTION\\nAnswer:' "
            "and pick the most likely one: accuracy by total log-probability and by "
            "log-probability per character (length-normalised, the harness's acc_norm), "
            "overall and per subject. Items: JSON/JSONL/CSV files of question/choices/answer "
            "(see docs/evaluation.md), a folder of them, or mmlu (MMLU's test set, after "
            "`scratchgpt data download mmlu`); default: a bundled example of 12 questions."
        ),
        epilog=(
            "examples:\n"
            "  scratchgpt evaluate choice --checkpoint gpt2-small\n"
            "  scratchgpt data download mmlu && scratchgpt evaluate choice --checkpoint "
            "qwen3-0.6b-base --data mmlu --out mmlu.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from scratchgpt.cli.respond import add_model_flags

    add_model_flags(c)
    c.add_argument("--data", metavar="FILE|DIR|mmlu", help="items (default: the bundled example)")
    c.add_argument("--limit", type=positive_int, metavar="N", help="only the first N questions")
    c.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="default: 8")
    c.add_argument("--out", metavar="FILE", help="write the report (with every item) as JSON")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    c.set_defaults(func=run_choice)


def _check_out(args: argparse.Namespace) -> None:
    from pathlib import Path

    from scratchgpt.errors import DataError

    if args.out and Path(args.out).is_dir():
        raise DataError(f"--out {args.out}: is a folder; name a JSON file to write")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")


def run_judge(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run_judge(args)


def _run_judge(args: argparse.Namespace) -> int:
    from scratchgpt.data.instructions import get_prompt_style
    from scratchgpt.errors import DataError
    from scratchgpt.evaluation.judge import JudgeClient, api_key_from_env, judge_responses
    from scratchgpt.fileio import atomic_write_json, read_json

    _check_out(args)
    get_prompt_style(args.prompt_style)
    records = read_json(args.responses)
    if not isinstance(records, list):
        raise DataError(f"{args.responses}: expected a JSON list of records")
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise DataError(f"{args.responses}: no records to judge")
    client = JudgeClient(
        args.judge_url,
        args.judge_model,
        api=args.judge_api,
        api_key=api_key_from_env(args.api_key_env),
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        seed=args.seed,
    )
    report = judge_responses(
        records, client, response_key=args.response_key, style=args.prompt_style
    )
    report["responses_file"] = str(args.responses)
    mean = report["mean"]
    print(f"Number of scores: {report['scored']} of {report['total']}")
    print(f"Average score: {mean:.2f}" if mean is not None else "Average score: n/a")
    if report["unparseable"] or report["failed"]:
        print(
            f"unparseable replies: {report['unparseable']}, failed requests: {report['failed']}",
            file=sys.stderr,
        )
    if args.out:
        atomic_write_json(args.out, report)
        print(f"report written to {args.out}", file=sys.stderr)
    return 0


def run_loss(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run_loss(args)


def _run_loss(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from scratchgpt.cli.respond import load_for_inference, select_records
    from scratchgpt.evaluation.metrics import evaluate_loss
    from scratchgpt.fileio import atomic_write_json

    _check_out(args)
    model, tokenizer, style = load_for_inference(args)
    ctx = model.cfg.context_length
    if args.data and Path(args.data).suffix == ".txt":
        from scratchgpt.data.pretraining import SlidingWindowDataset
        from scratchgpt.fileio import read_text

        ds = SlidingWindowDataset(read_text(args.data), tokenizer, ctx, ctx)
        result = evaluate_loss(model, ds, batch_size=args.batch_size)
        what = f"{args.data} ({len(ds)} windows of {ctx} tokens)"
    else:
        from scratchgpt.data.instructions import InstructionCollator, InstructionDataset
        from scratchgpt.tasks.instruct import pad_id_for

        records = select_records(args)
        ds = InstructionDataset(records, tokenizer, style)
        collate = InstructionCollator(
            pad_token_id=pad_id_for(tokenizer), allowed_max_length=ctx, mask_prompt=args.mask_prompt
        )
        result = evaluate_loss(model, ds, collate, batch_size=args.batch_size)
        what = f"{len(records)} records ({args.split} split, prompt style {style})"
    out = {"checkpoint": str(args.checkpoint), "data": what, **result}
    print(
        f"{what}: loss {result['loss']:.4f}, perplexity {result['ppl']:.2f}, "
        f"{int(result['tokens']):,} tokens"
    )
    if args.out:
        atomic_write_json(args.out, out)
    else:
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


def run_choice(args: argparse.Namespace) -> int:
    """The command, holding the lock on --out while it runs (a second writer stops at once)."""
    from scratchgpt.locking import hold_output

    with hold_output(args.out):
        return _run_choice(args)


def _run_choice(args: argparse.Namespace) -> int:
    from scratchgpt.cli.respond import load_for_inference
    from scratchgpt.evaluation.choice import evaluate_choice, load_choice_items, resolve_choice_data
    from scratchgpt.fileio import atomic_write_json

    _check_out(args)
    items = load_choice_items(resolve_choice_data(args.data))
    if args.limit is not None:
        items = items[: args.limit]
    model, tokenizer, _ = load_for_inference(args)
    report = evaluate_choice(model, tokenizer, items, batch_size=args.batch_size)
    for name, part in sorted((report.get("subjects") or {}).items()):
        print(
            f"{name:<40} {part['accuracy'] * 100:6.2f}%  norm {part['accuracy_norm'] * 100:6.2f}%"
            f"  ({part['count']} questions)"
        )
    print(
        f"accuracy {report['accuracy'] * 100:.2f}%, length-normalised "
        f"{report['accuracy_norm'] * 100:.2f}% ({report['count']} questions)"
    )
    if args.out:
        out = {"checkpoint": str(args.checkpoint), "data": str(args.data or "example"), **report}
        atomic_write_json(args.out, out)
        print(f"report written to {args.out}", file=sys.stderr)
    return 0
