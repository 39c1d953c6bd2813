"""Training byte-level BPE: a hand-checked example, streaming, round trips, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.assets import asset_path
from scratchgpt.errors import DataError, TokenizerError, command_line_message
from scratchgpt.tokenizers import EOT, BPETokenizer, get_tokenizer, load_tokenizer, train_bpe


def merged_bytes(tok: BPETokenizer) -> list[tuple[bytes, bytes]]:
    return [(tok.token_bytes(a), tok.token_bytes(b)) for a, b, _ in tok.merges]


def test_hand_checked_merges() -> None:
    # One pre-token "aaabdaaabac" (all letters). Worked by hand:
    #  start  a a a b d a a a b a c       pairs: aa=4 ab=2 bd=1 da=1 ba=1 ac=1
    #  1. (a,a)    -> aa a b d aa a b a c  pairs: (aa,a)=2 (a,b)=2 ... tie at 2:
    #     smallest (left, right) bytes: (b"a", b"b") < (b"aa", b"a")
    #  2. (a,b)    -> aa ab d aa ab a c    pairs: (aa,ab)=2, the rest 1
    #  3. (aa,ab)  -> aaab d aaab a c      all pairs 1: (b"a", b"c") is smallest
    #  4. (a,c)    -> aaab d aaab ac       (b"aaab", b"ac") < (b"aaab", b"d") < (b"d", ...)
    #  5. (aaab,ac) -> aaab d aaabac
    #  6. (aaab,d)  -> aaabd aaabac
    #  7. (aaabd,aaabac) -> one token; no pairs remain.
    expected = [
        (b"a", b"a"),
        (b"a", b"b"),
        (b"aa", b"ab"),
        (b"a", b"c"),
        (b"aaab", b"ac"),
        (b"aaab", b"d"),
        (b"aaabd", b"aaabac"),
    ]
    tok = train_bpe("aaabdaaabac", 256 + 1 + 4)
    assert merged_bytes(tok) == expected[:4]
    assert tok.vocab_size == 261 and tok.special_tokens == {EOT: 260}
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, 259]
    assert tok.decode([258, 259]) == "aaabac"
    # Asking for more than the corpus can give stops when no pairs are left.
    full = train_bpe("aaabdaaabac", 300)
    assert merged_bytes(full) == expected
    assert full.vocab_size == 256 + 7 + 1
    assert full.encode("aaabdaaabac") == [262]
    assert full.training_info["corpus_tokens"] == 1


def test_pretokens_and_specials_bound_merges() -> None:
    # Pre-tokens "the" x1 and " the" x2 (merges never cross them, nor a special token): pairs
    # (t,h)=3 (h,e)=3 ( ,t)=2; the tie goes to (b"h", b"e") < (b"t", b"h"); then (t,he)=3;
    # then ( ,the)=2.
    tok = train_bpe(["the the the", "x<|endoftext|>y"], 256 + 1 + 3)
    assert merged_bytes(tok) == [(b"h", b"e"), (b"t", b"he"), (b" ", b"the")]
    assert tok.encode("x<|endoftext|>y", allowed_special="all") == [ord("x"), 259, ord("y")]


def test_training_count_equals_encoder_count(tmp_path: Path) -> None:
    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    tok = train_bpe(text, 600)
    info = tok.training_info
    assert info["corpus_bytes"] == len(text.encode("utf-8"))
    # The segmentation training ends with is what the encoder produces.
    assert info["corpus_tokens"] == len(tok.encode(text))
    assert len(tok.encode(text)) < len(text) / 2


CHUNKY = (
    "We'll go; they'LL see.  Ünïcödé 😀👍🏽 中文 \r\n\r\n  spaces   \t\ttabs<|endoftext|>"
    "after<|endoftext|><|endoftext|> it's 12345 67 'll ' l 'l\n"
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_streamed_files_train_like_whole_text(tmp_path: Path, chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    parts = list(CHUNKY)
    text = "".join(rng.choice(parts) for _ in range(3000)) + CHUNKY * 5
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    whole = train_bpe(text, 320)
    streamed = train_bpe([path], 320, chunk_size=chunk_size)
    assert streamed.merges == whole.merges
    assert streamed.training_info == whole.training_info


def test_texts_and_files_mix(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello hello", encoding="utf-8")
    mixed = train_bpe([tmp_path / "a.txt", " world world"], 270)
    assert mixed.merges == train_bpe("hello hello world world", 270).merges


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tok = train_bpe(asset_path("the-verdict.txt"), 500, special_tokens=[EOT, "<|pad|>"])
    path = tok.save(tmp_path / "bpe.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe" and data["version"] == 1
    assert data["special_tokens"] == {EOT: 498, "<|pad|>": 499}
    assert len(data["merges"]) == 500 - 256 - 2 and data["merges"][0] == ["20", "74"]
    loaded = get_tokenizer("bpe", path=path)
    assert loaded.merges == tok.merges and loaded.pattern == tok.pattern
    sample = "The Verdict <|pad|> 🦙 naïve"
    assert loaded.encode(sample, allowed_special="all") == tok.encode(sample, allowed_special="all")
    # Saving is deterministic: the same corpus gives the same file.
    again = train_bpe(asset_path("the-verdict.txt"), 500, special_tokens=[EOT, "<|pad|>"])
    assert again.save(tmp_path / "again.json").read_bytes() == path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tok.save(path, overwrite=False)


def test_non_standard_layout_saves_its_vocab(tmp_path: Path) -> None:
    # The GPT-2 files loaded into the BPE class: ids are not in merge order.
    scratch = get_tokenizer("gpt2", backend="scratch")._bpe
    path = scratch.save(tmp_path / "gpt2-as-bpe.json")
    assert "vocab" in json.loads(path.read_text(encoding="utf-8"))
    loaded = load_tokenizer(path)
    text = "Hello, do you like tea? In the sunlit terraces"
    assert loaded.encode(text) == [
        15496,
        11,
        466,
        345,
        588,
        8887,
        30,
        554,
        262,
        4252,
        18250,
        8812,
        2114,
    ]


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    return train_bpe([text, "naïve café 😀 Ελληνικά"], 700)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_trained_bpe_round_trip(trained: BPETokenizer, text: str) -> None:
    ids = trained.encode_ordinary(text)
    assert all(0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_long_pieces_use_the_same_merge_order(trained: BPETokenizer) -> None:
    for text in ("e" * 500, " " * 1000 + "x", "the" * 200):
        trained._cache.clear()
        fast = trained.encode_ordinary(text)
        pieces = trained._findall(text)
        slow = [i for p in pieces for i in trained._merge_short(list(p.encode("utf-8")))]
        assert fast == slow


def test_bad_training_input(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="at least 257 tokens"):
        train_bpe("some text", 256)
    with pytest.raises(TokenizerError, match="at least 258 tokens"):
        train_bpe("some text", 100, special_tokens=[EOT, "<|pad|>"])
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_bpe("", 300)
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_bpe(["<|endoftext|>", "<|endoftext|><|endoftext|>"], 300)
    with pytest.raises(TokenizerError, match="must be str"):
        train_bpe([b"bytes"], 300)
    with pytest.raises(DataError, match="not found"):
        train_bpe([tmp_path / "missing.txt"], 300)


def test_non_utf8_corpus_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"first line\nsecond caf\xe9 line\n")
    for chunk_size in (1, 4, 1 << 20):
        with pytest.raises(DataError, match=r"byte offset 21 \(line 2, column 11") as e:
            train_bpe([path], 300, chunk_size=chunk_size)
        assert "encoding_errors='replace'" in str(e.value)
        assert "--encoding-errors replace" in command_line_message(e.value, {"--encoding-errors"})
    tok = train_bpe([path], 300, encoding_errors="replace")
    assert "caf\ufffd" in tok.decode(tok.encode("caf\ufffd"))


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_streaming_with_a_pattern_that_skips_text(tmp_path: Path, chunk_size: int) -> None:
    # r"\w+" drops spaces and punctuation, so pre-tokens do not tile the text.
    text = "alpha beta, gamma; alphabet betamax!! gamma-ray " * 20
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    whole = train_bpe(text, 300, pattern=r"\w+")
    streamed = train_bpe([path], 300, pattern=r"\w+", chunk_size=chunk_size)
    assert streamed.merges == whole.merges
    assert streamed.training_info == whole.training_info
    # Text the pattern skips is dropped: such a tokenizer is not lossless.
    assert whole.encode("alpha beta") == whole.encode("alpha") + whole.encode("beta")
    assert whole.decode(whole.encode("alpha beta")) == "alphabeta"


def test_pattern_with_capturing_groups_is_refused() -> None:
    with pytest.raises(TokenizerError, match=r"capturing groups; write them as \(\?:"):
        train_bpe("some text", 300, pattern=r"(\w+)")
