"""Continuous batching (scratchgpt.generation.slots): a sequence's tokens beside other sequences
equal its tokens alone, for every family, dtype and quantization, on random and trained weights;
and the property that makes it so: at a fixed shape, a row of a matmul does not depend on the
other rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.generation import SamplingConfig, generate, optimize_for_decoding
from scratchgpt.generation.slots import SlotDecoder, SlotRequest
from scratchgpt.model import build_model
from scratchgpt.model.quantize import Int8Linear, quantize_model
from scratchgpt.tokenizers import get_tokenizer

SLOTS = 8
TOK = get_tokenizer("gpt2")
VOCAB = 1024  # GPT-2's first 1024 ids: small models, fast steps; the tokenizer decodes them


def tiny(preset: str, context: int = 96, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = GPTConfig.from_preset(preset, vocab_size=VOCAB, context_length=context)
    return build_model(cfg).eval()


def requests(n: int = SLOTS, new_tokens: int = 12) -> list[SlotRequest]:
    """Prompts of different lengths (some longer than a prefill chunk), greedy and seeded
    sampling with different options, different lengths to generate."""
    out = []
    for i in range(n):
        prompt = [(i * 37 + j * 11) % VOCAB for j in range(2 + 6 * i)]
        sampling = SamplingConfig(
            temperature=0.0 if i % 2 else 0.9,
            top_k=None if i % 3 else 40,
            top_p=0.9 if i % 4 == 2 else None,
            seed=100 + i,
        )
        out.append(SlotRequest(prompt, new_tokens + 2 * i, sampling))
    return out


def decode_alone(model, request: SlotRequest, **kw) -> list[int | None]:
    dec = SlotDecoder(model, TOK, slots=SLOTS, prefill_chunk=8, **kw)
    dec.add(request)
    tokens = []
    while dec.busy:
        tokens += [e.token for e in dec.step()]
    return tokens


def decode_together(model, reqs: list[SlotRequest], every: int = 3) -> list[list[int | None]]:
    """All of ``reqs`` through one decoder, one joining every ``every`` steps (so they start at
    different times and prefill while others decode)."""
    dec = SlotDecoder(model, TOK, slots=SLOTS, prefill_chunk=8)
    got: list[list[int | None]] = [[] for _ in reqs]
    owner: dict[int, int] = {}
    waiting, step = list(range(len(reqs))), 0
    while waiting or dec.busy:
        if waiting and step % every == 0 and dec.free_slots:
            i = waiting.pop(0)
            owner[dec.add(reqs[i])] = i
        for e in dec.step():
            got[owner[e.slot]].append(e.token)
        step += 1
    return got


# ---------------------------------------------------------------------------------------------
# The kernel property the design rests on


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_rows_do_not_depend_on_other_rows_at_a_fixed_shape(dtype):
    torch.manual_seed(0)
    w = torch.randn(3 * 256, 256).to(dtype)
    x = torch.randn(SLOTS, 256).to(dtype)
    y = F.linear(x, w)
    for _ in range(3):
        other = torch.randn(SLOTS, 256).to(dtype) * 10
        for row in range(SLOTS):
            mixed = other.clone()
            mixed[row] = x[row]
            assert torch.equal(F.linear(mixed, w)[row], y[row])
    # The same values give the same result in any row (slots are handed out in any order).
    moved = torch.roll(x, 3, dims=0)
    assert torch.equal(torch.roll(F.linear(moved, w), -3, dims=0), y)
    # What a fixed shape avoids: a batch-1 product may be another kernel, rounded otherwise, so
    # no test asserts F.linear(x[:1], w) == y[:1].


def test_int8_matmul_rows_do_not_depend_on_other_rows():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(torch.nn.Linear(256, 512))
    x = torch.randn(SLOTS, 256)
    y = layer(x)
    other = torch.randn(SLOTS, 256) * 10
    for row in range(SLOTS):
        mixed = other.clone()
        mixed[row] = x[row]
        assert torch.equal(layer(mixed)[row], y[row])


# ---------------------------------------------------------------------------------------------
# Whole sequences


# gemma3-tiny: local layers with a window of 8, shorter than most prompts here.
@pytest.mark.parametrize("preset", ["tiny", "llama3-tiny", "qwen3-tiny", "gemma3-tiny"])
def test_each_sequence_beside_seven_others_equals_it_alone(preset):
    model = tiny(preset, context=128)
    optimize_for_decoding(model)
    reqs = requests()
    alone = [decode_alone(model, r) for r in reqs]
    assert decode_together(model, reqs) == alone
    assert decode_together(model, reqs[::-1], every=1) == alone[::-1]
    # Greedy decoding in slots gives what the plain loop gives (here; not promised bit for bit).
    greedy = reqs[1]
    want = generate(model, torch.tensor([greedy.prompt]), greedy.max_tokens)
    assert alone[1] == want[0, len(greedy.prompt) :].tolist()


def test_gpt2_mini_preset_too():
    # 'mini' is the GPT-2 family's preset with a real width (256); one mixed run is enough.
    model = optimize_for_decoding(tiny("mini", context=64))
    reqs = [SlotRequest(r.prompt[:20], 6, r.sampling) for r in requests()]
    assert decode_together(model, reqs) == [decode_alone(model, r) for r in reqs]


@pytest.mark.parametrize("kind", ["bf16", "int8", "int8-bf16"])
def test_bf16_and_int8_weights(kind):
    model = tiny("llama3-tiny", context=128, seed=3)
    if kind.startswith("int8"):
        quantize_model(model)
    if kind.endswith("bf16"):
        model = model.to(torch.bfloat16)
    optimize_for_decoding(model)
    reqs = requests(new_tokens=4)
    assert decode_together(model, reqs) == [decode_alone(model, r) for r in reqs]


def test_a_trained_model(tmp_path):
    """A model trained for a few steps on The Verdict (sharper, less uniform logits than random
    weights): the same property."""
    from scratchgpt.data.sources import load_text

    torch.manual_seed(0)
    cfg = GPTConfig.from_preset("tiny", vocab_size=VOCAB, context_length=64)
    model = build_model(cfg)
    ids = torch.tensor(TOK.encode(load_text("the-verdict"))[:2048]) % VOCAB
    windows = ids[: (len(ids) - 1) // 32 * 32 + 1]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        start = torch.randint(0, len(windows) - 33, (8,))
        x = torch.stack([windows[s : s + 32] for s in start])
        y = torch.stack([windows[s + 1 : s + 33] for s in start])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 6.0  # it learned something (uniform: ln 1024 = 6.9)
    model.eval()
    optimize_for_decoding(model)
    texts = ("I had always", "Gisburn", "The", "It was not that")
    prompts = [[t % VOCAB for t in TOK.encode(text)] for text in texts]
    reqs = [
        SlotRequest(p, 10 + i, SamplingConfig(temperature=0.0 if i % 2 else 0.8, seed=i))
        for i, p in enumerate(prompts * 2)
    ]
    assert decode_together(model, reqs, every=2) == [decode_alone(model, r) for r in reqs]


# ---------------------------------------------------------------------------------------------
# Slots


def test_short_prompts_that_arrive_together_start_in_one_step_and_long_ones_in_chunks():
    """Each step prefills the joining sequences' next chunks, first come first served, while
    they fit in one chunk's budget: three 3-token prompts start together (budget 8), a 20-token
    prompt takes one 8-token chunk per step, cut from its own prompt."""
    model = tiny("tiny", context=64)
    dec = SlotDecoder(model, TOK, slots=4, prefill_chunk=8)
    short = [dec.add(SlotRequest([i + 1, i + 2, i + 3], 4)) for i in range(2)]
    first = dec.step()  # two short prompts (6 tokens): both prefilled, each samples a token
    assert sorted(e.slot for e in first) == short
    long = dec.add(SlotRequest(list(range(1, 21)), 4))
    late = dec.add(SlotRequest([7, 8, 9], 4))
    lengths = []
    for _ in range(3):
        dec.step()
        lengths.append(
            (dec.active[long].length, dec.active[late].length if late in dec.active else None)
        )
    # The long prompt's chunks are 8, 8, 4 tokens; the late short one waits while the long
    # one's chunk fills the budget, then is prefilled in the step where the last 4 leave room.
    assert lengths == [(8, 0), (16, 0), (20, 3)]


def test_slots_free_at_once_and_are_reused():
    model = tiny("tiny", context=64)
    dec = SlotDecoder(model, TOK, slots=2, prefill_chunk=4)
    a = dec.add(SlotRequest([1, 2, 3], 2))
    b = dec.add(SlotRequest([4] * 10, 5))
    assert (a, b) == (0, 1) and dec.free_slots == 0
    with pytest.raises(ConfigError, match="slots are in use"):
        dec.add(SlotRequest([1], 1))
    finished = []
    while a not in finished:
        finished += [e.slot for e in dec.step() if e.finish_reason]
    assert dec.free_slots == 1 and dec.add(SlotRequest([5], 1)) == a
    dec.remove(b)  # cancelled: free now
    assert dec.free_slots == 1 and b not in dec.active
    with pytest.raises(ConfigError, match="need 70 positions"):
        dec.add(SlotRequest([1] * 60, 11))


def test_end_of_text_stop_strings_and_length():
    model = tiny("tiny", context=64)
    base = SlotRequest([t % VOCAB for t in TOK.encode("Hello there")], 12)
    tokens = decode_alone(model, base)
    text = TOK.decode(tokens)
    dec = SlotDecoder(model, TOK, slots=2)
    # The second token as end-of-text: generation stops before it, with reason "stop".
    eos = SlotRequest(base.prompt, 12, eos_ids=(tokens[1],))
    stop = SlotRequest(base.prompt, 12, stops=(text[3:6],))
    slots = {dec.add(eos): "eos", dec.add(stop): "stop"}
    pieces: dict[str, list[str]] = {"eos": [], "stop": []}
    ends = {}
    while dec.busy:
        for e in dec.step():
            pieces[slots[e.slot]].append(e.piece)
            if e.finish_reason:
                ends[slots[e.slot]] = (e.finish_reason, e.new_tokens)
    assert ends["eos"] == ("stop", 1) and "".join(pieces["eos"]) == TOK.decode(tokens[:1])
    assert "".join(pieces["stop"]) == text[: text.find(text[3:6])]
    assert ends["stop"][0] == "stop"
