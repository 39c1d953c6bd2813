"""Every command, given bad arguments, ends with one line on stderr, ``error: ...``, and exit
code 2: never a Python traceback, never a silent success.

Usage errors that argparse finds (a value of the wrong type or out of range, a missing required
flag, an unknown choice) are one line too: ``error: scratchgpt CMD: argument --flag: ...
(see scratchgpt CMD --help)``, not argparse's usage block. The bad values here are all caught
before a model is loaded or any work starts, so this whole file runs in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchgpt.cli import COMMAND_MODULES, build_parser, main
from scratchgpt.config import GPTConfig
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import save_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Paths the bad arguments name: a tiny language model, a tiny classifier, a text file, a
    folder, a path that does not exist."""
    root = tmp_path_factory.mktemp("bad-args")
    torch.manual_seed(0)
    tok = get_tokenizer("gpt2")
    lm = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257))
    save_checkpoint(root / "lm", lm, tok, metadata={"prompt_style": "alpaca"})
    clf = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, num_classes=2))
    meta = {"label_names": ["ham", "spam"], "max_length": 16, "pad_token_id": 50256}
    save_checkpoint(root / "clf", clf, tok, metadata=meta)
    (root / "text.txt").write_text("hello world\n" * 20, "utf-8")
    (root / "folder").mkdir()
    (root / "texts.csv").write_text("text,label\n" + "good,pos\nbad,neg\n" * 10, "utf-8")
    return {
        "lm": str(root / "lm"),
        "clf": str(root / "clf"),
        "file": str(root / "text.txt"),
        "csv": str(root / "texts.csv"),
        "dir": str(root / "folder"),
        "missing": str(root / "missing"),
        "new": str(root / "new-output"),
    }


# {placeholders} are filled from `places`.
BAD_ARGS: dict[str, list[str]] = {
    "data": [
        "data download the-verdict --timeout 0",
        "data download the-verdict --timeout -5",
        "data path no-such-source",
        "data download no-such-source",
    ],
    "tokenize": [
        "tokenize --file {dir}",
        "tokenize --file {missing}",
        "tokenize --ids-file {dir}",
        "tokenize --decode 1,x",
        "tokenize --tokenizer bpe hello",
        "tokenize --tokenizer-file {dir} hello",
    ],
    "train-tokenizer": [
        "train-tokenizer {file} --vocab-size 0 --out {new}",
        "train-tokenizer {file} --vocab-size -5 --out {new}",
        "train-tokenizer {file} --vocab-size 10 --out {new}",
        "train-tokenizer {file} --vocab-size 300 --out {dir} --overwrite",
        "train-tokenizer {file} --vocab-size 300 --out {dir}",
        "train-tokenizer {dir} --vocab-size 300 --out {new}",
        "train-tokenizer {missing} --vocab-size 300 --out {new}",
    ],
    "prepare": [
        "prepare {file} --out {new} --workers 0",
        "prepare {file} --out {new} --shard-tokens 0",
        "prepare {file} --out {new} --val-fraction 2",
        "prepare {file} --out {new} --val-fraction -0.5",
        "prepare {missing} --out {new}",
        "prepare {file} --out {file}",
    ],
    "pretrain": [
        "pretrain --out {new} --max-steps -1",
        "pretrain --out {new} --batch-size 0",
        "pretrain --out {new} --lr nan",
        "pretrain --out {new} --config {missing}",
        "pretrain --out {file}",
        "pretrain --out {new} --preset no-such-preset",
    ],
    "plot": ["plot {missing}", "plot {file}", "plot {dir}"],
    "generate": [
        "generate --checkpoint {lm} --prompt hi --max-new-tokens -1",
        "generate --checkpoint {lm} --prompt hi --top-k 0",
        "generate --checkpoint {lm} --prompt hi --top-p 0",
        "generate --checkpoint {lm} --prompt hi --top-p 1.5",
        "generate --checkpoint {lm} --prompt hi --temperature -1",
        "generate --checkpoint {lm} --prompt hi --temperature nan",
        "generate --checkpoint {lm} --prompt hi --context-size 0",
        "generate --checkpoint {dir} --prompt hi",
        "generate --checkpoint {file} --prompt hi",
        "generate --checkpoint {missing} --prompt hi",
        "generate --preset no-such-preset --prompt hi",
    ],
    "finetune-classifier": [
        "finetune-classifier --out {new} --checkpoint {lm} --batch-size 0",
        "finetune-classifier --out {new} --checkpoint {lm} --data {missing}",
        "finetune-classifier --out {new} --checkpoint {lm} --data {dir}",
        "finetune-classifier --out {new} --checkpoint {lm} --data {csv} --train-frac 2",
        "finetune-classifier --out {new} --checkpoint {lm} --data {csv} --val-frac -1",
        "finetune-classifier --out {new}",
    ],
    "classify": [
        "classify --checkpoint {clf} --batch-size 0 hi",
        "classify --checkpoint {lm} hi",
        "classify --checkpoint {clf} --file {dir}",
        "classify --checkpoint {clf} --file {missing}",
        "classify --checkpoint {missing} hi",
        "classify --checkpoint {clf}",
    ],
    "finetune-instruct": [
        "finetune-instruct --out {new} --checkpoint {lm} --batch-size 0",
        "finetune-instruct --out {new} --checkpoint {lm} --data {missing}",
        "finetune-instruct --out {new} --checkpoint {lm} --max-epochs -1",
    ],
    "finetune-dpo": [
        "finetune-dpo --out {new} --checkpoint {lm} --beta 0",
        "finetune-dpo --out {new} --checkpoint {lm} --data {missing}",
        "finetune-dpo --out {new} --checkpoint {lm} --logprob median",
    ],
    "respond": [
        "respond --checkpoint {lm} --batch-size 0",
        "respond --checkpoint {lm} --batch-size -3",
        "respond --checkpoint {lm} --limit 0",
        "respond --checkpoint {lm} --limit -1",
        "respond --checkpoint {lm} --max-new-tokens 0",
        "respond --checkpoint {lm} --train-frac 2 --split train",
        "respond --checkpoint {lm} --data {dir}",
        "respond --checkpoint {lm} --data {missing}",
        "respond --checkpoint {missing}",
        "respond --checkpoint {lm} --out {dir}",
        "respond --checkpoint {lm} --out {dir} --overwrite",
    ],
    "chat": [
        "chat --checkpoint {lm} --temperature -1",
        "chat --checkpoint {lm} --top-p 0",
        "chat --checkpoint {lm} --top-k 0",
        "chat --checkpoint {lm} --max-new-tokens 0",
        "chat --checkpoint {lm} --seed x",
        "chat --checkpoint {missing}",
    ],
    "serve": [
        "serve --checkpoint {lm} --port 99999",
        "serve --checkpoint {lm} --port -1",
        "serve --checkpoint {lm} --max-queue 0",
        "serve --checkpoint {lm} --timeout 0",
        "serve --checkpoint {lm} --max-body-bytes 0",
        "serve --checkpoint {missing}",
        "serve --checkpoint {lm} --api-key-env SCRATCHGPT_TEST_UNSET_VARIABLE",
    ],
    "evaluate": [
        "evaluate",
        "evaluate no-such-evaluation",
        "evaluate loss --checkpoint {lm} --batch-size 0",
        "evaluate loss --checkpoint {lm} --data {missing}",
        "evaluate judge --responses {missing} --judge-url http://127.0.0.1:9 --judge-model m",
        "evaluate judge --responses {dir} --judge-url http://127.0.0.1:9 --judge-model m",
        "evaluate judge --responses {file} --judge-url http://127.0.0.1:9 --judge-model m "
        "--retries -1",
        "evaluate judge --responses {file} --judge-url http://127.0.0.1:9 --judge-model m "
        "--timeout 0",
    ],
    "download": ["download gpt5", "download gpt2 --dir {file}"],
    "export": [
        "export --checkpoint {missing} --out {dir}/x",
        "export --checkpoint {dir} --out {dir}/x",
        "export --out {dir}/x",
        "export --checkpoint {dir} --out {dir}/x --dtype int4",
        "export --checkpoint {lm} --out {dir}/x.gguf --format gguf --type q4_0",
        "export --checkpoint {lm} --out {dir}/x.gguf --format onnx",
        "export --checkpoint {lm} --out {dir}/x --type q8_0",
        "export --checkpoint {lm} --out {dir}/x.gguf --format gguf --dtype float16",
        "export --checkpoint {lm} --out {file} --format gguf",
        "export --checkpoint {lm} --out {dir} --format gguf --overwrite",
    ],
    "info": [
        "info --checkpoint {dir}",
        "info --checkpoint {missing}",
        "info --preset no-such-preset",
        "info",
    ],
}


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


def test_every_command_has_bad_arguments():
    assert len(_commands()) == len(COMMAND_MODULES)
    assert sorted(BAD_ARGS) == sorted(_commands())


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    "line", [line for lines in BAD_ARGS.values() for line in lines], ids=lambda s: s[:60]
)
def test_bad_arguments_give_one_error_line(line, places, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing a command might write lands in the repository
    monkeypatch.delenv("SCRATCHGPT_TEST_UNSET_VARIABLE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # `download` never reaches for the network
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115 (`chat` reads no message)
    argv = [word.format(**places) for word in line.split()]
    code, err = _run(capsys, argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error"), err
    new = Path(places["new"])
    created = new.exists()
    if created:  # leave nothing behind for the next case, then fail
        shutil.rmtree(new) if new.is_dir() else new.unlink()
    assert not created, f"{new} was written"


def test_entry_point_in_a_process(places):
    """The real console entry point: same one line and exit code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "scratchgpt", "serve", "--checkpoint", places["lm"], "--port",
         "99999"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: scratchgpt serve: argument --port: expected a port number (1-65535, or 0 for any "
        "free port), got 99999 (see scratchgpt serve --help)"
    ]
