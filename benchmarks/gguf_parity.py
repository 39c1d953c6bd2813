"""Check: llama.cpp runs our GGUF export and picks the same greedy tokens as our model.

Exports a model (a checkpoint of any exported family given with --checkpoint: GPT-2, a Llama 3.x
or Qwen3 folder; else a random-weight GPT-2 of the --preset size) at each GGUF type, loads each file in llama.cpp through ``llama-cpp-python``,
and compares, for one prompt: the first step's logits (largest difference) and the greedy
continuation token by token (how many of the first --tokens agree with ours). f32 should agree
exactly up to float rounding; f16 / bf16 / q8_0 may part ways where two tokens' logits are
within their rounding.

Needs ``pip install llama-cpp-python`` (it builds llama.cpp from source) and ``gguf``; not a
unit test (the build takes many minutes), run by hand:

    python benchmarks/gguf_parity.py
    # llama-cpp-python in a venv of its own (same Python version):
    PYTHONPATH=src:/tmp/llamacpp/lib/python3.11/site-packages python benchmarks/gguf_parity.py
    python benchmarks/gguf_parity.py --checkpoint runs/demo/final --tokens 50
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Python puts this folder first on sys.path, where benchmarks/tokenizers.py would shadow the
# `tokenizers` package that Hugging Face tokenizers (Llama 3, Qwen3) need.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.model import GPTModel  # noqa: E402
from scratchgpt.tokenizers import get_tokenizer  # noqa: E402
from scratchgpt.weights import load_model  # noqa: E402
from scratchgpt.weights.gguf import GGUF_TYPES, save_gguf  # noqa: E402


def ours_greedy(model: GPTModel, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """Our greedy continuation (full forward each step: the plainest reference) and the
    first step's logits."""
    ids = list(ids)
    first = None
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-model.cfg.context_length :]]))[0, -1].float()
            if first is None:
                first = logits.numpy()
            ids.append(int(logits.argmax()))
    return ids, first


def llama_greedy(path: Path, ids: list[int], n: int, n_ctx: int) -> tuple[list[int], np.ndarray]:
    try:
        from llama_cpp import Llama
    except ImportError:
        sys.exit(
            "llama-cpp-python is not installed: pip install llama-cpp-python (it builds "
            "llama.cpp), or put a venv that has it on PYTHONPATH after this project's"
        )

    llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=1)
    ids = list(ids)
    llm.reset()
    llm.eval(ids)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ids.append(nxt)
        llm.eval([nxt])
    return ids, first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a model to export (default: random-weight GPT-2)")
    p.add_argument("--preset", default="tiny", help="size of the random model (default tiny)")
    p.add_argument("--prompt", default="Every effort moves you")
    p.add_argument("--tokens", type=int, default=30, help="greedy tokens to compare")
    p.add_argument("--types", nargs="+", default=list(GGUF_TYPES), choices=GGUF_TYPES)
    args = p.parse_args(argv)

    if args.checkpoint:
        loaded = load_model(args.checkpoint)
        model, tok = loaded.model.float().eval(), loaded.tokenizer
    else:
        torch.manual_seed(123)
        cfg = GPTConfig.from_preset(args.preset, vocab_size=50257, drop_rate=0.0, init="gpt2")
        model, tok = GPTModel(cfg).eval(), get_tokenizer("gpt2")
    prompt = list(getattr(tok, "bos_ids", [])) + tok.encode(args.prompt)  # Llama 3: BOS first
    n_ctx = min(model.cfg.context_length, len(prompt) + args.tokens)
    want, want_logits = ours_greedy(model, prompt, n_ctx - len(prompt))
    print(f"model: {args.checkpoint or args.preset} ({model.num_parameters():,} parameters)")
    print(f"ours:  {tok.decode(want[len(prompt) :])!r}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.types:
            path = save_gguf(model, tok, Path(tmp) / f"m-{t}.gguf", type=t)
            t0 = time.perf_counter()
            got, got_logits = llama_greedy(path, prompt, n_ctx - len(prompt), n_ctx)
            secs = time.perf_counter() - t0
            new_w, new_g = want[len(prompt) :], got[len(prompt) :]
            agree = next((i for i, (a, b) in enumerate(zip(new_w, new_g)) if a != b), len(new_w))
            diff = float(np.abs(got_logits - want_logits).max())
            print(
                f"{t:5s} first-step max |logit diff| {diff:.2e}; greedy tokens agree for "
                f"{agree}/{len(new_w)} ({secs:.1f}s)"
            )
            if t == "f32" and agree < len(new_w):
                ok = False
                print(f"       llama.cpp: {tok.decode(new_g)!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
