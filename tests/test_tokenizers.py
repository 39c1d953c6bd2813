"""Tokenizers: golden values from the book, special-token rules, save/load, bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.assets import asset_path
from scratchgpt.errors import DataError, TokenizerError, command_line_message
from scratchgpt.tokenizers import (
    EOT,
    BPETokenizer,
    CharTokenizer,
    SimpleTokenizer,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
    tiktoken_gpt2_encoding,
    train_bpe,
)

GOLDEN_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
GOLDEN_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
              286, 617, 34680, 27271, 13]  # fmt: skip
BACKENDS = ["tiktoken", "scratch"]


@pytest.fixture(scope="module")
def verdict() -> str:
    return asset_path("the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def simple(verdict: str) -> SimpleTokenizer:
    return get_tokenizer("simple", corpus=verdict)


@pytest.fixture(scope="module")
def small_bpe(verdict: str) -> BPETokenizer:
    return train_bpe(verdict, 400)


def all_tokenizers(verdict: str, small_bpe: BPETokenizer) -> list[Tokenizer]:
    return [
        get_tokenizer("gpt2"),
        get_tokenizer("gpt2", backend="scratch"),
        small_bpe,
        get_tokenizer("char", corpus=verdict),
        get_tokenizer("simple", corpus=verdict),
    ]


# --- GPT-2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpt2_golden_encoding(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    ids = tok.encode(GOLDEN_TEXT, allowed_special={EOT})
    assert ids == GOLDEN_IDS
    assert tok.decode(ids) == GOLDEN_TEXT
    assert tok.vocab_size == 50257
    assert tok.eot_id == 50256
    assert tok.special_tokens == {EOT: 50256}


def test_gpt2_backends_share_the_raw_tiktoken_encoding() -> None:
    raw = tiktoken_gpt2_encoding()
    assert raw.encode(GOLDEN_TEXT, allowed_special={EOT}) == GOLDEN_IDS
    assert raw.n_vocab == 50257
    assert get_tokenizer("gpt2").to_config() == {"name": "gpt2", "backend": "tiktoken"}
    assert get_tokenizer("gpt2", backend="scratch").to_config()["backend"] == "scratch"


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpt2_vocabulary_lookups(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    assert tok.token_to_id("Ġthe") == 262
    assert tok.id_to_token(262) == "Ġthe"
    assert tok.token_to_id(EOT) == 50256
    assert tok.decode_bytes([262]) == b" the"
    # "é" is two tokens-worth of bytes in some contexts; one lone continuation byte decodes raw.
    ids = tok.encode_ordinary("héllo 🦙")
    assert b"".join(tok.decode_bytes([i]) for i in ids) == "héllo 🦙".encode()
    with pytest.raises(TokenizerError, match="not in GPT-2's vocabulary"):
        tok.token_to_id("nope nope")


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_token_rules_match_tiktoken(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    raw = tiktoken_gpt2_encoding()
    text = "a<|endoftext|>b <|endoftext|>"
    for kwargs in (
        {"allowed_special": "all"},
        {"allowed_special": {EOT}},
        {"disallowed_special": ()},
        {"allowed_special": set(), "disallowed_special": set()},
    ):
        assert tok.encode(text, **kwargs) == raw.encode(text, **kwargs), kwargs
    assert tok.encode_ordinary(text) == raw.encode_ordinary(text)
    assert 50256 not in tok.encode_ordinary(text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_disallowed_special_token_is_a_clear_error(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    with pytest.raises(TokenizerError) as e:
        tok.encode("line one\nsay <|endoftext|> here")
    msg = str(e.value)
    assert "'<|endoftext|>'" in msg and "character 13" in msg and "line 2" in msg
    assert "allowed_special" in msg and "--allow-special" not in msg
    assert "--allow-special" in command_line_message(e.value, {"--allow-special"})
    # Explicitly disallowed wins even when also allowed, as in tiktoken.
    with pytest.raises(TokenizerError):
        tok.encode(EOT, allowed_special={EOT}, disallowed_special={EOT})


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_special_arguments(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    with pytest.raises(TokenizerError, match="does not have"):
        tok.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(TokenizerError, match=r"expected .all. or a set"):
        tok.encode("x", allowed_special=EOT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_rejects_unknown_ids(backend: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    for bad in ([50257], [1, -1], [10**12]):
        with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
            tok.decode(bad)


def test_gpt2_custom_files_and_bad_files(tmp_path) -> None:
    enc = asset_path("gpt2/encoder.json")
    vocab = asset_path("gpt2/vocab.bpe")
    tok = get_tokenizer("gpt2", backend="scratch", encoder_path=enc, vocab_path=vocab)
    assert tok.encode(GOLDEN_TEXT, allowed_special="all") == GOLDEN_IDS
    broken = tmp_path / "vocab.bpe"
    lines = vocab.read_text(encoding="utf-8").split("\n")
    lines[5] = "three parts here"
    broken.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"line 6: expected two tokens"):
        get_tokenizer("gpt2", encoder_path=enc, vocab_path=broken)
    missing = tmp_path / "nothing.json"
    with pytest.raises(DataError, match="not found"):
        get_tokenizer("gpt2", encoder_path=missing, vocab_path=vocab)
    with pytest.raises(TokenizerError, match="both"):
        get_tokenizer("gpt2", encoder_path=enc)
    with pytest.raises(TokenizerError, match="unknown gpt2 backend"):
        get_tokenizer("gpt2", backend="rust")


# --- simple (book listing 2.4) ------------------------------------------------------------------


def test_simple_vocabulary_of_the_verdict(simple: SimpleTokenizer) -> None:
    assert simple.vocab_size == 1132  # 1,130 words + <|endoftext|> + <|unk|>
    assert simple.special_tokens == {EOT: 1130, "<|unk|>": 1131}
    assert simple.eot_id == 1130


def test_simple_book_v2_example(simple: SimpleTokenizer) -> None:
    text = " <|endoftext|> ".join(
        ("Hello, do you like tea?", "In the sunlit terraces of the palace.")
    )
    ids = simple.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert simple.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    )


def test_simple_special_token_choices(simple: SimpleTokenizer) -> None:
    # Book behaviour by default; tiktoken's rules on request; ordinary text -> an unknown word.
    assert simple.encode("tea?<|endoftext|>In")[-2] == 1130
    with pytest.raises(TokenizerError, match="special token"):
        simple.encode("tea <|endoftext|>", allowed_special=set())
    assert simple.encode_ordinary("tea <|endoftext|>") == [simple.token_to_id("tea"), 1131]
    assert (
        simple.encode("tea <|endoftext|>", disallowed_special=(), allowed_special=set())[-1] == 1131
    )


def test_simple_errors_and_vocab_input() -> None:
    tok = get_tokenizer("simple", vocab={"a": 0, "b": 1})
    assert tok.encode("b a") == [1, 0]
    with pytest.raises(TokenizerError, match="'c' is not in the vocabulary"):
        tok.encode("a c")
    with pytest.raises(TokenizerError, match=r"0\.\.N-1"):
        SimpleTokenizer({"a": 0, "b": 5})
    with pytest.raises(TokenizerError, match="no words"):
        get_tokenizer("simple", corpus="  \n ")
    with pytest.raises(TokenizerError, match="exactly one"):
        get_tokenizer("simple")
    with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
        tok.decode([7])


# --- char ---------------------------------------------------------------------------------------


def test_char_tokenizer(verdict: str) -> None:
    tok = get_tokenizer("char", corpus=verdict)
    assert tok.chars == sorted(set(verdict))
    assert tok.vocab_size == len(set(verdict)) + 1
    assert tok.eot_id == len(set(verdict))
    assert tok.decode(tok.encode(verdict[:500])) == verdict[:500]
    ids = tok.encode("I had<|endoftext|>", allowed_special="all")
    assert ids[-1] == tok.eot_id and len(ids) == 6
    with pytest.raises(TokenizerError, match=r"'é' \(U\+00E9 LATIN SMALL LETTER E WITH ACUTE\) at "
                       r"position 3 \(line 1\).*unk=True"):  # fmt: skip
        tok.encode("caf\u00e9")
    with pytest.raises(TokenizerError, match="special token"):
        tok.encode("x<|endoftext|>")
    unk = get_tokenizer("char", corpus="abc", unk=True, special_tokens=())
    assert unk.encode("abz") == [0, 1, 3] and unk.special_tokens == {"<|unk|>": 3}
    assert unk.decode([0, 3]) == "a<|unk|>"
    with pytest.raises(TokenizerError, match="empty"):
        get_tokenizer("char", corpus="")
    with pytest.raises(TokenizerError, match="one character"):
        CharTokenizer(["ab"])


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab\n é🦙\t\r'", max_size=60))
def test_char_round_trip_on_its_alphabet(text: str) -> None:
    tok = CharTokenizer(list("ab\n é🦙\t\r'"))
    assert tok.decode(tok.encode(text)) == text


# --- interface-wide ------------------------------------------------------------------------------


def test_every_tokenizer_saves_and_loads(tmp_path, verdict: str, small_bpe: BPETokenizer) -> None:
    sample = verdict[1000:1600] + " <|endoftext|> x"
    for tok in all_tokenizers(verdict, small_bpe):
        path = tok.save(tmp_path / f"{tok.name}-{getattr(tok, 'backend', '')}.json")
        loaded = load_tokenizer(path)
        assert type(loaded) is type(tok) and loaded.name == tok.name
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.special_tokens == tok.special_tokens
        assert loaded.to_config() == tok.to_config()
        ids = tok.encode(sample, allowed_special="all")
        assert loaded.encode(sample, allowed_special="all") == ids
        assert loaded.decode(ids) == tok.decode(ids)
        json.dumps(tok.to_config())


def test_get_tokenizer_rejects_bad_names_and_options() -> None:
    with pytest.raises(TokenizerError, match="unknown tokenizer 'wordpiece'"):
        get_tokenizer("wordpiece")
    with pytest.raises(TokenizerError, match=r"does not take option\(s\) \['vocab_size'\]"):
        get_tokenizer("simple", vocab_size=10)
    with pytest.raises(TokenizerError, match="needs path"):
        get_tokenizer("bpe")


def test_saved_gpt2_with_custom_files_embeds_them(tmp_path) -> None:
    enc, vocab = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    enc.write_bytes(asset_path("gpt2/encoder.json").read_bytes())
    vocab.write_bytes(asset_path("gpt2/vocab.bpe").read_bytes())
    tok = get_tokenizer("gpt2", encoder_path=enc, vocab_path=vocab)
    assert tok.to_config()["encoder_path"] == str(enc)
    path = tok.save(tmp_path / "gpt2.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["files"] == "embedded" and len(data["encoder"]) == 50257
    loaded = load_tokenizer(path)
    assert loaded.encode(GOLDEN_TEXT, allowed_special="all") == GOLDEN_IDS


def _write(tmp_path, name: str, data) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data), encoding="utf-8")
    return str(p)


def test_corrupt_saved_files_give_clear_errors(tmp_path, small_bpe: BPETokenizer) -> None:
    good = json.loads(small_bpe.save(tmp_path / "good.json").read_text(encoding="utf-8"))
    cases = {
        "version": ({**good, "version": 7}, r"field 'version' is 7.*reads version 1"),
        "nomerges": ({k: v for k, v in good.items() if k != "merges"}, "field 'merges' is missing"),
        "format": ({**good, "format": "other"}, "field 'format'"),
        "type": ({**good, "type": "wordpiece"}, "field 'type' is 'wordpiece'"),
        "hex": ({**good, "merges": [["zz", "61"]]}, r"field 'merges', entry 0"),
        "order": ({**good, "merges": [["6161", "61"]]}, "not a token made by an earlier merge"),
        "specials": ({**good, "special_tokens": {EOT: 3}}, "field 'special_tokens'"),
        "pattern": ({**good, "pattern": "(["}, "invalid pre-tokenizer pattern"),
        "simple": ({"format": good["format"], "type": "simple", "version": 1}, "field 'vocab'"),
        "gpt2": ({"format": good["format"], "type": "gpt2", "version": 1}, "field 'files'"),
    }
    for name, (data, pattern) in cases.items():
        path = _write(tmp_path, f"{name}.json", data)
        with pytest.raises(TokenizerError, match=pattern) as e:
            load_tokenizer(path)
        assert str(e.value).startswith(path), name
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": ', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_tokenizer(bad_json)
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(b'{"type": "caf\xe9"}')
    with pytest.raises(DataError, match="byte offset 13"):
        load_tokenizer(not_utf8)


def test_bpe_vocabulary_lookups(small_bpe: BPETokenizer) -> None:
    tok = small_bpe
    assert tok.vocab_size == 400 and tok.eot_id == 399
    assert tok.id_to_token(ord("a")) == "a" and tok.id_to_token(32) == "Ġ"
    some = tok.merges[0][2]
    assert tok.token_to_id(tok.id_to_token(some)) == some
    assert tok.id_to_token(399) == EOT and tok.token_to_id(EOT) == 399
    assert tok.to_config() == {"name": "bpe", "vocab_size": 400}


def test_decode_accepts_numpy_and_torch_integers(verdict: str, small_bpe: BPETokenizer) -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    for tok in all_tokenizers(verdict, small_bpe):
        ids = tok.encode("I had always thought")
        expected = tok.decode(ids)
        assert tok.decode(np.array(ids)) == expected, tok
        assert tok.decode(torch.tensor(ids)) == expected, tok
        with pytest.raises(TokenizerError, match="position 1"):
            tok.decode([ids[0], 1.5])
