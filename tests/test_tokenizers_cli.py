"""`scratchgpt tokenize` and `scratchgpt train-tokenizer`, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchgpt.assets import asset_path
from scratchgpt.cli import main
from scratchgpt.tokenizers import load_tokenizer

GOLDEN_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
GOLDEN = (
    "15496 11 466 345 588 8887 30 220 50256 554 262 4252 18250 8812 2114 286 617 34680 27271 13"
)


@pytest.mark.parametrize("backend", ["tiktoken", "scratch"])
def test_tokenize_golden(capsys, backend: str) -> None:
    assert main(["tokenize", GOLDEN_TEXT, "--allow-special", "--backend", backend]) == 0
    assert capsys.readouterr().out == GOLDEN + "\n"


def test_tokenize_decode(capsys, tmp_path: Path) -> None:
    assert main(["tokenize", "--decode", GOLDEN]) == 0
    assert capsys.readouterr().out == GOLDEN_TEXT + "\n"
    ids = tmp_path / "ids.txt"
    ids.write_text("[15496,\n 11, 995]\n", encoding="utf-8")
    assert main(["tokenize", "--ids-file", str(ids)]) == 0
    assert capsys.readouterr().out == "Hello, world\n"


def test_tokenize_show_tokens(capsys) -> None:
    assert main(["tokenize", "Hi 🦙\n", "--show-tokens"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '17250\t"Hi"'
    # The llama emoji spans tokens that are not whole characters: shown as bytes.
    assert any("b'" in line for line in lines)
    assert lines[-1].endswith('"\\n"')


def test_tokenize_file_and_errors(capsys, tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Hello, world", encoding="utf-8")
    assert main(["tokenize", "--file", str(good)]) == 0
    assert capsys.readouterr().out == "15496 11 995\n"

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nbad \xff byte")
    assert main(["tokenize", "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "byte offset 7" in err and "line 2" in err and "Traceback" not in err
    assert main(["tokenize", "--file", str(bad), "--encoding-errors", "replace"]) == 0
    assert "\ufffd" not in capsys.readouterr().out  # ids, not text

    assert main(["tokenize", "a <|endoftext|>"]) == 2
    assert "--allow-special" in capsys.readouterr().err
    assert main(["tokenize", "--decode", "1 two 3"]) == 2
    assert "'two' is not a token id" in capsys.readouterr().err
    assert main(["tokenize", "--decode", "99999"]) == 2
    assert "99999" in capsys.readouterr().err
    assert main(["tokenize", "--tokenizer", "bpe", "x"]) == 2
    assert "--tokenizer-file" in capsys.readouterr().err
    assert main(["tokenize", "x", "--file", str(good)]) == 2
    assert "not both" in capsys.readouterr().err


def test_tokenize_simple_and_char(capsys, tmp_path: Path) -> None:
    assert main(["tokenize", "-t", "simple", "Hello, do you like tea?"]) == 0
    assert capsys.readouterr().out == "1131 5 355 1126 628 975 10\n"
    corpus = tmp_path / "abc.txt"
    corpus.write_text("cab", encoding="utf-8")
    assert main(["tokenize", "-t", "char", "--corpus", str(corpus), "abc"]) == 0
    assert capsys.readouterr().out == "0 1 2\n"
    assert main(["tokenize", "-t", "char", "--corpus", str(corpus), "abd"]) == 2
    assert "'d' (U+0064" in capsys.readouterr().err


def test_train_tokenizer_then_use_it(capsys, tmp_path: Path) -> None:
    out = tmp_path / "bpe.json"
    corpus = [str(asset_path("the-verdict.txt"))]
    args = ["train-tokenizer", *corpus, "--vocab-size", "300", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "vocab size:   300" in summary and "merges:       43" in summary
    assert "bytes/token" in summary and "20,479 bytes" in summary
    tok = load_tokenizer(out)
    assert tok.vocab_size == 300 and tok.eot_id == 299

    assert main(["tokenize", "--tokenizer-file", str(out), "the end", "--show-tokens"]) == 0
    pieces = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert "".join(json.loads(p) for p in pieces) == "the end"

    # The output exists: refuse, then replace with --overwrite.
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--special-tokens"]) == 0
    assert load_tokenizer(out).special_tokens == {}


def test_train_tokenizer_bad_input(capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "bpe.json")
    verdict = str(asset_path("the-verdict.txt"))
    assert main(["train-tokenizer", verdict, "--vocab-size", "100", "--out", out]) == 2
    assert "at least 257" in capsys.readouterr().err
    assert (
        main(["train-tokenizer", str(tmp_path / "nope.txt"), "--vocab-size", "300", "-o", out]) == 2
    )
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xc3(")
    assert (
        main(["train-tokenizer", str(bad), "--vocab-size", "300", "-o", out, "--no-progress"]) == 2
    )
    assert "byte offset 3" in capsys.readouterr().err
    assert not Path(out).exists()
