"""A Gemma 3 tokenizer folder through HFTokenizer, against transformers' AutoTokenizer (the oracle).

tests/hf_fixtures.py writes the folder offline: a tiny SentencePiece-style BPE with byte fallback
("▁" for spaces, <0xNN> pieces for characters outside the vocabulary), Gemma's control tokens at
Gemma 3's ids, <bos> before every text, the image placeholder one past the vocabulary, Gemma 3's
own chat template, generation_config.json's [<eos>, <end_of_turn>]. transformers loads it as a
``GemmaTokenizer`` (its class rebuilds the pipeline from the vocabulary and merges, so the files
and the class must agree).
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_fixtures import CORPUS, MODEL_VOCAB_SIZE, write_gemma3_tokenizer, write_qwen3_tokenizer
from scratchgpt.data.chat_style import CHAT_STYLE
from scratchgpt.data.instructions import InstructionDataset, get_prompt_style
from scratchgpt.errors import CheckpointError, ConfigError, TokenizerError
from scratchgpt.generation import generate_text, stream_generate
from scratchgpt.tasks.instruct.loading import resolve_prompt_style
from scratchgpt.tokenizers import HFTokenizer, Tokenizer
from scratchgpt.tokenizers.chat import GEMMA_TEMPLATE
from scratchgpt.weights.native import check_vocab

transformers = pytest.importorskip("transformers")

TEXTS = [
    *CORPUS,
    "",
    " ",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nand   runs     of spaces",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ∀x∈ℝ, Ελληνικά, עברית",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "control tokens in text: <bos><eos><pad><unk><mask>",
    "added but not special: <unused0> [@BOS@] <unused98>",
    "byte pieces as text: <0x41> <0xF0>",
    "almost special: <start_of_turn <end_of_turn| <bos",
]

# Conversations Gemma's template accepts (roles alternate after an optional system message).
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello there!"}],
    "system+user": [
        {"role": "system", "content": "You are a helpful assistant.  "},
        {"role": "user", "content": "  What is 2+2? "},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, in 日本語 😀?"},
        {"role": "assistant", "content": "赤 (red)."},
        {"role": "user", "content": "Thanks\nbye"},
    ],
    "ends-with-assistant": [
        {"role": "user", "content": "Say <b>hi</b> & 'bye'"},
        {"role": "assistant", "content": " hi & bye\n"},
    ],
    "text-parts": [
        {"role": "user", "content": [{"type": "text", "text": " Hi "}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gemma3")
    write_gemma3_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def pair(folder):
    """(ours, transformers') tokenizer of the Gemma 3 folder."""
    return HFTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)


def test_transformers_reads_the_folder_as_gemma(pair):
    _, oracle = pair
    assert type(oracle).__name__ == "GemmaTokenizer"


def test_ids_equal_transformers(pair):
    ours, oracle = pair
    for text in TEXTS:
        want = oracle.encode(text, add_special_tokens=False)
        assert ours.encode(text, allowed_special="all") == want, text
        assert Tokenizer.encode(ours, text, allowed_special="all") == want, text
        plain = oracle.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert ours.encode_ordinary(text) == plain, text


def test_rare_characters_fall_back_to_bytes(pair):
    ours, _ = pair
    ids = ours.encode_ordinary("😀")
    assert [ours.id_to_token(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    # Spaces are "▁" in the vocabulary; a plain text never meets <unk>.
    assert ours.id_to_token(ours.encode_ordinary(" ")[0]) == "▁"
    assert all(ours.token_to_id("<unk>") not in ours.encode_ordinary(t) for t in TEXTS)


def test_special_tokens_at_gemma_ids(pair):
    ours, oracle = pair
    ids = ours.token_to_id
    assert [ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert ids("<start_of_turn>") == 105 and ids("<end_of_turn>") == 106
    assert set(ours.special_tokens) == {
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<mask>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
    }
    assert "<unused0>" not in ours.special_tokens  # added, matched in text, not special
    assert ours.bos_token == "<bos>" and ours.eos_token == "<eos>" and ours.pad_token == "<pad>"
    for token in ("<start_of_image>", "<end_of_image>"):
        assert ids(token) == oracle.convert_tokens_to_ids(token) < MODEL_VOCAB_SIZE


def test_the_image_placeholder_beyond_the_vocabulary_is_left_out(pair, tmp_path):
    # transformers keeps <image_soft_token> one past the embedding rows (its processor swaps it
    # for image embeddings); a text model has no row for it, so our tokenizer leaves it out.
    ours, oracle = pair
    assert oracle.convert_tokens_to_ids("<image_soft_token>") == MODEL_VOCAB_SIZE
    assert len(oracle) == MODEL_VOCAB_SIZE + 1
    assert ours.vocab_size == MODEL_VOCAB_SIZE
    assert "<image_soft_token>" not in ours.special_tokens
    with pytest.raises(TokenizerError, match="not a token"):
        ours.token_to_id("<image_soft_token>")
    text = "a <image_soft_token> b"
    plain = oracle.encode(text, add_special_tokens=False, split_special_tokens=True)
    assert ours.encode(text, allowed_special="all") == ours.encode_ordinary(text) == plain
    assert max(plain) < MODEL_VOCAB_SIZE
    # Saved and reloaded (ours or transformers), the tokenizer stays at the model's size.
    again = HFTokenizer.from_dict(ours.to_dict())
    assert again.vocab_size == MODEL_VOCAB_SIZE
    ours.save_pretrained(tmp_path / "saved")
    assert len(transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")) == MODEL_VOCAB_SIZE
    # A folder that does not name it as its image token keeps it, as transformers does.
    unnamed = {"image_token": None, "extra_special_tokens": {}}
    write_gemma3_tokenizer(tmp_path / "unnamed", config_extra=unnamed)
    kept = HFTokenizer.from_folder(tmp_path / "unnamed")
    assert kept.token_to_id("<image_soft_token>") == MODEL_VOCAB_SIZE
    assert kept.vocab_size == MODEL_VOCAB_SIZE + 1
    # Loading checks a folder's tokenizer against the model's rows: ours fits, that one not.
    check_vocab(MODEL_VOCAB_SIZE, ours, "gemma3")
    with pytest.raises(CheckpointError, match="smaller than the tokenizer's vocabulary"):
        check_vocab(MODEL_VOCAB_SIZE, kept, "gemma3")


def test_bos_stop_and_pad_ids(pair):
    ours, oracle = pair
    assert ours.bos_ids == [2]
    for text in ("hello", "", "<start_of_turn>"):
        assert oracle(text)["input_ids"] == ours.bos_ids + ours.encode(text, allowed_special="all")
    # generation_config.json's [<eos>, <end_of_turn>]: a turn ends with <end_of_turn>.
    assert ours.stop_ids == [1, 106]
    assert ours.pad_id == 0 == oracle.pad_token_id
    assert ours.eot_id == 1


def test_stop_ids_without_generation_config(tmp_path):
    write_gemma3_tokenizer(tmp_path, generation_config=False)
    # <end_of_turn> is a known end token: a chat stops at it without generation_config.json.
    assert HFTokenizer.from_folder(tmp_path).stop_ids == [1, 106]


def test_decode_equals_transformers(pair):
    ours, oracle = pair
    for text in TEXTS:
        ids = ours.encode(text, allowed_special="all")
        assert ours.decode(ids) == text
        assert ours.decode(ids) == oracle.decode(ids, clean_up_tokenization_spaces=False)
        assert ours.decode_bytes(ids) == text.encode("utf-8")


def test_decode_bytes_streams_characters_split_into_byte_pieces(pair):
    ours, oracle = pair
    text = "Emoji 😀🚀 and 日本語 <end_of_turn>"
    ids = ours.encode(text, allowed_special="all")
    pieces = [ours.decode_bytes([i]) for i in ids]
    assert b"".join(pieces) == ours.decode_bytes(ids) == text.encode("utf-8")
    partial = [i for i, p in zip(ids, pieces) if _invalid_utf8(p)]
    assert len(partial) >= 4  # the emoji's bytes, one token each
    # Decoded alone, a byte piece is U+FFFD, as in transformers.
    assert ours.decode(partial[:1]) == oracle.decode(partial[:1]) == "\ufffd"
    assert ours.decode_bytes([ours.token_to_id("▁")]) == b" "


class ScriptedModel(torch.nn.Module):
    """Next token = a lookup of the last one: generation writes a fixed token sequence."""

    def __init__(self, script: list[int], vocab_size: int = MODEL_VOCAB_SIZE) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        assert len(set(script[:-1])) == len(script) - 1, "script tokens must be distinct"
        nxt = torch.zeros(vocab_size, dtype=torch.long)
        for a, b in itertools.pairwise(script):
            nxt[a] = b
        self.register_buffer("nxt", nxt)
        self.vocab_size = vocab_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, self.vocab_size)
        logits[:, -1].scatter_(1, self.nxt[idx[:, -1]][:, None], 10.0)
        return logits


def test_generation_streams_byte_pieces_as_whole_characters_and_stops_at_end_of_turn(pair):
    ours, _ = pair
    prompt = "<start_of_turn>model\n"
    prompt_ids = ours.encode(prompt, allowed_special="all")
    reply = ours.encode("Hi 😀!", allowed_special="all")
    assert sum(ours.id_to_token(i).startswith("<0x") for i in reply) == 4  # the emoji's bytes
    end_of_turn = ours.token_to_id("<end_of_turn>")
    model = ScriptedModel([prompt_ids[-1], *reply, end_of_turn]).eval()
    # A text prompt gets <bos> in front; the reply stops at <end_of_turn> (a stop id).
    stream = stream_generate(model, ours, prompt, 20, context_size=64)
    pieces = list(stream)
    assert "".join(pieces) == "Hi 😀!" == generate_text(model, ours, prompt, 20, context_size=64)
    assert "😀" in pieces and not any("\ufffd" in p for p in pieces)
    assert stream.finish_reason == "stop" and stream.new_tokens == len(reply)


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_template_renders_and_tokenizes_as_transformers(pair, name):
    ours, oracle = pair
    messages = CONVERSATIONS[name]
    for add in (True, False):
        want = oracle.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
        assert ours.render_chat(messages, add_generation_prompt=add) == want
        ids = oracle.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add, return_dict=False
        )
        assert ours.encode_chat(messages, add_generation_prompt=add) == ids
        assert ids[:1] == [2]  # one <bos>, written by the template


def test_chat_format(pair):
    ours, _ = pair
    assert ours.render_chat(CONVERSATIONS["system+user"]) == (
        "<bos><start_of_turn>user\nYou are a helpful assistant.  \n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "assistant", "content": "a"}],
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": "a system message in a user's place"},
        ],
    ],
)
def test_roles_that_do_not_alternate_are_refused(pair, messages):
    ours, oracle = pair
    with pytest.raises(TokenizerError, match="roles must alternate"):
        ours.render_chat(messages)
    with pytest.raises(Exception, match="roles must alternate"):
        oracle.apply_chat_template(messages, tokenize=False)


def test_training_example_splits_at_the_model_turn(pair):
    ours, oracle = pair
    messages = CONVERSATIONS["multi-turn"][:-1]
    prompt, response = ours.chat.render_example(messages)
    assert prompt == oracle.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<start_of_turn>model\n")
    assert response == "赤 (red).<end_of_turn>\n"


@pytest.mark.parametrize("style", ["chat", "auto"])
def test_a_folder_without_template_fine_tunes_with_the_bundled_one(pair, tmp_path, style):
    ours, _ = pair
    write_gemma3_tokenizer(tmp_path, chat_template=None)
    bare = HFTokenizer.from_folder(tmp_path)
    assert bare.chat_template is None
    assert resolve_prompt_style(style, bare, "gemma3") == CHAT_STYLE
    assert bare.chat_template is GEMMA_TEMPLATE
    # What the bundled template renders is what Gemma 3's own renders, prompts and examples.
    for name, messages in CONVERSATIONS.items():
        if name == "text-parts":  # OpenAI's content parts: flattened to text before rendering
            continue
        for add in (True, False):
            assert bare.render_chat(messages, add_generation_prompt=add) == ours.render_chat(
                messages, add_generation_prompt=add
            ), name
        if messages[-1]["role"] == "assistant":
            assert bare.chat.render_example(messages) == ours.chat.render_example(messages)


def test_the_bundled_template_needs_gemma_control_tokens(tmp_path):
    write_qwen3_tokenizer(tmp_path, chat_template=None)
    qwen = HFTokenizer.from_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"gemma3's format needs the special tokens.*start_of"):
        resolve_prompt_style("chat", qwen, "gemma3")


def test_instruction_examples_train_on_the_model_turn(pair):
    # Instruction fine-tuning masks the prompt (up to "<start_of_turn>model\n") and trains on
    # the answer and its <end_of_turn>, the token generation then stops at.
    ours, _ = pair
    record = {"instruction": "Name a colour.", "input": "In French", "output": "Bleu."}
    style = get_prompt_style(CHAT_STYLE, ours)
    ids, prompt_length = InstructionDataset([record], ours, style)[0]
    prompt = style.prompt(record)
    assert prompt == (
        "<bos><start_of_turn>user\nName a colour.\n\nIn French<end_of_turn>\n<start_of_turn>model\n"
    )
    assert ids[:prompt_length] == ours.encode(prompt, allowed_special="all")
    assert ours.decode(ids[prompt_length:]) == "Bleu.<end_of_turn>\n"
    assert ours.token_to_id("<end_of_turn>") in ours.stop_ids
    assert ids.count(ours.token_to_id("<bos>")) == 1


def test_save_pretrained_loads_in_transformers(pair, tmp_path):
    ours, oracle = pair
    ours.save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert loaded(text)["input_ids"] == oracle(text)["input_ids"], text
        assert loaded.decode(oracle.encode(text)) == oracle.decode(oracle.encode(text))
    messages = CONVERSATIONS["multi-turn"]
    assert loaded.apply_chat_template(messages, tokenize=False) == oracle.apply_chat_template(
        messages, tokenize=False
    )
    back = HFTokenizer.from_folder(tmp_path)
    assert back.to_dict()["tokenizer"] == ours.to_dict()["tokenizer"]
    assert back.bos_ids == [2] and back.pad_id == 0 and back.chat_template == ours.chat_template


def test_pickled_copy_decodes_bytes_and_renders(pair):
    ours, _ = pair
    ours.decode_bytes([1])  # builds the byte table, which is not pickled
    copy = pickle.loads(pickle.dumps(ours))
    for text in TEXTS:
        ids = ours.encode(text, allowed_special="all")
        assert copy.encode(text, allowed_special="all") == ids
        assert copy.decode_bytes(ids) == ours.decode_bytes(ids)
    messages = CONVERSATIONS["multi-turn"]
    assert copy.render_chat(messages) == ours.render_chat(messages)


PIECES = st.sampled_from(
    ["<start_of_turn>", "<end_of_turn>", "<bos>", "<unused7>", "<0x41>", "▁", " ", "  ", "\n"]
)
CHARS = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: not encodable
TEXT = st.lists(st.one_of(st.text(CHARS, max_size=12), PIECES), max_size=8).map("".join)


@settings(max_examples=80, deadline=None)
@given(text=TEXT)
def test_property_ids_and_bytes_equal_transformers(pair, text):
    ours, oracle = pair
    assert ours.encode(text, allowed_special="all") == oracle.encode(text, add_special_tokens=False)
    plain = ours.encode_ordinary(text)
    assert plain == oracle.encode(text, add_special_tokens=False, split_special_tokens=True)
    # SentencePiece's one loss: a "▁" written in the text decodes as the space it stands for.
    assert ours.decode(plain) == oracle.decode(plain) == text.replace("▁", " ")
    assert b"".join(ours.decode_bytes([i]) for i in plain) == ours.decode(plain).encode("utf-8")
