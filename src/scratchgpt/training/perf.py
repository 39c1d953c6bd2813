"""Hardware throughput for MFU estimates: the device's matmul peak, measured or from a table."""

from __future__ import annotations

import time
from typing import Any

import torch

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of common GPUs, by name fragment.
GPU_BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def measure_matmul_tflops(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    seconds: float = 0.5,
) -> float:
    """Achieved TFLOP/s of an ``n x n @ n x n`` matmul, the practical peak of this device."""
    device = torch.device(device)
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b)  # warm-up (kernel selection, page faults)
    sync()
    reps, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < seconds or reps < 2:
        torch.mm(a, b)
        reps += 1
        sync()
        elapsed = time.perf_counter() - start
    return 2 * n**3 * reps / elapsed / 1e12


def peak_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak TFLOP/s, where the number comes from) for MFU: a datasheet value for known GPUs in
    bf16, else a short matmul measurement. Measuring draws no numbers from the global RNG state
    that training uses (it is saved and restored)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_BF16_PEAK_TFLOPS.items():
            if key in name:
                return value, f"{name} datasheet bf16"
    state = torch.get_rng_state()
    try:
        value = measure_matmul_tflops(device, dtype)
    finally:
        torch.set_rng_state(state)
    kind = "bf16" if dtype == torch.bfloat16 else "fp32"
    return value, f"measured {kind} matmul"


def mfu_report(
    tokens_per_s: float,
    cfg: Any,
    seq_len: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    given_peak: float | None = None,
) -> dict[str, Any]:
    """Achieved TFLOP/s and model FLOP utilisation against the device's (or the given) peak."""
    from scratchgpt.model.stats import model_stats

    flops_per_token = model_stats(cfg.replace(context_length=seq_len)).train_flops_per_token
    if given_peak is not None:
        peak, source = given_peak, "given"
    else:
        peak, source = peak_tflops(device, amp_dtype or torch.float32)
    achieved = tokens_per_s * flops_per_token / 1e12
    mfu = achieved / peak if peak > 0 else None
    # Above 100% of a measured peak the measurement is what is wrong (other work shared the
    # device while the matmul ran), not the training: no MFU rather than an impossible one.
    unreliable = mfu is not None and mfu > 1.0 and source.startswith("measured")
    return {
        "train_flops_per_token": flops_per_token,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_source": source,
        "mfu": None if unreliable else mfu,
        "peak_unreliable": unreliable,
    }
