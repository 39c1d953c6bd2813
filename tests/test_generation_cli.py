"""`scratchgpt generate` end to end, with tiny models."""

from __future__ import annotations

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.generation import generate_text
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import save_checkpoint


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine an OpenMP team
    waiting for a descheduled thread makes small ops many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PROMPT = "Every effort moves you"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["generate", *args])
    except SystemExit as e:  # a usage error found while parsing
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("gpt2")


def preset_model(seed: int = 123) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig.from_preset("tiny")).eval()


def test_preset_greedy_matches_python_api(capsys, tok):
    # --dtype fp32: the default (auto) is bf16 on CPUs with native bf16, and this compares with
    # the fp32 model.
    code, out, _ = run_cli(
        capsys, "--preset", "tiny", "--prompt", PROMPT, "--max-new-tokens", "8", "--dtype", "fp32"
    )
    assert code == 0
    expected = generate_text(preset_model(), tok, PROMPT, 8)
    assert len(expected) > 0
    assert out == PROMPT + expected + "\n"


def test_stream_no_echo_and_sampling_options(capsys, tok):
    args = ["--preset", "tiny", "--prompt", PROMPT, "--max-new-tokens", "12", "--seed", "4"]
    args += ["--temperature", "1.2", "--top-k", "50", "--top-p", "0.95", "--no-echo"]
    args += ["--dtype", "fp32"]
    code, streamed, _ = run_cli(capsys, *args, "--stream")
    assert code == 0
    code, plain, _ = run_cli(capsys, *args)
    assert code == 0
    expected = generate_text(
        preset_model(4), tok, PROMPT, 12, temperature=1.2, top_k=50, top_p=0.95, seed=4
    )
    assert streamed == plain == expected + "\n"


def test_stop_string_cuts_output(capsys, tok):
    base = ["--preset", "tiny", "--prompt", PROMPT, "--max-new-tokens", "10", "--no-echo"]
    _, full, _ = run_cli(capsys, *base)
    stop = full.strip()[3:6]  # a piece of the greedy continuation
    code, out, _ = run_cli(capsys, *base, "--stop", stop, "--stream")
    assert code == 0
    assert out == full[: full.index(stop)] + "\n"


def test_checkpoint_folder(capsys, tmp_path, tok):
    model = preset_model(7)
    save_checkpoint(tmp_path / "ckpt", model, tok)
    save_checkpoint(tmp_path / "no-tok", model)  # GPT-2 vocabulary size: GPT-2 tokenizer assumed
    expected = PROMPT + generate_text(model, tok, PROMPT, 6) + "\n"
    for folder in ("ckpt", "no-tok"):
        code, out, _ = run_cli(
            capsys,
            "--checkpoint",
            str(tmp_path / folder),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "6",
            "--dtype",
            "fp32",
        )
        assert code == 0
        assert out == expected


def test_bf16(capsys):
    code, out, _ = run_cli(
        capsys, "--preset", "tiny", "--prompt", PROMPT, "--max-new-tokens", "4", "--dtype", "bf16"
    )
    assert code == 0
    assert out.startswith(PROMPT) and len(out) > len(PROMPT) + 1


@pytest.mark.parametrize("native", [True, False])
def test_dtype_auto_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, native):
    from scratchgpt.cli.args import inference_dtype
    from scratchgpt.training import setup

    monkeypatch.setattr(setup, "cpu_has_fast_bf16", lambda: native)
    assert inference_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert inference_dtype("fp32", "cpu") == torch.float32
    assert inference_dtype("bf16", "cpu") == torch.bfloat16
    # int8 weights: fp32 activations where the project's int8 kernel runs them as fast
    from scratchgpt.model import cpu_kernels

    for available in (True, False):
        monkeypatch.setattr(cpu_kernels, "load", lambda a=available: object() if a else None)
        want = torch.float32 if available or not native else torch.bfloat16
        assert inference_dtype("auto", "cpu", "int8") == want


def test_dtype_flag_reaches_the_model(capsys, monkeypatch):
    """What --dtype asks for is the dtype the model runs in (auto resolved on this machine)."""
    from scratchgpt.cli import generate as generate_cli
    from scratchgpt.cli.args import inference_dtype

    seen = []
    real = generate_cli._load
    monkeypatch.setattr(generate_cli, "_load", lambda args: seen.append(real(args)) or seen[-1])
    for flag in ("auto", "fp32", "bf16"):
        code, _, _ = run_cli(
            capsys, "--preset", "tiny", "--prompt", PROMPT, "--max-new-tokens", "2", "--dtype", flag
        )
        assert code == 0
        model = seen[-1][0]
        assert next(model.parameters()).dtype == inference_dtype(flag, "cpu")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "tiny", "--top-p", "2"], "--top-p: expected a number in (0, 1]"),
        (["--preset", "tiny", "--max-new-tokens", "-3"], "--max-new-tokens"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--checkpoint", "/nonexistent/ckpt"], "nonexistent"),
    ],
)
def test_errors_without_traceback(capsys, args, message):
    code, out, err = run_cli(capsys, *args, "--prompt", PROMPT)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert out == ""


def test_empty_prompt_error(capsys):
    code, _, err = run_cli(capsys, "--preset", "tiny", "--prompt", "")
    assert code == 2 and "empty prompt" in err


def test_cuda_unavailable(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, "--preset", "tiny", "--prompt", PROMPT, "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err
