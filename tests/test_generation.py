"""Generation: the book's loop, sampling, KV-cache exactness, batching, stops, streaming, errors."""

from __future__ import annotations

import contextlib
import itertools
import warnings

import pytest
import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError, DataError, ScratchGPTError
from scratchgpt.generation import (
    ContextSlideWarning,
    SamplingConfig,
    generate,
    generate_text,
    optimize_for_decoding,
    sample_next_token,
    stream_generate,
)
from scratchgpt.generation.stops import StopMatcher
from scratchgpt.model import GPTModel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine an OpenMP team
    waiting for a descheduled thread makes small ops many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def make_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig.from_preset("tiny", **overrides)).eval()


# "tiny" (2 layers, 4 heads) and a 3-layer model with an odd number of heads (3) and a short
# context, each with both attention implementations.
CONFIGS = {
    "tiny-sdpa": dict(attention="sdpa"),
    "tiny-explicit": dict(attention="explicit"),
    "odd-sdpa": dict(
        n_layers=3, n_heads=3, emb_dim=24, context_length=16, qkv_bias=True, attention="sdpa"
    ),
    "odd-explicit": dict(
        n_layers=3, n_heads=3, emb_dim=24, context_length=16, qkv_bias=True, attention="explicit"
    ),
}


def book_generate(model, idx, max_new_tokens, context_size):
    """The book's uncached greedy loop, written out (reference)."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        idx = torch.cat((idx, logits.argmax(dim=-1, keepdim=True)), dim=1)
    return idx


class ByteTokenizer:
    """Stand-in tokenizer: ids 0..255 are bytes, 256 is <|endoftext|>, others decode as '<id>'."""

    eot_id = 256

    def encode(self, text, allowed_special=frozenset()):
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids):
        out = b""
        for i in ids:
            out += bytes([i]) if i < 256 else (b"<|endoftext|>" if i == 256 else f"<{i}>".encode())
        return out

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class ChainModel(nn.Module):
    """A model whose next token depends only on the last one (a lookup table): generation
    follows a script, which lets tests place multi-byte characters, stops and eos exactly."""

    def __init__(self, table: dict[int, int], vocab_size: int = 300) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        nxt = torch.zeros(vocab_size, dtype=torch.long)
        for a, b in table.items():
            nxt[a] = b
        self.register_buffer("nxt", nxt)
        self.vocab_size = vocab_size

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.vocab_size)
        logits[:, -1].scatter_(1, self.nxt[idx[:, -1]][:, None], 10.0)
        return logits


def chain(text: str, eos: bool = False) -> ChainModel:
    """A ChainModel that, after the prompt byte b'>', writes ``text`` byte by byte (every byte
    must be distinct so the table is a function), then <|endoftext|> if ``eos``."""
    data = b">" + text.encode("utf-8")
    assert len(set(data)) == len(data), "chain bytes must be distinct"
    table = dict(itertools.pairwise(data))
    table[data[-1]] = 256 if eos else data[-1]
    return ChainModel(table)


# --------------------------------------------------------------------------------------------
# The book's behaviour
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_small():
    torch.manual_seed(123)
    return GPTModel(GPTConfig.from_preset("gpt2-small", attention="explicit")).eval()


BOOK_PROMPT = [15496, 11, 314, 716]  # "Hello, I am"
BOOK_CONTINUATION = [27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062, 34657]


@pytest.mark.parametrize("use_cache", [True, False])
def test_book_golden_continuation(gpt2_small, use_cache):
    out = generate(
        gpt2_small, torch.tensor([BOOK_PROMPT]), 10, context_size=1024, use_cache=use_cache
    )
    assert out.shape == (1, 14)
    assert out[0].tolist() == BOOK_PROMPT + BOOK_CONTINUATION


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_book_loop_across_context_overflow(name):
    model = make_model(1, **CONFIGS[name])
    ctx = model.cfg.context_length
    idx = torch.randint(0, 50257, (2, ctx - 5), generator=torch.Generator().manual_seed(2))
    expected = book_generate(model, idx, 12, ctx)
    assert torch.equal(generate(model, idx, 12), expected)


def book_sample(model, idx, max_new_tokens, context_size, temperature, top_k=None):
    """Section 5.3's ``generate``, written out (reference): top-k by the k-th logit, then
    temperature, softmax and ``torch.multinomial`` on the global RNG."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            logits = torch.where(logits < top_logits[:, -1], torch.tensor(float("-inf")), logits)
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    return idx


@pytest.mark.parametrize("top_k", [None, 25])
@pytest.mark.parametrize("use_cache", [True, False])
def test_sampling_after_manual_seed_is_the_books(top_k, use_cache):
    """Section 5.3: after ``torch.manual_seed(123)`` the same model samples the same tokens as the
    book's ``generate(..., temperature=1.4, top_k=25)``, past the context window too."""
    model = make_model(3, context_length=16)
    idx = torch.randint(0, 50257, (1, 6), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(123)
    expected = book_sample(model, idx, 15, 16, temperature=1.4, top_k=top_k)
    torch.manual_seed(123)
    with pytest.warns(ContextSlideWarning) if use_cache else contextlib.nullcontext():
        out = generate(model, idx, 15, temperature=1.4, top_k=top_k, use_cache=use_cache)
    assert torch.equal(out, expected)


def test_max_new_tokens_zero_returns_prompt():
    model = make_model()
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(generate(model, idx, 0), idx)


# --------------------------------------------------------------------------------------------
# KV cache: token-for-token identical to the uncached loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=0.0), dict(temperature=1.3, top_k=40, top_p=0.9, seed=7)],
    ids=["greedy", "sampled"],
)
def test_cache_equals_no_cache(name, sampling):
    model = make_model(3, **CONFIGS[name])
    ctx = model.cfg.context_length
    idx = torch.randint(0, 50257, (2, 6), generator=torch.Generator().manual_seed(4))
    # Runs past the context window: the cached path must switch to sliding exactly.
    n = ctx + 4
    cached = generate(model, idx, n, use_cache=True, **sampling)
    uncached = generate(model, idx, n, use_cache=False, **sampling)
    assert cached.shape == (2, 6 + n)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("context_size", [5, 8])
def test_cache_equals_no_cache_with_smaller_context_size(context_size):
    model = make_model(5, **CONFIGS["odd-sdpa"])
    idx = torch.tensor([[5, 6, 7]])
    a = generate(model, idx, 10, context_size=context_size, use_cache=True)
    b = generate(model, idx, 10, context_size=context_size, use_cache=False)
    assert torch.equal(a, b)
    assert torch.equal(a, book_generate(model, idx, 10, context_size))


def test_long_prompt_warns_and_keeps_full_prompt():
    model = make_model(6, **CONFIGS["odd-explicit"])  # context 16
    idx = torch.randint(0, 50257, (1, 20), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"20 tokens.*context size of 16"):
        out = generate(model, idx, 4)
    assert torch.equal(out[:, :20], idx)
    assert torch.equal(out, book_generate(model, idx, 4, 16))


# --------------------------------------------------------------------------------------------
# Batches of different lengths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("use_cache", [True, False])
def test_ragged_batch_equals_single_sequences(name, use_cache):
    model = make_model(8, **CONFIGS[name])
    g = torch.Generator().manual_seed(9)
    prompts = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (7, 2, 4)]
    n_new = model.cfg.context_length - 3  # the longest row overflows the window, the others not
    out = generate(model, prompts, n_new, use_cache=use_cache)
    width = 7 + n_new
    assert out.shape == (3, width)
    for row, p in zip(out, prompts):
        single = generate(model, torch.tensor([p]), n_new, use_cache=use_cache)[0]
        pad = width - len(single)
        assert row[:pad].tolist() == [0] * pad  # left padding with the default pad_id 0
        assert torch.equal(row[pad:], single)


def test_padded_tensor_with_attention_mask_equals_list():
    model = make_model(10)
    prompts = [[11, 12, 13, 14], [21, 22]]
    ids = torch.tensor([[11, 12, 13, 14], [99, 99, 21, 22]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    a = generate(model, ids, 8, attention_mask=mask)
    b = generate(model, prompts, 8, pad_id=99)
    assert torch.equal(a, b)


def test_eos_stops_each_row_and_pads():
    model = make_model(11)
    prompts = [[1, 2, 3], [4, 5], [6]]
    free = generate(model, prompts, 12)  # no eos: see what each row writes
    gen = free[:, 3:]
    eos = int(gen[0, 4])  # row 0 produces it at its 5th step
    out = generate(model, prompts, 12, eos_id=eos, pad_id=7)
    kept = []
    for row in gen.tolist():
        kept.append(row[: row.index(eos)] if eos in row else row)
    width = max(len(k) for k in kept)
    assert out.shape == (3, 3 + width)
    for b, k in enumerate(kept):
        assert out[b, 3 : 3 + len(k)].tolist() == k
        assert out[b, 3 + len(k) :].tolist() == [7] * (width - len(k))


def test_eos_not_appended_batch_one():
    tok = ByteTokenizer()
    model = chain("ab", eos=True)
    out = generate(model, [tok.encode(">")], 10, context_size=50, eos_id=256)
    assert out[0].tolist() == list(b">ab")  # stops before the end-of-text token, as the book


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_seed_reproducible_and_generator_equivalent():
    model = make_model(12)
    idx = torch.tensor([[1, 2, 3]])
    kw = dict(temperature=1.5, top_k=100)
    a = generate(model, idx, 15, seed=5, **kw)
    assert torch.equal(a, generate(model, idx, 15, seed=5, **kw))
    assert not torch.equal(a, generate(model, idx, 15, seed=6, **kw))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(a, generate(model, idx, 15, generator=g, **kw))
    # Without seed or generator, torch's global RNG is used, as in the book.
    torch.manual_seed(123)
    b = generate(model, idx, 15, **kw)
    torch.manual_seed(123)
    assert torch.equal(b, generate(model, idx, 15, **kw))


def test_sampling_config_equals_keyword_options():
    model = make_model(12)
    idx = torch.tensor([[1, 2, 3]])
    options = SamplingConfig(temperature=1.5, top_k=100, top_p=0.9, seed=5)
    a = generate(model, idx, 15, sampling=options)
    assert torch.equal(a, generate(model, idx, 15, temperature=1.5, top_k=100, top_p=0.9, seed=5))
    with pytest.raises(ConfigError, match="not both"):
        generate(model, idx, 15, temperature=1.0, sampling=options)
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_sample_greedy_is_argmax_and_top_k_one():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next_token(logits), logits.argmax(-1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(sample_next_token(logits, 5.0, top_k=1, generator=g), logits.argmax(-1))
    assert torch.equal(sample_next_token(logits, 5.0, top_p=1e-6, generator=g), logits.argmax(-1))


def test_top_k_restricts_support():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next_token(logits, 10.0, top_k=2, generator=g)
    assert set(picks.tolist()) == {1, 3}


@pytest.mark.parametrize(
    ("top_p", "support"),
    [(0.5, {0}), (0.51, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p, support):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None].repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next_token(logits, 1.0, top_p=top_p, generator=g)
    assert set(picks.tolist()) == support


def test_top_p_renormalises_kept_tokens():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None].repeat(20000, 1)
    picks = sample_next_token(logits, 1.0, top_p=0.8, generator=torch.Generator().manual_seed(3))
    share0 = (picks == 0).float().mean().item()
    assert abs(share0 - 0.5 / 0.8) < 0.02


def test_temperature_applied_after_top_k():
    # After top-k keeps logits {2, 0}, temperature 0.5 doubles their gap: p0 = 1/(1+e^-4).
    logits = torch.tensor([[2.0, 0.0, -5.0]]).repeat(20000, 1)
    picks = sample_next_token(logits, 0.5, top_k=2, generator=torch.Generator().manual_seed(4))
    expected = 1 / (1 + torch.exp(torch.tensor(-4.0))).item()
    assert abs((picks == 0).float().mean().item() - expected) < 0.01
    assert 2 not in picks.tolist()


# --------------------------------------------------------------------------------------------
# Stop strings, text helpers, streaming
# --------------------------------------------------------------------------------------------


def test_stop_string_tokens_end_at_completing_token_and_text_is_cut():
    tok = ByteTokenizer()
    model = chain("hi. THEN")
    out = generate(
        model, [tok.encode(">")], 20, context_size=64, stop_strings=["i."], tokenizer=tok
    )
    assert bytes(out[0].tolist()) == b">hi."
    text = generate_text(model, tok, ">", 20, context_size=64, stop_strings=["i."])
    assert text == "h"
    assert "".join(stream_generate(model, tok, ">", 20, context_size=64, stop_strings="i.")) == "h"


def test_stop_matcher_finds_strings_across_pieces_in_text_and_bytes():
    text = StopMatcher(["ab", "xyz"])
    assert [text.push(p) for p in ["x", "a", "by", "z", "ab"]] == [False, False, True, False, True]
    assert text.cut("12xyz3ab") == ("12", True) and text.cut("123") == ("123", False)
    assert text.held_back("12xy") == 2 and text.held_back("12a") == 1 and text.held_back("1") == 0
    raw = StopMatcher(["é".encode()])  # a stop string split inside one character
    assert [raw.push(b) for b in (b"\xc3", b"\xa9")] == [False, True]


def test_stop_strings_per_row_in_a_batch():
    tok = ByteTokenizer()
    model = chain("abcdefg")
    texts = generate_text(model, tok, [">", "c"], 10, context_size=64, stop_strings=["e", "c"])
    # Row 0 meets "c" first; row 1's continuation starts at "d" and meets "e".
    assert texts == ["ab", "d"]


def test_text_helpers_stop_at_end_of_text_by_default():
    tok = ByteTokenizer()
    model = chain("done", eos=True)
    assert generate_text(model, tok, ">", 20, context_size=64) == "done"
    assert generate_text(model, tok, ">", 6, context_size=64, eos_id=None).startswith("done<|endo")


def test_stream_emits_multibyte_characters_whole():
    tok = ByteTokenizer()
    model = chain("aé€😀z")  # 1 + 2 + 3 + 4 + 1 bytes, one byte per token
    pieces = list(stream_generate(model, tok, ">", 11, context_size=64))
    assert pieces == ["a", "é", "€", "😀", "z"]
    assert "".join(pieces) == generate_text(model, tok, ">", 11, context_size=64)


def test_stream_holds_back_possible_stop_prefix():
    tok = ByteTokenizer()
    model = chain("xEND? yes")
    # "EN" could start "ENDS": held back; "D?" shows it did not, so it is released.
    pieces = list(stream_generate(model, tok, ">", 9, context_size=64, stop_strings=["ENDS"]))
    assert "".join(pieces) == "xEND? yes"
    assert pieces[:2] == ["x", "END?"]
    assert "".join(pieces) == generate_text(
        model, tok, ">", 9, context_size=64, stop_strings="ENDS"
    )


def test_stream_equals_generate_text_on_gpt_model():
    tok = ByteTokenizer()
    model = make_model(13)
    kw = dict(temperature=1.0, top_k=300, seed=3, stop_strings=["<5"])
    text = generate_text(model, tok, "Hi é", 30, **kw)
    assert "".join(stream_generate(model, tok, "Hi é", 30, **kw)) == text
    assert (
        text
        == tok.decode_bytes(
            generate(model, [tok.encode("Hi é")], 30, tokenizer=tok, eos_id=256, **kw)[
                0, 5:
            ].tolist()
        )
        .decode("utf-8", errors="replace")
        .split("<5")[0]
    )


def test_stream_reports_token_count_and_finish_reason():
    tok = ByteTokenizer()
    model = make_model(13)
    prompt = tok.encode("Hi")
    full = generate(model, [prompt], 12, eos_id=None)[0, len(prompt) :].tolist()
    # Token ids work as the prompt too; running out of tokens is "length".
    stream = stream_generate(model, tok, prompt, 12, eos_id=None)
    text = "".join(stream)
    assert (stream.new_tokens, stream.finish_reason) == (12, "length")
    assert text == tok.decode_bytes(full).decode("utf-8", errors="replace")
    # A stop string inside the continuation ends it early, as "stop".
    stop = text[3:5]
    stream = stream_generate(model, tok, prompt, 12, eos_id=None, stop_strings=[stop])
    assert "".join(stream) == text[: text.find(stop)]
    assert stream.finish_reason == "stop" and stream.new_tokens < 12


def test_stream_restores_grad_mode_between_pieces():
    model = make_model(14)
    model.train()
    tok = ByteTokenizer()
    for _ in stream_generate(model, tok, "ab", 3, eos_id=None):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert model.training


def test_generate_restores_training_flag_and_returns_normal_tensor():
    model = make_model(15, drop_rate=0.5)
    model.train()
    idx = torch.tensor([[1, 2]])
    a = generate(model, idx, 5)
    assert model.training
    assert not a.is_inference() and a.dtype == torch.long
    # Dropout was off during generation: the result is deterministic.
    assert torch.equal(a, generate(model, idx, 5))
    # The output can feed a model under autograd (inference tensors could not).
    model(a).sum().backward()


def test_foreign_model_needs_context_size():
    tok = ByteTokenizer()
    model = chain("ab")
    with pytest.raises(ConfigError, match="context_size"):
        generate(model, [tok.encode(">")], 2)
    with pytest.raises(ConfigError, match="GPTModel"):
        generate(model, [[1, 2], [1]], 2, context_size=8)


def test_optimize_for_decoding_keeps_values_and_ties():
    model = make_model(16, tie_weights=True, qkv_bias=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        logits = model(idx)
    expected = generate(model, idx, 10)
    params = list(model.parameters())
    assert optimize_for_decoding(model) is model
    assert model.out_head.weight is model.tok_emb.weight  # still tied
    assert not model.trf_blocks[0].att.W_query.weight.is_contiguous()
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.allclose(model(idx), logits, atol=1e-5)
    assert torch.equal(generate(model, idx, 10), expected)
    bf16 = make_model(16).to(torch.bfloat16)
    optimize_for_decoding(bf16)
    assert bf16.out_head.weight.is_contiguous()  # bf16 kernels prefer the default layout


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(max_new_tokens=-1), ConfigError, "max_new_tokens"),
        (dict(temperature=-0.5), ConfigError, "temperature"),
        (dict(temperature=float("nan")), ConfigError, "temperature"),
        (dict(top_k=0), ConfigError, "top_k"),
        (dict(top_p=0.0), ConfigError, "top_p"),
        (dict(top_p=1.5), ConfigError, "top_p"),
        (dict(seed=1, generator=torch.Generator()), ConfigError, "seed or generator"),
        (dict(stop_strings=["x"]), ConfigError, "tokenizer"),
        (dict(stop_strings=[""], tokenizer=ByteTokenizer()), ConfigError, "non-empty"),
        (dict(context_size=65), ConfigError, "context_length 64"),
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), DataError, "empty prompt"),
        (dict(idx=[]), DataError, "empty prompt"),
        (dict(idx=[[1, 2], []]), DataError, "sequence 1 has no tokens"),
        (dict(idx=torch.tensor([1, 2])), DataError, "unsqueeze"),
        (dict(idx=torch.tensor([[1.0, 2.0]])), DataError, "integer"),
        (dict(idx=[[1, 50257]]), DataError, "token id 50257.*position 1.*50257 ids"),
        (dict(idx=torch.tensor([[3, -2]])), DataError, "token id -2"),
        (
            dict(idx=torch.tensor([[1, 2]]), attention_mask=torch.tensor([[1, 0]])),
            DataError,
            "left padding",
        ),
    ],
)
def test_bad_input(kwargs, error, match):
    model = make_model()
    args = dict(idx=torch.tensor([[1, 2, 3]]), max_new_tokens=2)
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        generate(model, **args)
    assert isinstance(info.value, ScratchGPTError)


def test_bad_text_prompts():
    model, tok = make_model(), ByteTokenizer()
    with pytest.raises(DataError, match="empty prompt"):
        generate_text(model, tok, "", 2)
    with pytest.raises(DataError, match=r"prompt 1"):
        generate_text(model, tok, ["a", ""], 2)
    with pytest.raises(DataError, match="empty prompt"):
        stream_generate(model, tok, "", 2)  # raised at the call, before iterating
    with pytest.raises(ConfigError, match="top_p"):
        stream_generate(model, tok, "a", 2, top_p=2.0)


def test_no_warning_for_prompt_within_context():
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(model, torch.tensor([[1] * 64]), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_cache_equals_no_cache(dtype):
    model = make_model(17, **CONFIGS["odd-sdpa"]).to("cuda", dtype)
    prompts = [[1, 2, 3, 4, 5], [6, 7]]
    for sampling in (dict(), dict(temperature=1.0, top_p=0.9, seed=3)):
        a = generate(model, prompts, 20, use_cache=True, **sampling)
        b = generate(model, prompts, 20, use_cache=False, **sampling)
        assert a.device.type == "cuda" and a.shape == (2, 25)
        if dtype == torch.float32:  # bf16 rounding differs between the two paths' shapes
            assert torch.equal(a, b)
