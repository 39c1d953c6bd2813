"""Byte-level byte-pair encoding (BPE) from scratch: the encoder, training, save and load.

One encoder class, :class:`BPETokenizer`, serves both the tokenizers trained here (name "bpe")
and the pure-Python backend of the GPT-2 encoding (:mod:`scratchgpt.tokenizers.gpt2` loads the
GPT-2 files into it). How it works (book chapter 2.5):

1. Text is cut into pre-tokens with a regex (by default GPT-2's: words with their leading space,
   numbers, punctuation runs, whitespace), so merges never cross word boundaries.
2. Each pre-token's UTF-8 bytes start as one token per byte (256 base tokens: nothing is ever
   unknown), then the adjacent pair with the lowest merge rank is merged, leftmost first, until
   no pair has a rank. Results are cached per pre-token string, since natural text repeats them.
3. Decoding concatenates the tokens' bytes, so it is exact for every input.

Training (:func:`train_bpe`) counts pre-tokens over a streamed corpus, then repeatedly merges the
most frequent adjacent pair, updating pair counts incrementally (pair -> count, pair -> words that
contain it, a max-heap with lazy invalidation). Ties go to the lexicographically smallest pair of
byte strings (left token's bytes, then right token's bytes), so training is deterministic.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any

import regex

from scratchgpt.errors import Advice, DataError, TokenizerError
from scratchgpt.tokenizers.base import EOT, Tokenizer, bad_id_error, special_regex

# GPT-2's pre-tokenizer, as tiktoken writes it for the "gpt2" encoding: possessive quantifiers
# (faster, same result) and an explicit trailing-whitespace rule; it splits text exactly like the
# original ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+``.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

_INF = math.inf
# Pieces longer than this use the O(n log n) heap merge; shorter ones the simple O(n^2) loop,
# which is faster for the short pieces natural text is made of.
_LONG_PIECE = 64
_CACHE_LIMIT = 200_000  # pre-tokens; bounds memory on huge, varied corpora
_CHUNK_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (spells tokens in encoder.json)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@functools.lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """Inverse of :func:`bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_bytes(token: str) -> bytes:
    """Bytes of a token spelled with GPT-2's byte characters (e.g. ``"Ġthe"`` -> ``b" the"``)."""
    table = unicode_to_bytes()
    try:
        return bytes([table[c] for c in token])
    except KeyError as e:
        raise TokenizerError(
            f"{token!r} is not a byte-level token: character {e.args[0]!r} is not one of the 256 "
            "byte characters of GPT-2's byte<->unicode table"
        ) from None


def bytes_to_token(data: bytes) -> str:
    """Spell `data` with GPT-2's byte characters (inverse of :func:`token_to_bytes`)."""
    table = bytes_to_unicode()
    return "".join([table[b] for b in data])


@functools.lru_cache(maxsize=32)
def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a pre-tokenizer pattern with the `regex` package (it knows \\p{L} etc.)."""
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise TokenizerError(f"invalid pre-tokenizer pattern {pattern!r}: {e}") from None
    if compiled.groups:
        # findall would return the groups instead of the whole pre-tokens.
        raise TokenizerError(
            f"pre-tokenizer pattern {pattern!r} has capturing groups; write them as (?:...)"
        )
    return compiled


class BPETokenizer(Tokenizer):
    """Byte-level BPE encoder: regex pre-tokens, lowest-rank merge loop, a cache of pre-tokens.

    ``vocab[i]`` is the byte string of regular token ``i`` (it must contain each of the 256 single
    bytes); ``merges`` lists ``(left_id, right_id, merged_id)`` by rank, lowest (first applied)
    first; special tokens take the ids right after the regular ones.
    """

    name = "bpe"

    def __init__(
        self,
        vocab: Sequence[bytes],
        merges: Sequence[tuple[int, int, int]],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        *,
        training_info: Mapping[str, Any] | None = None,
    ) -> None:
        vocab = [bytes(v) for v in vocab]
        self._check_vocab(vocab)
        n = len(vocab)
        ranks: dict[tuple[int, int], int] = {}
        merge_to: dict[tuple[int, int], int] = {}
        for rank, (left, right, merged) in enumerate(merges):
            for what, i in (("left", left), ("right", right), ("merged", merged)):
                if not (type(i) is int and 0 <= i < n):
                    raise TokenizerError(
                        f"merge {rank}: {what} token id {i!r} is not in 0..{n - 1}"
                    )
            if vocab[merged] != vocab[left] + vocab[right]:
                raise TokenizerError(
                    f"merge {rank}: token {merged} ({vocab[merged]!r}) is not the concatenation "
                    f"of tokens {left} and {right} ({vocab[left]!r} + {vocab[right]!r})"
                )
            if (left, right) in ranks:
                raise TokenizerError(f"merge {rank}: the pair ({left}, {right}) is listed twice")
            ranks[left, right] = rank
            merge_to[left, right] = merged
        specials = dict(special_tokens or {})
        if sorted(specials.values()) != list(range(n, n + len(specials))):
            raise TokenizerError(
                f"special token ids {sorted(specials.values())} must be {n}..{n + len(specials) - 1}"
                " (right after the regular tokens, each used once)"
            )
        for s in specials:
            if not isinstance(s, str) or not s:
                raise TokenizerError(f"special token {s!r} must be a non-empty string")
        self._vocab = vocab
        self._merges = [tuple(m) for m in merges]
        self._ranks = ranks
        self._merge_to = merge_to
        self._special = specials
        self.pattern = pattern
        self._findall = compile_pattern(pattern).findall
        self._bytes_to_id = {b: i for i, b in enumerate(vocab)}
        self._byte_ids = [self._bytes_to_id[bytes([b])] for b in range(256)]
        self._identity_bytes = self._byte_ids == list(range(256))
        # id -> bytes for decoding; a special decodes to its own text.
        self._token_bytes = vocab + [s.encode("utf-8") for s in sorted(specials, key=specials.get)]
        self._cache: dict[str, list[int]] = {}
        self.training_info = dict(training_info) if training_info else None
        self.training_seconds: float | None = None

    @staticmethod
    def _check_vocab(vocab: list[bytes]) -> None:
        seen: dict[bytes, int] = {}
        for i, b in enumerate(vocab):
            if not b:
                raise TokenizerError(f"token {i} is empty")
            if b in seen:
                raise TokenizerError(f"tokens {seen[b]} and {i} are the same bytes {b!r}")
            seen[b] = i
        missing = [b for b in range(256) if bytes([b]) not in seen]
        if missing:
            raise TokenizerError(
                f"the vocabulary lacks {len(missing)} of the 256 single-byte tokens "
                f"(first: {bytes([missing[0]])!r}); a byte-level BPE needs all of them"
            )

    @classmethod
    def from_merges(
        cls,
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (EOT,),
        pattern: str = GPT2_PATTERN,
        *,
        training_info: Mapping[str, Any] | None = None,
    ) -> BPETokenizer:
        """Build the standard layout: ids 0..255 are the bytes, then one id per new merged token
        in merge order (a merge whose result already exists reuses that id), then the specials."""
        vocab = [bytes([b]) for b in range(256)]
        ids = {b: i for i, b in enumerate(vocab)}
        triples = []
        for rank, (left, right) in enumerate(merges):
            try:
                li, ri = ids[bytes(left)], ids[bytes(right)]
            except KeyError as e:
                raise TokenizerError(
                    f"merge {rank}: part {e.args[0]!r} is not a token made by an earlier merge"
                ) from None
            merged = bytes(left) + bytes(right)
            mi = ids.get(merged)
            if mi is None:
                mi = ids[merged] = len(vocab)
                vocab.append(merged)
            triples.append((li, ri, mi))
        specials = {s: len(vocab) + i for i, s in enumerate(dict.fromkeys(special_tokens))}
        return cls(vocab, triples, specials, pattern, training_info=training_info)

    # --- encoding -------------------------------------------------------------------------
    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8; replace them exactly as tiktoken does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_ordinary(text)

    def _encode_ordinary(self, text: str) -> list[int]:
        get = self._cache.get
        encode_piece = self._encode_piece
        out: list[int] = []
        extend = out.extend
        for piece in self._findall(text):
            ids = get(piece)
            if ids is None:
                ids = encode_piece(piece)
            extend(ids)
        return out

    def _encode_piece(self, piece: str) -> list[int]:
        data = piece.encode("utf-8")
        if self._identity_bytes:
            ids = list(data)
        else:
            byte_ids = self._byte_ids
            ids = [byte_ids[b] for b in data]
        if len(ids) > 1:
            ids = self._merge_short(ids) if len(ids) <= _LONG_PIECE else self._merge_long(ids)
        cache = self._cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[piece] = ids
        return ids

    def _merge_short(self, ids: list[int]) -> list[int]:
        # Every step is a C-level pass over the pairs: rank them, take the lowest (leftmost on
        # ties, as list.index finds the first), merge that one pair, repeat.
        rank_of = self._ranks.get
        merge_to = self._merge_to
        while len(ids) > 1:
            pairs = list(pairwise(ids))
            ranks = list(map(rank_of, pairs, repeat(_INF)))
            best = min(ranks)
            if best == _INF:
                break
            i = ranks.index(best)
            ids[i : i + 2] = (merge_to[pairs[i]],)
        return ids

    def _merge_long(self, ids: list[int]) -> list[int]:
        # Same merge order as _merge_short (lowest rank, then leftmost), with a heap and a linked
        # list, so a megabyte-long pre-token (e.g. a run of spaces) is not quadratic.
        rank_of = self._ranks.get
        merge_to = self._merge_to
        n = len(ids)
        sym = list(ids)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = [(r, i) for i, p in enumerate(pairwise(ids)) if (r := rank_of(p)) is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j >= n or rank_of((sym[i], sym[j])) != r:
                continue
            sym[i] = merge_to[sym[i], sym[j]]
            alive[j] = False
            k = nxt[i] = nxt[j]
            if k < n:
                prv[k] = i
                rk = rank_of((sym[i], sym[k]))
                if rk is not None:
                    heapq.heappush(heap, (rk, i))
            p = prv[i]
            if p >= 0:
                rp = rank_of((sym[p], sym[i]))
                if rp is not None:
                    heapq.heappush(heap, (rp, p))
        return [s for s, a in zip(sym, alive) if a]

    # --- decoding -------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = ids if isinstance(ids, list) else list(ids)
        table = self._token_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            raise bad_id_error(ids, self.vocab_size) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Decode; byte sequences that are not valid UTF-8 become U+FFFD (as in tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._token_bytes)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        """(left_id, right_id, merged_id) by rank."""
        return list(self._merges)

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one token."""
        return self.decode_bytes([id])

    def token_to_id(self, token: str) -> int:
        """Id of a special token, or of a regular token spelled GPT-2 style (``"Ġthe"``)."""
        if token in self._special:
            return self._special[token]
        i = self._bytes_to_id.get(token_to_bytes(token))
        if i is None:
            raise TokenizerError(f"{token!r} is not a token of this vocabulary")
        return i

    def id_to_token(self, id: int) -> str:
        """A regular token spelled GPT-2 style (bytes as printable characters), or a special."""
        data = self.token_bytes(id)
        return data.decode("utf-8") if id >= len(self._vocab) else bytes_to_token(data)

    # --- persistence ----------------------------------------------------------------------
    def _is_standard_layout(self) -> bool:
        """True when ids are what from_merges would assign, so the merges alone describe it."""
        vocab = self._vocab
        if not self._identity_bytes:
            return False
        next_id = 256
        for _, _, m in self._merges:
            if m == next_id:
                next_id += 1
            elif m > next_id:
                return False
        return next_id == len(vocab)

    def to_dict(self) -> dict[str, Any]:
        vocab = self._vocab
        data: dict[str, Any] = {
            "pattern": self.pattern,
            "special_tokens": self._special,
            "merges": [[vocab[a].hex(), vocab[b].hex()] for a, b, _ in self._merges],
        }
        if not self._is_standard_layout():
            data["vocab"] = [v.hex() for v in vocab]
        if self.training_info:
            data["training"] = self.training_info
        return data

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BPETokenizer:
        """Inverse of :meth:`to_dict`; errors name the offending field."""
        pattern = data.get("pattern", GPT2_PATTERN)
        if not isinstance(pattern, str):
            raise TokenizerError("field 'pattern' must be a string")
        compile_pattern(pattern)
        specials = data.get("special_tokens", {})
        if not isinstance(specials, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in specials.items()
        ):
            raise TokenizerError("field 'special_tokens' must map strings to integer ids")
        merges = data.get("merges")
        if not isinstance(merges, list):
            raise TokenizerError("field 'merges' is missing or not a list")
        pairs = []
        for i, m in enumerate(merges):
            try:
                left, right = (bytes.fromhex(x) for x in m)
            except (TypeError, ValueError):
                raise TokenizerError(
                    f"field 'merges', entry {i}: {m!r} is not a pair of hex byte strings"
                ) from None
            pairs.append((left, right))
        info = data.get("training")
        if info is not None and not isinstance(info, dict):
            raise TokenizerError("field 'training' must be an object")
        if "vocab" not in data:
            names = sorted(specials, key=specials.get)
            tok = cls.from_merges(pairs, names, pattern, training_info=info)
            return tok._check_ids(specials)
        raw = data["vocab"]
        try:
            vocab = [bytes.fromhex(x) for x in raw]
        except (TypeError, ValueError):
            raise TokenizerError("field 'vocab' must be a list of hex byte strings") from None
        ids = {b: i for i, b in enumerate(vocab)}
        triples = []
        for i, (left, right) in enumerate(pairs):
            try:
                triples.append((ids[left], ids[right], ids[left + right]))
            except KeyError as e:
                raise TokenizerError(
                    f"field 'merges', entry {i}: {e.args[0]!r} is not in the vocabulary"
                ) from None
        return cls(vocab, triples, specials, pattern, training_info=info)

    def _check_ids(self, specials: Mapping[str, int]) -> BPETokenizer:
        if specials != self._special:
            raise TokenizerError(
                f"field 'special_tokens': ids {specials} do not match the merges, which give "
                f"{self._special}"
            )
        return self


# --- training ------------------------------------------------------------------------------


def _utf8_boundary(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character."""
    n = len(data)
    for k in range(1, min(4, n) + 1):
        b = data[n - k]
        if b < 0x80:
            return n
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n - k if need > k else n
    return n


def _read_chunks(
    path: Path, errors: str, chunk_size: int, on_bytes: Callable[[int], object]
) -> Iterator[str]:
    """Decode a UTF-8 file chunk by chunk; invalid bytes raise DataError naming their offset."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a text file") from None
    with f:
        offset = 0  # absolute byte offset of `pending`
        lines = 0  # newlines before `offset`
        line_start = 0  # absolute offset where the current line starts
        pending = b""
        while True:
            chunk = f.read(chunk_size)
            data = pending + chunk
            if not data:
                return
            cut = _utf8_boundary(data) if chunk else len(data)
            part = data[:cut]
            try:
                text = part.decode("utf-8", errors)
            except UnicodeDecodeError as e:
                nl = part.rfind(b"\n", 0, e.start)
                start = offset + nl + 1 if nl >= 0 else line_start
                line = lines + part.count(b"\n", 0, e.start) + 1
                bad = part[e.start : e.start + 4].hex(" ")
                raise DataError(
                    f"{path}: not valid UTF-8 at byte offset {offset + e.start} (line {line}, "
                    f"column {offset + e.start - start + 1}; bytes {bad}): {e.reason}; convert the "
                    "file to UTF-8",
                    Advice(
                        "or pass encoding_errors='replace' to substitute invalid bytes",
                        "or pass --encoding-errors replace to substitute invalid bytes",
                        "--encoding-errors",
                        sep=", ",
                    ),
                ) from None
            lines += part.count(b"\n")
            nl = part.rfind(b"\n")
            if nl >= 0:
                line_start = offset + nl + 1
            offset += cut
            pending = data[cut:]
            on_bytes(len(chunk))
            yield text
            if not chunk:
                return


class _PretokenCounter:
    """Counts pre-tokens of a corpus given as whole texts or streamed files."""

    def __init__(self, pattern: str, specials: Sequence[str]) -> None:
        self._regex = compile_pattern(pattern)
        self._specials = list(specials)
        self._special_re = special_regex(frozenset(specials)) if specials else None
        self.counts: Counter[str] = Counter()

    def _segments(self, text: str) -> list[str]:
        return self._special_re.split(text) if self._special_re else [text]

    def add_text(self, text: str) -> None:
        update = self.counts.update
        findall = self._regex.findall
        for seg in self._segments(text):
            update(findall(seg))

    def add_file(
        self, path: Path, errors: str, on_bytes: Callable[[int], object], chunk_size: int
    ) -> None:
        carry = ""
        for text in _read_chunks(path, errors, chunk_size, on_bytes):
            segs = self._segments(carry + text)
            for seg in segs[:-1]:
                self.counts.update(self._regex.findall(seg))
            carry = self._count_stable(segs[-1])
        if carry:
            self.add_text(carry)

    def _count_stable(self, text: str) -> str:
        """Count the pre-tokens of `text` that more text cannot change; return the rest.

        The last two pre-tokens may change (a word or whitespace run may continue, "'" + "l" may
        become "'ll"), and so may a tail that could be the start of a special token.
        """
        limit = len(text)
        for s in self._specials:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    limit = min(limit, len(text) - k)
                    break
        pieces = self._regex.findall(text)
        if sum(map(len, pieces)) == len(text):
            # The pieces tile the text (true for GPT-2's pattern): positions from their lengths.
            keep = max(len(pieces) - 2, 0)
            end = len(text) - sum(map(len, pieces[keep:]))
            while keep > 0 and end > limit:
                keep -= 1
                end -= len(pieces[keep])
            self.counts.update(pieces[:keep])
            return text[end:]
        matches = list(self._regex.finditer(text))
        stable = 0
        end = 0
        for m in matches[:-2]:
            if m.end() > limit:
                break
            stable += 1
            end = m.end()
        self.counts.update([m.group() for m in matches[:stable]])
        return text[end:]


def _learn_merges(
    counts: Mapping[str, int], n_new: int, on_token: Callable[[], object]
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Learn merges until `n_new` new tokens exist; returns merges and the corpus token count."""
    words: list[list[int]] = []
    freqs: list[int] = []
    tokens = 0
    for piece, c in counts.items():
        data = piece.encode("utf-8")
        if len(data) > 1:
            words.append(list(data))
            freqs.append(c)
        else:
            tokens += c
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        f = freqs[wi]
        for p in pairwise(w):
            pair_counts[p] += f
            where[p].add(wi)
    tb = [bytes([b]) for b in range(256)]
    ids = {b: i for i, b in enumerate(tb)}
    # Max-heap on count, then the smallest (left bytes, right bytes): deterministic ties.
    heap = [(-c, tb[a], tb[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    target = 256 + n_new
    while len(tb) < target and heap:
        negc, _, _, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b)) != -negc:
            continue  # stale entry: the count changed after it was pushed
        merged = tb[a] + tb[b]
        new = ids.get(merged)
        if new is None:
            new = ids[merged] = len(tb)
            tb.append(merged)
            on_token()
        merges.append((tb[a], tb[b]))
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop((a, b)):
            w = words[wi]
            n = len(w)
            out = []
            i = 0
            while i < n:
                if w[i] == a and i + 1 < n and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) == n:
                continue  # the word lost this pair in an earlier merge (sets are not pruned)
            f = freqs[wi]
            for p in pairwise(w):
                delta[p] -= f
            for p in pairwise(out):
                delta[p] += f
                if new in p:  # other pairs were in the word before, so it is listed already
                    where[p].add(wi)
            words[wi] = out
        for p, d in delta.items():
            if d:
                c = pair_counts.get(p, 0) + d
                if c > 0:
                    pair_counts[p] = c
                    heapq.heappush(heap, (-c, tb[p[0]], tb[p[1]], p[0], p[1]))
                else:
                    pair_counts.pop(p, None)
    tokens += sum(len(w) * f for w, f in zip(words, freqs))
    return merges, tokens


def train_bpe(
    texts: Iterable[str | os.PathLike] | str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] = (EOT,),
    *,
    progress: bool = False,
    pattern: str = GPT2_PATTERN,
    encoding_errors: str = "strict",
    chunk_size: int = _CHUNK_BYTES,
) -> BPETokenizer:
    """Train a byte-level BPE tokenizer of (at most) `vocab_size` tokens on a corpus.

    `texts` is one text, or an iterable of texts (``str``) and files (``pathlib.Path`` or other
    ``os.PathLike``); files are read incrementally, so only the pre-token counts are held in
    memory. Special-token strings in the corpus separate pre-tokens and are not learned from.
    The vocabulary is smaller than `vocab_size` only when the corpus runs out of pairs to merge.
    A custom `pattern` must match every character (GPT-2's does) for decoding to be exact: text
    between its matches is dropped.
    """
    specials = list(dict.fromkeys(special_tokens))
    for s in specials:
        if not isinstance(s, str) or not s:
            raise TokenizerError(f"special token {s!r} must be a non-empty string")
    minimum = 256 + len(specials)
    if type(vocab_size) is not int or vocab_size < minimum:
        raise TokenizerError(
            f"a vocabulary of {vocab_size!r} tokens is too small: a byte-level BPE needs at least "
            f"{minimum} tokens (256 bytes + {len(specials)} special token(s)); choose a larger "
            "vocabulary size"
        )
    if isinstance(texts, (str, os.PathLike)):
        texts = [texts]
    start = time.perf_counter()
    from scratchgpt.progress import progress as progress_bar

    show = None if progress else False  # a bar on a terminal, lines elsewhere
    counter = _PretokenCounter(pattern, specials)
    with progress_bar(
        desc="reading corpus", unit="B", unit_scale=True, enabled=show, leave=False
    ) as bar:
        for item in texts:
            if isinstance(item, os.PathLike):
                counter.add_file(Path(item), encoding_errors, bar.update, chunk_size)
            elif isinstance(item, str):
                counter.add_text(item)
                bar.update(len(item))
            else:
                raise TokenizerError(
                    f"train_bpe: corpus items must be str (a text) or os.PathLike (a file), got "
                    f"{type(item).__name__}"
                )
    counts = counter.counts
    if not counts:
        raise TokenizerError(
            "train_bpe: the corpus is empty (no text outside special tokens); give it some text"
        )
    corpus_bytes = sum(len(p.encode("utf-8")) * c for p, c in counts.items())
    n_new = vocab_size - minimum
    with progress_bar(total=n_new, desc="learning merges", unit="tokens", enabled=show) as bar:
        merges, corpus_tokens = _learn_merges(counts, n_new, lambda: bar.update(1))
    info = {
        "corpus_bytes": corpus_bytes,
        "corpus_tokens": corpus_tokens,
        "unique_pretokens": len(counts),
        "merges": len(merges),
        "requested_vocab_size": vocab_size,
    }
    tok = BPETokenizer.from_merges(merges, specials, pattern, training_info=info)
    tok.training_seconds = time.perf_counter() - start
    return tok
