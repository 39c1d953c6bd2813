"""HFTokenizer against transformers' AutoTokenizer (the oracle), on folders built offline.

tests/hf_fixtures.py trains tiny byte-level BPEs laid out like Llama 3.x's and Qwen3's
tokenizer.json (their pre-tokenizer regexes, special tokens, Llama's BOS post-processor, Qwen's
NFC normalizer and non-special added tokens) and writes their configs.
"""

from __future__ import annotations

import json
import pickle
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_fixtures import (
    MODEL_VOCAB_SIZE,
    QWEN3_TEST_TEMPLATE,
    write_llama3_tokenizer,
    write_qwen3_tokenizer,
)
from scratchgpt.errors import TokenizerError
from scratchgpt.tokenizers import (
    HFTokenizer,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)

transformers = pytest.importorskip("transformers")

FAMILIES = ("llama3", "qwen3")
WRITERS = {"llama3": write_llama3_tokenizer, "qwen3": write_qwen3_tokenizer}

TEXTS = [
    "",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nand   runs     of spaces",
    "Numbers 1234567890 and 3.14159, 2024-07-26.",
    "I'm sure they'd agree; we'LL SEE, it's FINE.",
    "Unicode: héllo wörld, naïve café, 日本語のテキスト, Привет мир",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ∀x∈ℝ",
    "Special <|eot_id|> and <|im_end|> and <|endoftext|><|begin_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|im_start|>assistant\n<think>\nhmm\n</think>\n\nyes<|im_end|>",
    "almost special: <|eot_id| <|im_end <|endoftext|x",
    "def f(x):\n    return x ** 2  # square\n",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for family, write in WRITERS.items():
        out[family] = root / family
        write(out[family])
    return out


@pytest.fixture(scope="module")
def pairs(folders):
    """(ours, transformers') tokenizer per family."""
    return {
        f: (HFTokenizer.from_folder(p), transformers.AutoTokenizer.from_pretrained(p))
        for f, p in folders.items()
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_equal_transformers(pairs, family):
    ours, oracle = pairs[family]
    for text in TEXTS:
        # Special tokens allowed: transformers' default (minus BOS, which it adds itself).
        want = oracle.encode(text, add_special_tokens=False)
        assert ours.encode(text, allowed_special="all") == want, text
        # The generic path (cut at special tokens, encode the pieces) agrees with the library's.
        assert Tokenizer.encode(ours, text, allowed_special="all") == want, text
        # Special-token strings as plain text.
        plain = oracle.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert ours.encode_ordinary(text) == plain, text
        assert ours.encode(text, disallowed_special=()) == plain, text


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_follow_the_tiktoken_rules(pairs, family):
    ours, _ = pairs[family]
    eos = ours.eos_token
    with pytest.raises(TokenizerError, match="special token"):
        ours.encode(f"hi {eos}")
    assert ours.encode(f"hi {eos}", allowed_special={eos})[-1] == ours.token_to_id(eos)
    assert ours.token_to_id(eos) not in ours.encode_ordinary(f"hi {eos}")
    with pytest.raises(TokenizerError, match="does not have"):
        ours.encode("x", allowed_special={"<|not_a_token|>"})


def test_fixture_ids_fit_tiny_models(pairs):
    for ours, oracle in pairs.values():
        assert ours.vocab_size == len(oracle) <= MODEL_VOCAB_SIZE


def test_special_tokens_of_each_family(pairs):
    llama, _ = pairs["llama3"]
    qwen, _ = pairs["qwen3"]
    ll = llama.token_to_id
    assert set(llama.special_tokens) >= {"<|begin_of_text|>", "<|eot_id|>", "<|eom_id|>"}
    assert llama.eot_id == ll("<|end_of_text|>")
    assert llama.stop_ids == [ll("<|eot_id|>"), ll("<|end_of_text|>"), ll("<|eom_id|>")]
    assert llama.bos_ids == [ll("<|begin_of_text|>")]
    assert llama.bos_token == "<|begin_of_text|>" and llama.eos_token == "<|eot_id|>"
    assert llama.pad_id is None
    q = qwen.token_to_id
    assert set(qwen.special_tokens) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
    assert "<think>" not in qwen.special_tokens  # added, but not special
    assert qwen.eot_id == q("<|endoftext|>")
    assert qwen.stop_ids == [q("<|im_end|>"), q("<|endoftext|>")]
    assert qwen.bos_ids == [] and qwen.bos_token is None
    assert qwen.pad_id == q("<|endoftext|>")


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_ids_are_what_transformers_prepends(pairs, family):
    ours, oracle = pairs[family]
    for text in ("hello", "", "<|im_end|>"):
        full = oracle(text)["input_ids"]
        plain = oracle(text, add_special_tokens=False)["input_ids"]
        assert full == ours.bos_ids + plain


@pytest.mark.parametrize(
    ("family", "extra", "bos"),
    [
        ("llama3", {"add_bos_token": False}, True),
        ("qwen3", {"add_bos_token": True, "bos_token": "<|endoftext|>"}, False),
    ],
)
def test_the_post_processor_decides_bos_as_in_transformers(tmp_path, family, extra, bos):
    # transformers 5 keeps tokenizer.json's post-processor whatever add_bos_token says.
    WRITERS[family](tmp_path, config_extra=extra)
    ours = HFTokenizer.from_folder(tmp_path)
    oracle = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert bool(ours.bos_ids) is bos
    assert oracle("hi")["input_ids"] == ours.bos_ids + ours.encode("hi")


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_round_trip_and_transformers_decode(pairs, family):
    ours, oracle = pairs[family]
    for text in TEXTS:
        ids = ours.encode(text, allowed_special="all")
        expected = unicodedata.normalize("NFC", text) if family == "qwen3" else text
        assert ours.decode(ids) == expected
        assert ours.decode(ids) == oracle.decode(ids, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_bytes_streams_multibyte_characters(pairs, family):
    ours, _ = pairs[family]
    text = "Emoji 😀🚀 and 日本語 <|im_end|>"
    ids = ours.encode(text, allowed_special="all")
    pieces = [ours.decode_bytes([i]) for i in ids]
    assert b"".join(pieces) == ours.decode_bytes(ids) == text.encode("utf-8")
    # The tiny vocabulary splits the emoji across tokens: single tokens are not valid UTF-8.
    assert any(_invalid_utf8(p) for p in pieces)
    partial = next(i for i, p in zip(ids, pieces) if _invalid_utf8(p))
    assert "\ufffd" in ours.decode([partial])


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_bad_ids_are_a_clear_error(pairs):
    ours, _ = pairs["qwen3"]
    with pytest.raises(TokenizerError, match=r"token id 100000 at position 1"):
        ours.decode([1, 100000])
    with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
        ours.decode_bytes([-1])
    with pytest.raises(TokenizerError, match="not a token"):
        ours.token_to_id("<|nope|>")
    assert ours.id_to_token(ours.token_to_id("<|im_end|>")) == "<|im_end|>"


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_through_our_format(pairs, tmp_path, family):
    ours, _ = pairs[family]
    path = ours.save(tmp_path / "tokenizer.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "scratchgpt-tokenizer" and data["type"] == "hf"
    again = load_tokenizer(path)
    assert isinstance(again, HFTokenizer)
    assert again.to_dict() == ours.to_dict()
    for attr in ("stop_ids", "bos_ids", "eot_id", "pad_id", "special_tokens", "chat_template"):
        assert getattr(again, attr) == getattr(ours, attr)
    for text in TEXTS:
        assert again.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")
    assert tokenizer_from_dict({**data}).vocab_size == ours.vocab_size


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_loads_in_transformers(pairs, tmp_path, family):
    ours, oracle = pairs[family]
    ours.save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert loaded(text)["input_ids"] == oracle(text)["input_ids"], text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    assert loaded.apply_chat_template(messages, tokenize=False) == oracle.apply_chat_template(
        messages, tokenize=False
    )
    back = HFTokenizer.from_folder(tmp_path)
    assert back.bos_ids == ours.bos_ids and back.eos_token == ours.eos_token
    assert back.pad_id == ours.pad_id and back.chat_template == ours.chat_template


def test_pickled_tokenizer_still_encodes_specials_as_text(pairs):
    # Worker processes get a pickled copy; the backend alone would forget encode_special_tokens.
    ours, _ = pairs["qwen3"]
    ours.render_chat([{"role": "user", "content": "x"}])  # compiles the template
    ours.decode_bytes([1])  # builds the byte table
    copy = pickle.loads(pickle.dumps(ours))
    for text in TEXTS:
        assert copy.encode_ordinary(text) == ours.encode_ordinary(text)
        assert copy.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")
    messages = [{"role": "user", "content": "x"}]
    assert copy.render_chat(messages) == ours.render_chat(messages)


def test_a_tokenizer_without_byte_level_decoder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = HFTokenizer(backend.to_str(), source="wordlevel")
    ids = tok.encode("hello world")
    assert ids == [0, 1]
    assert tok.decode_bytes(ids) == tok.decode(ids).encode() == backend.decode(ids).encode()


def test_get_tokenizer_by_name(folders):
    tok = get_tokenizer("hf", path=folders["qwen3"])
    assert isinstance(tok, HFTokenizer) and tok.name == "hf"
    assert tok.to_config() == {"name": "hf", "vocab_size": tok.vocab_size, "source": tok.source}
    # A path to the tokenizer.json itself names the same folder.
    assert get_tokenizer("hf", path=folders["qwen3"] / "tokenizer.json").to_dict() == tok.to_dict()
    with pytest.raises(TokenizerError, match="needs path=FOLDER"):
        get_tokenizer("hf")


def test_load_tokenizer_reads_hugging_face_files(folders, tmp_path):
    folder = folders["llama3"]
    by_folder = load_tokenizer(folder)
    assert isinstance(by_folder, HFTokenizer) and by_folder.stop_ids
    assert load_tokenizer(folder / "tokenizer.json").to_dict() == by_folder.to_dict()
    # A tokenizer.json under another name has no configs next to it: ids only.
    copy = tmp_path / "llama-tokenizer.json"
    copy.write_bytes((folder / "tokenizer.json").read_bytes())
    bare = load_tokenizer(copy)
    assert bare.encode("hello world") == by_folder.encode("hello world")
    assert bare.eos_token is None and bare.chat_template is None


def test_chat_template_sources(tmp_path):
    write_qwen3_tokenizer(tmp_path, chat_template=[{"name": "default", "template": "{{ 'A' }}"}])
    assert HFTokenizer.from_folder(tmp_path).chat_template == "{{ 'A' }}"
    # chat_template.jinja (newer transformers) wins over tokenizer_config.json's.
    (tmp_path / "chat_template.jinja").write_text("{{ 'B' }}", encoding="utf-8")
    tok = HFTokenizer.from_folder(tmp_path)
    assert tok.render_chat([{"role": "user", "content": "x"}]) == "B"
    oracle = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert oracle.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "B"


def test_no_chat_template_is_a_clear_error(tmp_path):
    write_llama3_tokenizer(tmp_path, chat_template=None)
    tok = HFTokenizer.from_folder(tmp_path)
    assert tok.chat_template is None
    with pytest.raises(TokenizerError, match=r"no chat template.*family_template"):
        tok.render_chat([{"role": "user", "content": "x"}])
    tok.chat_template = QWEN3_TEST_TEMPLATE
    assert tok.render_chat([{"role": "user", "content": "x"}]).endswith("assistant\n")


def test_without_generation_config(tmp_path):
    write_llama3_tokenizer(tmp_path, generation_config=False)
    tok = HFTokenizer.from_folder(tmp_path)
    # The eos_token and the known end tokens remain.
    ids = tok.token_to_id
    assert tok.stop_ids == [ids("<|eot_id|>"), ids("<|eom_id|>"), ids("<|end_of_text|>")]


def test_config_can_flag_an_added_token_special(tmp_path):
    write_qwen3_tokenizer(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    think = next(k for k, v in config["added_tokens_decoder"].items() if v["content"] == "<think>")
    config["added_tokens_decoder"][think]["special"] = True
    config_path.write_text(json.dumps(config), encoding="utf-8")
    tok = HFTokenizer.from_folder(tmp_path)
    assert "<think>" in tok.special_tokens
    oracle = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "a <think> b"
    assert tok.encode(text, allowed_special="all") == oracle.encode(text, add_special_tokens=False)
    assert tok.encode_ordinary(text) == oracle.encode(
        text, add_special_tokens=False, split_special_tokens=True
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, r"not a folder"),
        (lambda p: p.mkdir(), r"no tokenizer.json"),
        (lambda p: _files(p, tokenizer="{not json"), r"tokenizer.json: invalid JSON at line 1"),
        (lambda p: _files(p, tokenizer='{"model": {"type": "Nope"}}'), r"not a valid tokenizer"),
        (lambda p: _files(p, tokenizer="[1, 2]"), r"expected a JSON object"),
        (lambda p: _files(p, config={"eos_token": 5}), r"field 'eos_token' is 5"),
        (lambda p: _files(p, config={"eos_token": "<|x|>"}), r"eos_token '<\|x\|>' is not in"),
        (lambda p: _files(p, config={"pad_token": ["x"]}), r"field 'pad_token'"),
        (lambda p: _files(p, config={"chat_template": 3}), r"field 'chat_template'"),
        (lambda p: _files(p, generation={"eos_token_id": "x"}), r"field 'eos_token_id'"),
    ],
)
def test_folder_errors_name_the_file_and_field(tmp_path, setup, message):
    folder = tmp_path / "model"
    setup(folder)
    with pytest.raises(TokenizerError, match=message) as info:
        HFTokenizer.from_folder(folder)
    assert str(folder) in str(info.value)
    assert "\n" not in str(info.value)


def _files(folder: Path, tokenizer: str | None = None, config=None, generation=None) -> None:
    write_qwen3_tokenizer(folder)
    if tokenizer is not None:
        (folder / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")


def test_base_tokenizers_have_stop_and_bos_ids():
    gpt2 = get_tokenizer("gpt2")
    assert gpt2.stop_ids == [50256] and gpt2.bos_ids == []
    char = get_tokenizer("char", chars=["a", "b"], special_tokens=())
    assert char.stop_ids == [] and char.bos_ids == []


PIECES = st.sampled_from(
    ["<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<think>", "<|", "|>", " ", "\n", "  ", "'s"]
)
CHARS = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: not encodable
TEXT = st.lists(st.one_of(st.text(CHARS, max_size=12), PIECES), max_size=8).map("".join)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=60, deadline=None)
@given(text=TEXT)
def test_property_ids_equal_transformers(pairs, family, text):
    ours, oracle = pairs[family]
    want = oracle.encode(text, add_special_tokens=False)
    assert ours.encode(text, allowed_special="all") == want
    assert Tokenizer.encode(ours, text, allowed_special="all") == want
    plain = ours.encode_ordinary(text)
    assert plain == oracle.encode(text, add_special_tokens=False, split_special_tokens=True)
    expected = unicodedata.normalize("NFC", text) if family == "qwen3" else text
    assert ours.decode_bytes(plain) == expected.encode("utf-8")
