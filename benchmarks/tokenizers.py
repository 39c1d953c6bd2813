"""Tokenizer speed against reference implementations, measured in one run on one corpus.

Corpus: the bundled data as documents (The Verdict; each instruction-data.json record as
"instruction\\ninput\\noutput"; each SMS message), about 0.6 MB of distinct text, repeated until it
reaches the target size (5 MB; 1 MB with --quick).

Rows:
- GPT-2 encoding speed (MB/s of UTF-8 input, best of several runs, one core): our tiktoken
  backend and our pure-Python backend (cache emptied before each run) against raw tiktoken;
- BPE training time for an 8,192-token vocabulary: our train_bpe against the Hugging Face
  `tokenizers` BpeTrainer with the ByteLevel pre-tokenizer (same regex, same vocabulary size,
  same special token), both on the same list of documents.

Every library is held to one thread (RAYON_NUM_THREADS=1 for `tokenizers`, torch set to one
thread; tiktoken's encode is single-threaded), so the comparison is core for core.

    python benchmarks/tokenizers.py [--quick]
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

# Must be set before `tokenizers` starts its thread pool.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import json
import platform
import time
from collections.abc import Callable
from importlib.metadata import version

from scratchgpt.assets import asset_path
from scratchgpt.tokenizers import EOT, get_tokenizer, tiktoken_gpt2_encoding, train_bpe


def bundled_documents() -> list[str]:
    """The bundled texts as a list of documents."""
    docs = [asset_path("the-verdict.txt").read_text(encoding="utf-8")]
    records = json.loads(asset_path("instruction-data.json").read_text(encoding="utf-8"))
    docs += ["\n".join((r["instruction"], r["input"], r["output"])) for r in records]
    sms = asset_path("SMSSpamCollection").read_text(encoding="utf-8")
    docs += [line.split("\t", 1)[-1] for line in sms.splitlines() if line]
    return docs


def corpus(target_bytes: int) -> list[str]:
    """The bundled documents, repeated until their UTF-8 size reaches `target_bytes`."""
    base = bundled_documents()
    docs: list[str] = []
    size = 0
    while size < target_bytes:
        for d in base:
            docs.append(d)
            size += len(d.encode("utf-8")) + 1
            if size >= target_bytes:
                break
    return docs


def stdlib_documents(target_bytes: int) -> list[str]:
    """Distinct text that every machine has: the Python standard library's own .py sources
    (sorted, tests and site-packages left out) up to `target_bytes`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    size = 0
    for f in sorted(root.rglob("*.py")):
        if "site-packages" in f.parts or "test" in f.parts:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(text)
        size += len(text.encode("utf-8"))
        if size >= target_bytes:
            break
    return docs


def interleaved_best(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each function; runs alternate, so drift in machine load hits all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hf_train(docs: list[str], vocab_size: int):
    # Run as a script, this file's folder comes first on sys.path and this file would shadow the
    # `tokenizers` package it compares against.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 MB corpus, fewer repeats")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    target = 1_000_000 if args.quick else 5_000_000
    repeats = 3 if args.quick else 5
    docs = corpus(target)
    text = "\n".join(docs)
    nbytes = len(text.encode("utf-8"))
    mb = nbytes / 1e6

    raw = tiktoken_gpt2_encoding()
    ours = get_tokenizer("gpt2")
    scratch = get_tokenizer("gpt2", backend="scratch")
    assert ours.encode(text) == raw.encode(text) == scratch.encode(text)
    n_tokens = len(raw.encode(text))

    def scratch_cold() -> None:
        scratch._bpe._cache.clear()  # a cold cache: every distinct pre-token is merged again
        scratch.encode(text)

    t = interleaved_best(
        repeats,
        {
            "raw": lambda: raw.encode(text),
            "ours": lambda: ours.encode(text),
            "scratch": scratch_cold,
        },
    )
    t_raw, t_ours, t_scratch = t["raw"], t["ours"], t["scratch"]

    # The same on the distinct text alone: fewer repeated pre-tokens, so fewer cache hits.
    unique = "\n".join(bundled_documents())
    unique_mb = len(unique.encode("utf-8")) / 1e6

    def scratch_unique() -> None:
        scratch._bpe._cache.clear()
        scratch.encode(unique)

    t = interleaved_best(repeats, {"raw": lambda: raw.encode(unique), "scratch": scratch_unique})
    tu_raw, tu_scratch = t["raw"], t["scratch"]

    vocab = 8192
    t = interleaved_best(
        repeats, {"ours": lambda: train_bpe(docs, vocab), "hf": lambda: hf_train(docs, vocab)}
    )
    t_train, t_hf = t["ours"], t["hf"]
    # Training again on distinct text: every pre-token count is real, none comes from repetition.
    src = stdlib_documents(target)
    src_mb = sum(len(d.encode("utf-8")) for d in src) / 1e6
    t = interleaved_best(
        repeats, {"ours": lambda: train_bpe(src, vocab), "hf": lambda: hf_train(src, vocab)}
    )
    ts_train, ts_hf = t["ours"], t["hf"]
    trained = train_bpe(docs, vocab)
    hf = hf_train(docs, vocab)
    # Per document for both (the trainers saw documents, and HF encodes them one by one).
    doc_bytes = sum(len(d.encode("utf-8")) for d in docs)
    ours_bpt = doc_bytes / sum(len(trained.encode(d)) for d in docs)
    hf_bpt = doc_bytes / sum(len(e.ids) for e in hf.encode_batch(docs))

    rows = [
        ("encode GPT-2: tiktoken backend", f"{mb / t_ours:.1f} MB/s", f"{mb / t_raw:.1f} MB/s",
         "raw tiktoken", f"{t_ours / t_raw:.2f}x time", "<= 1.1x time"),
        ("encode GPT-2: scratch backend (cold cache)", f"{mb / t_scratch:.1f} MB/s",
         f"{mb / t_raw:.1f} MB/s", "raw tiktoken", f"{t_scratch / t_raw:.2f}x time",
         ">= 1 MB/s"),
        (f"  same, on the {unique_mb:.2f} MB of distinct text only", f"{unique_mb / tu_scratch:.1f} MB/s",
         f"{unique_mb / tu_raw:.1f} MB/s", "raw tiktoken", f"{tu_scratch / tu_raw:.2f}x time",
         ">= 1 MB/s"),
        (f"train BPE, vocab {vocab:,}", f"{t_train:.2f} s", f"{t_hf:.2f} s",
         "HF tokenizers BpeTrainer", f"{t_train / t_hf:.2f}x time", "<= 20x time"),
        ("  compression of the trained vocab", f"{ours_bpt:.2f} B/tok", f"{hf_bpt:.2f} B/tok",
         "HF tokenizers BpeTrainer", f"{ours_bpt / hf_bpt:.2f}x bytes/token", "(quality, not a target)"),
        (f"train BPE, vocab {vocab:,}, {src_mb:.2f} MB of Python stdlib source (distinct)",
         f"{ts_train:.2f} s", f"{ts_hf:.2f} s", "HF tokenizers BpeTrainer",
         f"{ts_train / ts_hf:.2f}x time", "<= 20x time"),
    ]  # fmt: skip
    print(
        f"corpus: {mb:.2f} MB ({len(docs):,} documents: The Verdict, instruction-data.json, "
        f"SMS Spam Collection; {unique_mb:.2f} MB distinct, repeated), {n_tokens:,} GPT-2 tokens"
    )
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()}, tiktoken {version('tiktoken')}, "
        f"tokenizers {version('tokenizers')}, regex {version('regex')}; one thread each"
    )
    print()
    print("| task | ours | reference | reference is | ours/reference | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    ok = t_ours / t_raw <= 1.1 and min(mb / t_scratch, unique_mb / tu_scratch) >= 1.0
    ok = ok and t_train / t_hf <= 20 and ts_train / ts_hf <= 20
    print(f"\ntargets met: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
