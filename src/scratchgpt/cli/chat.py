"""`scratchgpt chat`: an interactive terminal chat with an instruction-tuned checkpoint."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from scratchgpt.cli.args import add_sampling_flags, positive_int

PROMPT = ">>> "
HELP = "commands: /reset forgets the conversation, /exit (or Ctrl-D) quits"


def register(subparsers: Any) -> None:
    from scratchgpt.cli.respond import add_model_flags

    p = subparsers.add_parser(
        "chat",
        help="chat with an instruction-tuned checkpoint in the terminal",
        description=(
            "An interactive session in the checkpoint's prompt style: replies stream as tokens "
            "arrive; earlier turns are kept as long as they fit in the context window. " + HELP
        ),
    )
    add_model_flags(p)
    p.add_argument(
        "--max-new-tokens", type=positive_int, default=256, metavar="N", help="default: 256"
    )
    add_sampling_flags(p)
    p.add_argument("--seed", type=int, help="seed for sampling")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.chat import ChatSession
    from scratchgpt.cli.respond import load_for_inference

    model, tokenizer, style = load_for_inference(args)
    session = ChatSession(
        model,
        tokenizer,
        style,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    out = sys.stdout
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    out.write(f"chat with {args.checkpoint} (prompt style {style}); {HELP}\n")
    out.flush()
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            out.write("\n")
            break
        except KeyboardInterrupt:
            out.write("\n")
            break
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            session.reset()
            out.write("(conversation forgotten)\n")
            out.flush()
            continue
        try:
            for piece in session.stream(message):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            # Ctrl-C stops the reply, not the session.
            out.write(" [stopped]")
        out.write("\n")
        out.flush()
    return 0
