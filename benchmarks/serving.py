"""Serving: requests/s, time to first token and tokens/s per client at 1, 4 and 16 concurrent
streaming clients, against the same model generating directly (no HTTP) in the same run.

Model: the ``mini`` preset (256-dim, 4 layers, GPT-2's 50257-token vocabulary; random weights,
saved as a checkpoint and loaded by ``scratchgpt.serving.load_served_model`` as
``scratchgpt serve`` loads it). The server runs in this process on 127.0.0.1 (uvicorn in a
thread); each client is a thread with the official ``openai`` client that sends ``--requests``
streaming chat requests one after another (greedy, at most ``--new-tokens`` tokens; the table
counts the tokens actually streamed, from ``usage``).

Columns:
- requests/s: requests completed / wall time of the whole level;
- TTFT: time from sending a request to its first content chunk (median and p95 over requests);
  it includes time spent queued behind other clients' requests;
- tokens/s per client: completion tokens / (last chunk - first chunk) per request, median;
- aggregate tokens/s: all completion tokens / wall time.
The reference row is ``stream_generate`` on the same model and prompt without a server.

    python benchmarks/serving.py [--quick] [--new-tokens 64] [--requests 2] [--threads 2] [--slots 8]

``--target`` runs the continuous-batching target instead: gpt2-small with random weights in the
released layout (a transformers ``GPT2LMHeadModel`` saved as a Hugging Face folder, as
benchmarks/generation.py builds it, loaded as ``scratchgpt serve --checkpoint`` loads it),
served with 8 slots; 1 client, then 8 concurrent clients, each streaming ``--requests`` chat
requests of ``--new-tokens`` (default 128) tokens through the official ``openai`` client, in the
same run. It prints both rows and the two ratios the issue sets targets for: aggregate tokens/s
(8 clients / 1 client, target >= 4x) and median time to first token (8 / 1, target <= 2x).

    python benchmarks/serving.py --target [--new-tokens 128] [--requests 2] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

PROMPT = "Every effort moves you"


def start_server(app):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def one_request(url: str, model: str, new_tokens: int, i: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{PROMPT} {i}"}],
        max_tokens=new_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    first = first or time.perf_counter()
    last = last or first
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
    return {"ttft": first - t0, "tokens": tokens, "rate": rate, "end": last}


def level(url: str, model: str, clients: int, requests: int, new_tokens: int) -> dict[str, float]:
    def client(c: int) -> list[dict[str, float]]:
        return [one_request(url, model, new_tokens, c * requests + r) for r in range(requests)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in results)
    rates = [r["rate"] for r in results if r["rate"] == r["rate"]]
    return {
        "clients": clients,
        "requests": len(results),
        "rps": len(results) / wall,
        "ttft_med": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
        "rate": statistics.median(rates) if rates else float("nan"),
        "agg": sum(r["tokens"] for r in results) / wall,
        "tokens": sum(r["tokens"] for r in results) / len(results),
    }


def gpt2_small_released_layout(folder: str) -> None:
    """Random gpt2-small weights saved as the released checkpoints are (a Hugging Face
    ``GPT2LMHeadModel`` folder: Conv1D weights, fused qkv, head tied to the embedding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    hf.save_pretrained(folder, safe_serialization=True)


def target(args: argparse.Namespace) -> None:
    """1 client, then 8 concurrent clients, on gpt2-small with 8 slots: the issue's ratios."""
    from scratchgpt.serving import create_app, load_served_model

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        gpt2_small_released_layout(tmp)
        served = load_served_model(tmp, name="gpt2-small", dtype=dtype)
    n_params = sum(p.numel() for p in served.model.parameters())
    print(f"model: gpt2-small (random weights, released layout), {n_params / 1e6:.1f}M "
          f"parameters, {args.dtype}; 8 slots; {args.new_tokens} new tokens per request, "
          f"{args.requests} requests per client")  # fmt: skip
    app = create_app(served, max_queue=64, timeout=3600, slots=8)
    server, thread, url = start_server(app)
    try:
        while not app.state.engine.ready:
            time.sleep(0.05)
        one_request(url, served.name, 4, 0)  # warm-up through HTTP
        rows = [level(url, served.name, c, args.requests, args.new_tokens) for c in (1, 8)]
    finally:
        server.should_exit = True
        thread.join(60)
    print()
    print("| clients | requests | tokens/request | TTFT median (s) | TTFT p95 (s) "
          "| tokens/s per client | aggregate tokens/s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['tokens']:.0f} | {r['ttft_med']:.3f} | "
              f"{r['ttft_p95']:.3f} | {r['rate']:.1f} | {r['agg']:.1f} |")  # fmt: skip
    one, eight = rows
    print(f"\naggregate tokens/s, 8 clients / 1 client: {eight['agg'] / one['agg']:.2f}x "
          f"(target >= 4x); median TTFT, 8 / 1: {eight['ttft_med'] / one['ttft_med']:.2f}x "
          f"(target <= 2x)")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 tokens, 1 request per client")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated")
    ap.add_argument("--slots", type=int, default=8, help="the server's slots (default 8)")
    ap.add_argument("--target", action="store_true", help="gpt2-small, 1 vs 8 clients (above)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="--target only")
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.requests = 16, 1
    elif args.target and args.new_tokens == 64:
        args.new_tokens = 128
    torch.set_num_threads(args.threads)

    from scratchgpt.config import GPTConfig
    from scratchgpt.generation import stream_generate
    from scratchgpt.model import GPTModel
    from scratchgpt.serving import create_app, load_served_model
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"fastapi {version('fastapi')}, uvicorn {version('uvicorn')}, "
          f"openai {version('openai')}; {os.cpu_count()} CPUs, torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    if args.target:
        target(args)
        return
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("mini"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mini")
        save_checkpoint(path, model, get_tokenizer("gpt2"))
        served = load_served_model(path)
    n_params = sum(p.numel() for p in served.model.parameters())
    print(f"model: mini preset, {n_params / 1e6:.1f}M parameters, {args.new_tokens} new tokens; "
          f"{args.slots} slots")  # fmt: skip

    # Reference: the same generation without HTTP, one prompt at a time, measured as the
    # clients measure (tokens/s between the first and the last piece), median of 3.
    def direct() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        stamps = [time.perf_counter() for _ in stream_generate(
            served.model, served.tokenizer, PROMPT, args.new_tokens, eos_id=None)]  # fmt: skip
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        return stamps[0] - t0, rate, stamps[-1] - t0

    direct()  # warm-up
    runs = [direct() for _ in range(3)]
    ref_ttft = statistics.median(r[0] for r in runs)
    ref = statistics.median(r[1] for r in runs)
    ref_total = statistics.median(r[2] for r in runs)

    app = create_app(served, max_queue=64, timeout=600, slots=args.slots)
    server, thread, url = start_server(app)
    try:
        one_request(url, served.name, 4, 0)  # warm-up
        rows = [
            level(url, served.name, int(c), args.requests, args.new_tokens)
            for c in args.levels.split(",")
        ]
    finally:
        server.should_exit = True
        thread.join(30)

    print()
    print("| clients | requests | tokens/request | requests/s | TTFT median (s) | TTFT p95 (s) "
          "| tokens/s per client | aggregate tokens/s | x direct |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['tokens']:.0f} | {r['rps']:.2f} | "
              f"{r['ttft_med']:.3f} | {r['ttft_p95']:.3f} | {r['rate']:.1f} | {r['agg']:.1f} | "
              f"{r['agg'] / (args.new_tokens / ref_total):.2f}x |")  # fmt: skip
    print(f"| direct `stream_generate`, no server | 1 | {args.new_tokens} | "
          f"{1 / ref_total:.2f} | {ref_ttft:.3f} | {ref_ttft:.3f} | {ref:.1f} | "
          f"{args.new_tokens / ref_total:.1f} | 1.00x |")  # fmt: skip
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
