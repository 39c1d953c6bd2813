"""The pure-Python GPT-2 backend gives exactly tiktoken's ids, on a large and varied corpus."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.assets import asset_path
from scratchgpt.tokenizers import get_tokenizer, tiktoken_gpt2_encoding

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, isn't it? We'll see; they'd agree, I'm sure.",
    "IT'S LOUD. We'LL Go. They'VE left. You'Re late. She'D know. I'M here. It'S fine.",
    "don't   won't\tcan't\n\nshouldn't''ve 'tis 'TWAS rock'n'roll o'clock ''",
    "Prices: $3.50, €12,000.99, ¥1e6 - 50% off!!! Call 555-0199 or +44 (0)20 7946 0958.",
    "Ünïcödé façade naïve résumé coöperate São Paulo Łódź Øresund Ærøskøbing Ğ İstanbul",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "نص عربي مع أرقام ١٢٣ وعلامات، وترقيم؟",
    "עברית עם ניקוד: שָׁלוֹם עוֹלָם",
    "हिन्दी में लिखा गया वाक्य, संख्या १२३४।",
    "中文文本，包括标点符号。日本語のテキスト、カタカナとひらがな。",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "한국어 문장도 포함됩니다. 안녕하세요!",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏿‍🚀 ❤️ 🇫🇷🇯🇵 1️⃣ 🫠",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑ᵢ aᵢ ≠ ∞ — ½ ⅓ ¼ Ⅻ ⑩",
    "Zero\u200bwidth\u200cjoiner\u200d and nbsp\u00a0here, thin\u2009space, ideographic\u3000space",
    "Combining: e\u0301 a\u0308 n\u0303 Z\u0335\u0353a\u0337\u0354l\u0338g\u0336o",
]
CODE = [
    'def f(x: int) -> int:\n    """Doc."""\n    return x ** 2  # square\n',
    'int main(void) {\r\n\tprintf("%d\\n", 42);\r\n\treturn 0;\r\n}\r\n',
    "const add = (a, b) => a + b; // JS\nconsole.log(`${add(1, 2)}`);\n",
    'fn main() { let v: Vec<u8> = vec![0xFF, 0b1010]; println!("{:?}", v); }',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    '<div class="x"><a href="https://example.com/?q=1&r=2">link</a></div>',
    '{"key": [1, 2.5, -3e-4, null, true], "nested": {"a": "b"}}',
    "    if (x) {\n        y();\n    }\n\n\n        \n",
]
SPACES = [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \t ", "\u3000", "        ", "\n \n"]
AROUND_EOT = [
    "<|endoftext|>",
    "end.<|endoftext|>Start",
    " <|endoftext|> ",
    "<|endoftext|><|endoftext|>",
]


def make_corpus(seed: int = 0, pieces: int = 6000) -> str:
    """Mixed prose, code, scripts, emoji, whitespace runs, numbers and special tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(pieces):
        kind = rng.random()
        if kind < 0.4:
            s = rng.choice(PROSE)
            if rng.random() < 0.3:
                s = s.upper() if rng.random() < 0.5 else s.swapcase()
        elif kind < 0.6:
            s = rng.choice(CODE)
        elif kind < 0.75:
            s = str(rng.randint(0, 10 ** rng.randint(1, 15)))
        elif kind < 0.85:
            s = rng.choice(AROUND_EOT)
        else:
            s = "".join(rng.choice(PROSE)[rng.randint(0, 10) :][: rng.randint(1, 12)] for _ in "ab")
        out.append(s)
        out.append(rng.choice(SPACES))
    return "".join(out)


@pytest.fixture(scope="module")
def pair():
    return get_tokenizer("gpt2", backend="scratch"), tiktoken_gpt2_encoding()


def test_scratch_equals_tiktoken_on_mixed_corpus(pair) -> None:
    scratch, raw = pair
    corpus = make_corpus()
    assert len(corpus) > 200_000
    assert scratch.encode(corpus, allowed_special="all") == raw.encode(
        corpus, allowed_special="all"
    )
    assert scratch.encode_ordinary(corpus) == raw.encode_ordinary(corpus)
    # Slices start and end anywhere: inside words, whitespace runs, emoji sequences, CRLF.
    rng = random.Random(1)
    for _ in range(300):
        i = rng.randrange(len(corpus))
        piece = corpus[i : i + rng.randint(1, 80)]
        assert scratch.encode_ordinary(piece) == raw.encode_ordinary(piece), repr(piece)


def test_scratch_equals_tiktoken_on_the_verdict(pair) -> None:
    scratch, raw = pair
    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    ids = scratch.encode(text)
    assert ids == raw.encode(text)
    assert len(ids) == 5145  # the book's count for The Verdict (chapter 2.6)


def test_scratch_equals_tiktoken_on_long_pieces(pair) -> None:
    # Long pre-tokens use the heap merge; it must agree with the simple loop and tiktoken.
    scratch, raw = pair
    for text in (" " * 5000 + "x", "a" * 3000, "ab" * 1500, "🦙" * 400, "0123456789" * 300):
        assert scratch.encode_ordinary(text) == raw.encode_ordinary(text)


def test_lone_surrogates_are_replaced_like_tiktoken(pair) -> None:
    scratch, raw = pair
    text = "a\ud800b \udfff"
    assert scratch.encode_ordinary(text) == raw.encode_ordinary(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_scratch_equals_tiktoken_on_random_text(pair, text: str) -> None:
    scratch, raw = pair
    assert scratch.encode_ordinary(text) == raw.encode_ordinary(text)


TRICKY = st.text(
    alphabet=st.sampled_from(list(" \t\n\r\u00a0\u3000'sdmtlvrSDMTLVRe0123456789.,!é😀\u200d🏽中")),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_scratch_equals_tiktoken_on_tricky_text(pair, text: str) -> None:
    scratch, raw = pair
    assert scratch.encode_ordinary(text) == raw.encode_ordinary(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
@pytest.mark.parametrize("backend", ["tiktoken", "scratch"])
def test_gpt2_round_trip(backend: str, text: str) -> None:
    tok = get_tokenizer("gpt2", backend=backend)
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode_bytes(tok.encode_ordinary(text)) == text.encode("utf-8")
