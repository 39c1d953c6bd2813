"""The project's own CPU kernels (model/csrc/matvec.c), int8 weight-only and bf16 products:
built on first use, equal to the dequantized product up to rounding for every shape it takes,
and replaced by PyTorch's path where it cannot be had."""

from __future__ import annotations

import pytest
import torch

from scratchgpt.model import cpu_kernels
from scratchgpt.model.quantize import Int8Linear, int8_linear

needs_kernel = pytest.mark.skipif(
    cpu_kernels.load() is None, reason="no C compiler here: the kernel cannot be built"
)


def reference(x, weight, scales, bias):
    """The same product in float64 from the float32 view of the inputs."""
    w = weight.double() * scales.double()[:, None]
    y = x.double() @ w.T
    return y if bias is None else y + bias.double()


def case(rows, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    scales = (torch.rand(n, generator=g) / 50 + 1e-3).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    x = torch.randn(rows, k, generator=g).to(dtype)
    return x, weight, scales, bias


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "n", "k"),
    [(1, 4, 16), (1, 37, 50), (1, 2304, 768), (3, 5, 17), (8, 100, 3072), (64, 9, 33)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernel_equals_the_dequantized_product(dtype, rows, n, k, with_bias):
    x, weight, scales, bias = case(rows, n, k, dtype)
    bias = bias if with_bias else None
    y = cpu_kernels.int8_matvec(x, weight, scales, bias)
    assert y is not None and y.dtype == dtype and y.shape == (rows, n)
    expected = reference(x, weight, scales, bias)
    if dtype == torch.float32:
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)
    else:  # the result is rounded to bf16 once: within half a bf16 step (8 bits) of the exact one
        err = (y.double() - expected).abs()
        assert (err <= expected.abs() * 2**-8 + 1e-2).all()


@needs_kernel
def test_kernel_keeps_leading_dimensions_and_takes_views():
    x, weight, scales, bias = case(6, 12, 40, torch.float32)
    x3 = x.view(2, 3, 40)
    fused = torch.cat([weight, weight])[12:]  # a view starting mid-storage, as fused layers are
    y = cpu_kernels.int8_matvec(x3, fused, scales, bias)
    assert y.shape == (2, 3, 12)
    expected = reference(x, weight, scales, bias)
    torch.testing.assert_close(y.view(6, 12).double(), expected, rtol=1e-5, atol=1e-4)


def test_kernel_declines_what_it_does_not_take():
    x, weight, scales, bias = case(1, 8, 16, torch.float32)
    assert cpu_kernels.int8_matvec(x.double(), weight, scales.double(), None) is None
    assert cpu_kernels.int8_matvec(x, weight, scales.bfloat16(), None) is None  # mixed dtypes
    many = torch.randn(cpu_kernels.MAX_ROWS + 1, 16)
    assert cpu_kernels.int8_matvec(many, weight, scales, bias) is None  # a long prefill
    with torch.enable_grad():
        assert cpu_kernels.int8_matvec(x.requires_grad_(), weight, scales, bias) is None


def test_without_the_kernel_pytorch_computes_the_same(monkeypatch):
    layer = Int8Linear.from_linear(torch.nn.Linear(24, 10))
    x = torch.randn(1, 24)
    with torch.no_grad():
        expected = reference(x, layer.weight, layer.scales, layer.bias)
        with_kernel = layer(x)
        monkeypatch.setitem(cpu_kernels._loaded, str(cpu_kernels.SOURCE), None)
        without = layer(x)
    torch.testing.assert_close(with_kernel.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(without.double(), expected, rtol=1e-5, atol=1e-5)
    # Many rows go through the dequantized weight either way.
    xs = torch.randn(cpu_kernels.MAX_ROWS + 3, 24)
    torch.testing.assert_close(
        int8_linear(xs, layer.weight, layer.scales, layer.bias).double(),
        reference(xs, layer.weight, layer.scales, layer.bias),
        rtol=1e-5,
        atol=1e-5,
    )


def test_disabled_by_environment_or_missing_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setenv("SCRATCHGPT_KERNELS", "0")
    assert cpu_kernels.load() is None
    monkeypatch.delenv("SCRATCHGPT_KERNELS")
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert cpu_kernels.library_path() is None
    assert cpu_kernels.load() is None
    assert not list(tmp_path.iterdir())  # nothing half-built left behind


@needs_kernel
def test_a_fresh_cache_builds_the_library_once(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    lib = cpu_kernels.load()
    assert lib is not None
    built = list((tmp_path / "kernels").iterdir())
    assert [p.name for p in built] == [cpu_kernels.library_path().name]  # no temporary files
    assert cpu_kernels.load() is lib  # loaded once per process


needs_bf16_kernel = pytest.mark.skipif(
    cpu_kernels.load() is None or not cpu_kernels.load().has_bf16_matvec(),
    reason="no C compiler or no AVX-512 BF16 here: the bf16 kernel is not built",
)


@needs_bf16_kernel
@pytest.mark.parametrize(
    ("rows", "n", "k"), [(1, 4, 64), (1, 37, 50), (2, 2304, 768), (5, 9, 3072)]
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bf16_kernel_equals_the_product_to_bf16_rounding(rows, n, k, with_bias):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, k, generator=g).bfloat16()
    weight = (torch.randn(n, k, generator=g) / k**0.5).bfloat16()
    bias = torch.randn(n, generator=g).bfloat16() if with_bias else None
    y = cpu_kernels.bf16_matvec(x, weight, bias)
    assert y is not None and y.dtype == torch.bfloat16 and y.shape == (rows, n)
    expected = x.double() @ weight.double().T
    if bias is not None:
        expected = expected + bias.double()
    err = (y.double() - expected).abs()
    assert (err <= expected.abs() * 2**-8 + 1e-3).all()  # one bf16 rounding of a float32 sum


def test_bf16_kernel_declines_what_it_does_not_take():
    w = torch.randn(8, 32).bfloat16()
    assert cpu_kernels.bf16_matvec(torch.randn(1, 32), w, None) is None  # fp32 input
    assert cpu_kernels.bf16_matvec(torch.randn(1, 32).bfloat16(), w.float(), None) is None
    many = torch.randn(cpu_kernels.MAX_ROWS + 1, 32).bfloat16()
    assert cpu_kernels.bf16_matvec(many, w, None) is None
