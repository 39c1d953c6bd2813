"""Messages that fit where they are shown: command-line advice names only flags the command
has, Python advice names arguments; warnings are one-line notes on the command line; silent
acceptance of bad data or configs is an error that names the file, line and field."""

from __future__ import annotations

import json

import pytest
import torch

from scratchgpt.chat import ChatSession
from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.classification import load_labelled
from scratchgpt.errors import CheckpointError, ConfigError, DataError
from scratchgpt.fileio import atomic_write_text, read_text
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import get_tokenizer
from scratchgpt.weights import inspect_model, load_model, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _err(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lm") / "ckpt"
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257))
    save_checkpoint(path, model, get_tokenizer("gpt2"), metadata={"prompt_style": "alpaca"})
    return path


# ---------------------------------------------------------------------------------------------
# Advice in the words of the place it is read


def test_encoding_advice_only_where_the_command_has_the_flag(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait\n")
    # Python: the argument of read_text.
    with pytest.raises(DataError, match=r"not valid UTF-8.*errors='replace'"):
        read_text(bad)
    # tokenize has --encoding-errors: the flag is suggested.
    code, err = _err(capsys, ["tokenize", "--file", str(bad)])
    assert code == 2 and "--encoding-errors replace" in err and "errors='replace'" not in err
    # respond --data has no such flag: no advice to use it, no Python spelling either.
    respond_data = tmp_path / "records.json"
    respond_data.write_bytes(b'[{"instruction": "caf\xe9", "input": "", "output": "x"}]')
    code, err = _err(capsys, ["respond", "--checkpoint", "x", "--data", str(respond_data)])
    assert code == 2 and "not valid UTF-8" in err, err
    assert "--encoding-errors" not in err and "errors='replace'" not in err
    assert err.count("\n") == 1


def test_overwrite_advice_is_the_flag_on_the_command_line(tmp_path, capsys):
    atomic_write_text(tmp_path / "a.txt", "x")
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        atomic_write_text(tmp_path / "a.txt", "y", overwrite=False)
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, hello there\n" * 30, "utf-8")
    out = tmp_path / "shards"
    assert main(["prepare", str(corpus), "--out", str(out), "--workers", "1", "--no-progress",
                 "--tokenizer", "gpt2"]) == 0  # fmt: skip
    capsys.readouterr()
    code, err = _err(capsys, ["prepare", str(corpus), "--out", str(out), "--no-progress"])
    assert code == 2 and "pass --overwrite to replace it" in err and "overwrite=True" not in err


def test_glob_advice_is_the_flag(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("hello\n", "utf-8")
    code, err = _err(capsys, ["prepare", str(tmp_path / "docs"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no files matching '*.txt'" in err and "--glob" in err
    assert "glob=" not in err


def test_sources_advice_names_the_data_command(tmp_path, capsys, monkeypatch):
    code, err = _err(
        capsys,
        ["data", "download", "the-verdict", "--cache-dir", str(tmp_path), "--url",
         f"file://{tmp_path}/missing.txt"],
    )  # fmt: skip
    assert code == 2 and "could not reach" in err
    assert "local_path" not in err and "--url" in err


def test_classification_messages_say_texts_not_windows(tmp_path, lm, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "good film,pos\nbad film,neg\n" * 5, "utf-8")
    code, err = _err(capsys, ["finetune-classifier", "--checkpoint", str(lm), "--data", str(data),
                              "--out", str(tmp_path / "run"), "--batch-size", "64",
                              "--max-steps", "1", "--no-progress"])  # fmt: skip
    assert code == 2, err
    assert "7 text(s), fewer than the batch size 64" in err and "window" not in err
    assert "stride" not in err


def test_text_holds_grammar(lm, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("just a few words", "utf-8")
    code, err = _err(capsys, ["evaluate", "loss", "--checkpoint", str(lm), "--data", str(short)])
    assert code == 2 and "the text holds 4 tokens" in err, err


def test_classifier_help_lists_no_text_sampling(capsys):
    with pytest.raises(SystemExit):
        main(["finetune-classifier", "--help"])
    out = capsys.readouterr().out
    assert "--sample-prompt" not in out and "--sample-tokens" not in out and "--lr" in out
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--sample-prompt" in capsys.readouterr().out


def test_mfu_above_100_percent_says_the_peak_is_unreliable(monkeypatch):
    from scratchgpt.training import perf
    from scratchgpt.training.logging import format_summary

    monkeypatch.setattr(perf, "peak_tflops", lambda device, dtype: (1e-6, "measured fp32 matmul"))
    cfg = GPTConfig.from_preset("tiny")
    report = perf.mfu_report(1e6, cfg, 64, torch.device("cpu"), None)
    assert report["mfu"] is None and report["peak_unreliable"]
    summary = {"steps": 1, "session_steps": 1, "tokens_seen": 1, "session_seconds": 1.0,
               "tokens_per_s": 1e6, **report}  # fmt: skip
    text = format_summary(summary)
    assert "unreliable" in text and "%" not in text
    # A peak the user gave is trusted: the percentage is shown, however high.
    given = perf.mfu_report(1e6, cfg, 64, torch.device("cpu"), None, given_peak=1e-6)
    assert given["mfu"] > 1 and not given["peak_unreliable"]


# ---------------------------------------------------------------------------------------------
# Warnings on the command line: one line, no source code


def test_classify_truncation_warning_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    clf = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, num_classes=2))
    meta = {"label_names": ["ham", "spam"], "max_length": 16, "pad_token_id": 50256}
    save_checkpoint(tmp_path / "clf", clf, get_tokenizer("gpt2"), metadata=meta)
    assert main(["classify", "--checkpoint", str(tmp_path / "clf"), "spam " * 100]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "note: 1 text(s) are longer than the classifier's 16 tokens and were truncated to their "
        "first tokens"
    ]


def test_pretrain_warning_is_one_line(tmp_path, capsys):
    argv = ["pretrain", "--preset", "char-small", "--model", "tiny", "--out", str(tmp_path / "r"),
            "--max-length", "64", "--train-ratio", "0.998", "--max-steps", "1", "--batch-size", "2",
            "--eval-batches", "1", "--sample-tokens", "0", "--no-progress", "--peak-tflops", "1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if "validation" in ln]
    assert notes and all(ln.startswith("note: no validation loss") for ln in notes), err
    assert "warnings.warn" not in err and "UserWarning" not in err


# ---------------------------------------------------------------------------------------------
# Silent acceptance


def test_a_lone_label_is_an_error_not_a_new_class(tmp_path, lm, capsys):
    data = tmp_path / "spam.csv"
    rows = ["ham,hello there"] * 12 + ["spam,win a prize now"] * 12 + ["spma,call this number"]
    data.write_text("label,text\n" + "\n".join(rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"spam\.csv, line 26: label 'spma'.*\['ham', 'spam'\]"):
        load_labelled(data)
    code, err = _err(capsys, ["finetune-classifier", "--checkpoint", str(lm), "--data", str(data),
                              "--out", str(tmp_path / "run"), "--max-steps", "1"])  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "line 26: label 'spma'" in err and "['ham', 'spam']" in err
    assert "--labels ham,spam,spma" in err and "label_names" not in err
    # Given the whole label set, a class of one example is accepted.
    splits = load_labelled(data, label_names=["ham", "spam", "spma"])
    assert splits.train.label_names == ["ham", "spam", "spma"]


def test_config_json_without_emb_dim_is_an_error(lm, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lm, bad)
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["emb_dim"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: missing field\(s\) \['emb_dim'\]"):
        inspect_model(bad)
    with pytest.raises(ConfigError, match="emb_dim"):
        GPTConfig.load(bad / "config.json")
    code, err = _err(capsys, ["generate", "--checkpoint", str(bad), "--prompt", "hi"])
    assert code == 2 and "missing field(s) ['emb_dim']" in err and str(bad) in err
    # Presets and complete files still load.
    assert GPTConfig.from_preset("gpt2-small").emb_dim == 768
    assert load_model(lm).config.emb_dim == 32


def test_hf_config_without_sizes_is_an_error(tmp_path):
    from scratchgpt.weights.hf.gpt2 import config_from_hf

    full = {"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_head": 4, "n_layer": 2,
            "n_positions": 64}  # fmt: skip
    assert config_from_hf(full).emb_dim == 32
    with pytest.raises(CheckpointError, match=r"missing field\(s\) \['n_embd'\]"):
        config_from_hf({k: v for k, v in full.items() if k != "n_embd"})


def test_chat_checks_sampling_options_before_the_first_message(lm):
    loaded = load_model(lm)
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_k": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError):
            ChatSession(loaded.model, loaded.tokenizer, "alpaca", **bad)


def test_vocabulary_size_message_has_no_python_name(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n", "utf-8")
    argv = ["train-tokenizer", str(corpus), "--vocab-size", "10", "--out", str(tmp_path / "t.json")]
    code, err = _err(capsys, argv)
    assert code == 2 and "at least 257" in err and "vocab_size" not in err


def test_unknown_character_advice_is_python_only(tmp_path, capsys):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc", "utf-8")
    argv = ["tokenize", "--tokenizer", "char", "--corpus", str(corpus), "abz"]
    code, err = _err(capsys, argv)
    assert code == 2 and "'z'" in err and "not in the alphabet" in err
    assert "unk=True" not in err
