"""`prepare`: corpora -> token shards (folders, JSONL, big files), determinism, errors, CLI."""

from __future__ import annotations

import functools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.cli import main
from scratchgpt.data import ShardDataset, load_shard, load_text, prepare
from scratchgpt.data.documents import _safe_cut
from scratchgpt.errors import ConfigError, DataError, command_line_message
from scratchgpt.tokenizers import get_tokenizer, load_tokenizer

EOT = 50256


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def verdict() -> str:
    return load_text("the-verdict")


@pytest.fixture
def corpus_dir(tmp_path, verdict):
    """A folder of small text files (one nested), plus a file the glob must skip."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    paragraphs = [p for p in verdict.split("\n\n") if p.strip()][:24]
    for i, p in enumerate(paragraphs):
        (root / ("sub" if i % 3 == 0 else "") / f"doc{i:02d}.txt").write_text(p)
    (root / "notes.md").write_text("not part of the corpus")
    return root


def _files(root):
    return sorted((f for f in root.rglob("*.txt")), key=lambda f: f.relative_to(root).as_posix())


def _split_tokens(out, split):
    meta = json.loads((out / "meta.json").read_text())
    return [t for s in meta["shards"][split] for t in load_shard(out / s["file"]).tolist()]


def _same_folders(a, b):
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_prepare_folder_tokens_split_and_workers(corpus_dir, tmp_path, gpt2):
    kwargs = dict(val_fraction=0.25, shard_tokens=700, chunk_bytes=2048, progress=False, seed=3)
    one = prepare(corpus_dir, tmp_path / "one", num_workers=1, **kwargs)
    two = prepare(corpus_dir, tmp_path / "two", num_workers=2, **kwargs)
    _same_folders(tmp_path / "one", tmp_path / "two")

    # Rebuild the expected streams: documents in sorted order, split by one seeded draw each.
    rng = random.Random(3)
    expected = {"train": [], "val": []}
    for f in _files(corpus_dir):
        split = "val" if rng.random() < 0.25 else "train"
        expected[split] += [*gpt2.encode_ordinary(f.read_text()), EOT]
    for split in ("train", "val"):
        assert _split_tokens(tmp_path / "one", split) == expected[split]
        assert one.tokens[split] == len(expected[split])
    assert one.documents["train"] + one.documents["val"] == 24
    assert one.documents["val"] > 0 and one.documents["train"] > 0
    assert one.tokens == two.tokens
    sizes = [s["tokens"] for s in one.shards["train"]]
    assert all(n == 700 for n in sizes[:-1]) and 0 < sizes[-1] <= 700

    meta = one.meta
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 50257 and meta["eot_id"] == EOT
    assert meta["tokenizer"]["name"] == "gpt2"
    assert meta["num_files"] == 24
    tok = load_tokenizer(tmp_path / "one" / meta["tokenizer_file"])
    assert tok.encode("Hello, world") == gpt2.encode("Hello, world")
    ds = ShardDataset(tmp_path / "one", "train", max_length=16)
    assert ds.num_tokens == one.tokens["train"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_prepare_jsonl_workers_agree_and_skip_blank_lines(tmp_path, gpt2):
    lines = []
    texts = [f"Record {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(40)]
    for i, t in enumerate(texts):
        lines.append(json.dumps({"id": i, "text": t}))
        if i % 10 == 0:
            lines.append("")
    lines.append(json.dumps({"text": ""}))  # an empty document adds nothing, not even EOT
    src = tmp_path / "data.jsonl"
    src.write_text("\n".join(lines) + "\n")
    kw = dict(val_fraction=0.2, chunk_bytes=512, progress=False)
    one = prepare(src, tmp_path / "one", num_workers=1, **kw)
    prepare(src, tmp_path / "two", num_workers=2, **kw)
    _same_folders(tmp_path / "one", tmp_path / "two")
    both = _split_tokens(tmp_path / "one", "train") + _split_tokens(tmp_path / "one", "val")
    assert sorted(both) == sorted(t for x in texts for t in [*gpt2.encode_ordinary(x), EOT])
    assert one.documents["train"] + one.documents["val"] == 40
    assert both.count(EOT) == 40


def test_jsonl_custom_field_and_literal_special_token(tmp_path, gpt2):
    src = tmp_path / "d.txt"  # not .jsonl: jsonl_field makes it JSONL
    src.write_text(json.dumps({"body": "a <|endoftext|> b"}) + "\n")
    prepare(src, tmp_path / "out", jsonl_field="body", val_fraction=0, progress=False)
    # Text that spells the special token is ordinary text: only prepare adds the real EOT.
    assert _split_tokens(tmp_path / "out", "train") == [
        *gpt2.encode_ordinary("a <|endoftext|> b"),
        EOT,
    ]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"text": "ok"', r"line 2: invalid JSON at column"),
        ('{"content": "x"}', r"line 2: no field 'text' \(fields: 'content'\).*jsonl_field=NAME"),
        ("[1, 2]", r"line 2: expected a JSON object"),
        ('{"text": 5}', r"line 2: field 'text' must be a string"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, line, match):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=match) as e:
        prepare(src, tmp_path / "out", num_workers=1, progress=False)
    assert str(src) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_big_file_is_cut_without_changing_tokens(tmp_path, verdict, gpt2):
    src = tmp_path / "v.txt"
    src.write_text(verdict)
    result = prepare(
        src, tmp_path / "out", val_fraction=0, chunk_bytes=1500, num_workers=2, progress=False
    )
    assert _split_tokens(tmp_path / "out", "train") == [*gpt2.encode_ordinary(verdict), EOT]
    assert result.tokens["train"] == 5146 and result.documents["train"] == 1
    # One document and val_fraction > 0: told, not silently empty.
    again = prepare(src, tmp_path / "out2", val_fraction=0.1, seed=0, progress=False, num_workers=1)
    if again.documents["val"] == 0:
        assert "no document fell into the validation split" in again.notes[0]


@functools.cache
def _gpt2():
    return get_tokenizer("gpt2")


_alphabet = st.sampled_from([*"ab Z.,'\n\r\t-", "  ", "\n\n", "é", "\xa0", "12", "'s", "\u3000"])
_text = st.lists(_alphabet, max_size=30).map("".join)
_visible = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@settings(max_examples=200, deadline=None)
@given(_text, _visible, st.sampled_from(["\n", "\r\n"]), _visible, _text)
def test_safe_cut_never_changes_gpt2_tokens(head, c1, brk, c2, tail):
    # The middle always offers a safe break, so every example exercises a cut.
    text = head + c1 + brk + c2 + tail
    data = text.encode()
    cut = _safe_cut(data)
    assert cut >= len((head + c1 + brk).encode())
    left, right = data[:cut].decode(), data[cut:].decode()
    tok = _gpt2()
    assert tok.encode_ordinary(left) + tok.encode_ordinary(right) == tok.encode_ordinary(text)


def test_safe_cut_positions():
    assert _safe_cut(b"abc\ndef") == 4
    assert _safe_cut(b"abc\r\ndef") == 5
    assert _safe_cut(b"abc \ndef") == 0  # space before the break would join it
    assert _safe_cut(b"abc\n def") == 0
    assert _safe_cut(b"abc\n\ndef") == 0
    assert _safe_cut(b"a\nb c\nd e") == 6  # the last safe break wins
    assert _safe_cut(b"\nabc") == 0 and _safe_cut(b"abc\n") == 0


def test_non_utf8_names_byte_offset_and_replace_works(tmp_path, gpt2):
    src = tmp_path / "bad.txt"
    body = b"First line.\nSecond line.\n" * 40
    src.write_bytes(body + b"caf\xe9 au lait\n")
    with pytest.raises(DataError) as e:
        prepare(src, tmp_path / "out", chunk_bytes=100, num_workers=1, progress=False)
    msg = str(e.value)
    assert str(src) in msg and f"byte offset {len(body) + 3}" in msg and "line 81" in msg
    # Python spelling in str(); the command line shows its flag instead.
    assert "encoding_errors='replace'" in msg and "--encoding-errors" not in msg
    cli = command_line_message(e.value, {"--encoding-errors"})
    assert "--encoding-errors replace" in cli and "encoding_errors=" not in cli
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]  # the partial folder is gone
    prepare(src, tmp_path / "out", encoding_errors="replace", val_fraction=0, progress=False)
    text = (body + b"caf\xe9 au lait\n").decode("utf-8", errors="replace")
    assert _split_tokens(tmp_path / "out", "train") == [*gpt2.encode_ordinary(text), EOT]


def test_rerun_refused_then_overwrite(corpus_dir, tmp_path):
    out = tmp_path / "out"
    first = prepare(corpus_dir, out, val_fraction=0, progress=False, num_workers=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(corpus_dir, out, progress=False, num_workers=1)
    (corpus_dir / "extra.txt").write_text("One more document.")
    second = prepare(corpus_dir, out, val_fraction=0, progress=False, num_workers=1, overwrite=True)
    assert second.documents["train"] == first.documents["train"] + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "out"]


def test_overwrite_never_deletes_a_folder_prepare_did_not_write(corpus_dir, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(DataError, match="not a prepared data folder"):
        prepare(corpus_dir, precious, overwrite=True, progress=False, num_workers=1)
    assert (precious / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"val_fraction": 1.0}, ConfigError, "val_fraction"),
        ({"shard_tokens": 0}, ConfigError, "shard_tokens"),
        ({"num_workers": 0}, ConfigError, "num_workers"),
        ({"encoding_errors": "surrogateescape"}, ConfigError, "encoding_errors"),
        ({"glob": "*.rst"}, DataError, r"no files matching '\*.rst'"),
    ],
)
def test_bad_options(corpus_dir, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        prepare(corpus_dir, tmp_path / "out", progress=False, **kwargs)


def test_missing_inputs(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        prepare(tmp_path / "nope.txt", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="no inputs"):
        prepare([], tmp_path / "out", progress=False)


def test_uint32_shards_for_a_large_vocabulary(tmp_path):
    class BigVocab:
        """A stand-in tokenizer with ids above 65,535 (no save(): workers get it pickled)."""

        vocab_size = 70_000
        eot_id = 69_999

        def encode_ordinary(self, text):
            return [65_536 + ord(c) % 100 for c in text]

    src = tmp_path / "t.txt"
    src.write_text("hello")
    result = prepare(src, tmp_path / "out", BigVocab(), val_fraction=0, progress=False)
    assert result.meta["dtype"] == "uint32" and result.meta["tokenizer_file"] is None
    ids = load_shard(tmp_path / "out" / "train_000000.bin")
    assert ids.dtype == np.uint32 and ids.tolist()[-1] == 69_999 and ids[0] == 65_536 + 4


def test_cli_prepare_and_rerun(corpus_dir, tmp_path, capsys):
    out = tmp_path / "cli-out"
    argv = [
        "prepare",
        str(corpus_dir),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        "--shard-tokens",
        "1000",
        "--val-fraction",
        "0.2",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "train" in text and "documents" in text and "tokens/s" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"].startswith("scratchgpt prepare ")
    assert "--shard-tokens 1000" in meta["command"]
    assert len(meta["shards"]["train"]) > 1
    assert main(argv) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_prepare_bad_input_is_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\n")
    assert main(["prepare", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "byte offset 3" in err and "Traceback" not in err


def test_output_inside_the_input_folder_is_never_read(corpus_dir):
    out = corpus_dir / "prepared"
    first = prepare(corpus_dir, out, glob="*", val_fraction=0, progress=False, num_workers=1)
    again = prepare(
        corpus_dir, out, glob="*", val_fraction=0, progress=False, num_workers=1, overwrite=True
    )
    assert again.tokens == first.tokens and again.meta["num_files"] == 25  # 24 .txt + notes.md


def test_cli_saved_tokenizer_file_and_empty_val_split(tmp_path, verdict, capsys):
    tok_file = tmp_path / "simple.json"
    get_tokenizer("simple", corpus=verdict).save(tok_file)
    src = tmp_path / "v.txt"
    src.write_text(verdict[:3000])
    out = tmp_path / "out"
    argv = ["prepare", str(src), "--out", str(out), "--tokenizer", str(tok_file)]
    assert main([*argv, "--no-progress", "--val-fraction", "0"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["name"] == "simple" and meta["dtype"] == "uint16"
    simple = load_tokenizer(out / "tokenizer.json")
    ids = _split_tokens(out, "train")
    assert ids == [*simple.encode_ordinary(verdict[:3000]), simple.eot_id]
    with pytest.raises(DataError, match="no 'val' shards"):
        ShardDataset(out, "val", max_length=4)
    capsys.readouterr()
