"""The project's own CPU kernels: small C files compiled on first use, called through ctypes.

Why: batch-1 decoding with int8 weights is a stream of one-row matrix products, and PyTorch's
int8 weight-only kernel (``_weight_int8pack_mm``) is fast only for bf16 inputs: with float32
inputs it has no vectorised path and runs 20-50x slower (benchmarks/generation.py shows both).
``csrc/matvec.c`` reads the int8 weights once per token for float32 and bf16 inputs alike, and
has a bf16 one (AVX-512 BF16 dot products) that streams bf16 weights faster than oneDNN's.

How: the system C compiler (``$CC``, else ``cc``) builds the file with ``-O3 -march=native
-fopenmp`` into ``<cache>/kernels/`` (``$SCRATCHGPT_CACHE``, default ``~/.cache/scratchgpt``),
named by a hash of the source, the compiler and the CPU, written to a temporary name and renamed,
so concurrent processes and other machines sharing a home folder never load a half-written or
foreign library. OpenMP threads come from the runtime PyTorch already loaded (same soname), and
each call uses ``torch.get_num_threads()`` of them.

Where there is no compiler, the build fails, or ``SCRATCHGPT_KERNELS=0`` is set, the functions
here return None and callers keep PyTorch's kernels: the results agree to rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from scratchgpt.fileio import cache_root

SOURCE = Path(__file__).with_name("csrc") / "matvec.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
# Beyond this many input rows (a long prefill) a dequantized weight and PyTorch's matmul are
# faster: the kernel converts each weight again for every row, a real matmul reuses it.
MAX_ROWS = 64

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def enabled() -> bool:
    """False when ``SCRATCHGPT_KERNELS`` is 0/off/false/no."""
    return os.environ.get("SCRATCHGPT_KERNELS", "1").strip().lower() not in {
        "0",
        "off",
        "false",
        "no",
    }


def _cpu_id() -> str:
    """What ``-march=native`` compiles for: the machine and its CPU flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def library_path(source: Path = SOURCE) -> Path | None:
    """Where the compiled ``source`` lives (or will) for this compiler and CPU; None without a
    compiler."""
    cc = _compiler()
    if cc is None:
        return None
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(
        "\0".join([source.read_text(), cc, version, " ".join(FLAGS), _cpu_id()]).encode()
    ).hexdigest()[:16]
    return cache_root() / "kernels" / f"{source.stem}-{key}.so"


def _build(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        subprocess.run(
            [str(_compiler()), *FLAGS, str(source), "-o", str(tmp)],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load(source: Path = SOURCE) -> ctypes.CDLL | None:
    """The compiled kernel library (built on first use), or None where it cannot be had."""
    name = str(source)
    with _lock:
        if name not in _loaded:
            lib = None
            if enabled():
                try:
                    path = library_path(source)
                    if path is not None:
                        if not path.exists():
                            _build(source, path)
                        lib = ctypes.CDLL(str(path))
                        _declare(lib)
                except (OSError, subprocess.SubprocessError, AttributeError):
                    lib = None  # no compiler, a failed build, an unloadable file: PyTorch's path
            _loaded[name] = lib
        return _loaded[name]


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.int8_matvec.argtypes = [p, p, p, p, p, i64, i64, i64, c_int, c_int]
    lib.int8_matvec.restype = c_int
    lib.bf16_matvec.argtypes = [p, p, p, p, i64, i64, i64, c_int]
    lib.bf16_matvec.restype = c_int
    lib.has_bf16_matvec.restype = c_int


def int8_matvec(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """``x @ (scales[:, None] * weight).T + bias`` by the C kernel, for a CPU ``x`` of at most
    ``MAX_ROWS`` rows in float32 or bf16 (scales and bias in the same dtype); None when the
    kernel does not apply or is not available (the caller then uses PyTorch)."""
    dtype = x.dtype
    if (
        x.device.type != "cpu"
        or dtype not in _DTYPES
        or scales.dtype != dtype
        or (bias is not None and bias.dtype != dtype)
        or weight.dtype != torch.int8
        or x.numel() > MAX_ROWS * x.shape[-1]
        or (x.requires_grad and torch.is_grad_enabled())
    ):
        return None
    lib = load()
    if lib is None:
        return None
    n, k = weight.shape
    rows = x.numel() // k
    x = x.contiguous()
    weight, scales = weight.contiguous(), scales.contiguous()
    bias = None if bias is None else bias.contiguous()
    y = torch.empty(*x.shape[:-1], n, dtype=dtype)
    status = lib.int8_matvec(
        x.data_ptr(), weight.data_ptr(), scales.data_ptr(),
        None if bias is None else bias.data_ptr(), y.data_ptr(),
        rows, n, k, _DTYPES[dtype], torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("int8_matvec: out of memory for the input rows")
    return y


def bf16_matvec(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """``x @ weight.T + bias`` by the C kernel for bf16 ``x`` (at most ``MAX_ROWS`` rows),
    weight and bias on a CPU with AVX-512 BF16; None when it does not apply (the caller then
    uses PyTorch). Products are summed in float32 and rounded to bf16 once."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.bfloat16
        or weight.dtype != torch.bfloat16
        or (bias is not None and bias.dtype != torch.bfloat16)
        or x.numel() > MAX_ROWS * x.shape[-1]
        or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return None
    lib = load()
    if lib is None or not lib.has_bf16_matvec():
        return None
    n, k = weight.shape
    x, weight = x.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    y = torch.empty(*x.shape[:-1], n, dtype=torch.bfloat16)
    lib.bf16_matvec(
        x.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
        x.numel() // k, n, k, torch.get_num_threads(),
    )  # fmt: skip
    return y
