"""Tokenize the bundled The Verdict with every tokenizer and show the first training batch.

This is the book's chapter 2 in one screen: text -> tokens -> sliding windows of (input, target).
Run: python examples/tokenizer_tour.py
"""

from __future__ import annotations

import time

from scratchgpt.data import create_dataloader
from scratchgpt.data.sources import load_text
from scratchgpt.tokenizers import get_tokenizer, train_bpe


def main() -> None:
    text = load_text("the-verdict")
    print(f"The Verdict: {len(text):,} characters, {len(text.encode('utf-8')):,} bytes\n")

    tokenizers = {
        "simple (book's regex, V2)": get_tokenizer("simple", corpus=text),
        "char": get_tokenizer("char", corpus=text),
        "gpt2 (tiktoken backend)": get_tokenizer("gpt2"),
        "gpt2 (scratch backend)": get_tokenizer("gpt2", backend="scratch"),
    }
    start = time.perf_counter()
    tokenizers["bpe trained here (vocab 1,000)"] = train_bpe([text], vocab_size=1000)
    train_seconds = time.perf_counter() - start

    print(f"{'tokenizer':34} {'vocab':>7} {'tokens':>7} {'bytes/token':>11}  round trip")
    for name, tok in tokenizers.items():
        ids = tok.encode(text, allowed_special="all")
        exact = tok.decode(ids) == text
        print(
            f"{name:34} {tok.vocab_size:7,} {len(ids):7,} {len(text.encode()) / len(ids):11.2f}  "
            f"{'exact' if exact else 'lossy'}"
        )
    print(f"(the BPE above was trained on The Verdict in {train_seconds:.2f} s)\n")

    gpt2 = tokenizers["gpt2 (tiktoken backend)"]
    sample = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    ids = gpt2.encode(sample, allowed_special={"<|endoftext|>"})
    print(f"{sample!r}\n -> {ids}\n -> pieces {[gpt2.decode([i]) for i in ids]}\n")

    loader = create_dataloader(text, gpt2, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    print(f"first batch (batch 8, max_length 4, stride 4): {len(loader)} batches in all")
    print("inputs:\n", inputs)
    print("targets (inputs shifted by one):\n", targets)


if __name__ == "__main__":
    main()
