"""GPT-2's byte-level BPE encoding (book chapter 2.5), built offline from the bundled files.

Two backends give identical ids:

- ``"tiktoken"`` (default, fast): a ``tiktoken.Encoding`` built from the bundled ``encoder.json``
  and ``vocab.bpe`` (never ``tiktoken.get_encoding``, which downloads). The wrapper passes calls
  straight through, so it runs at tiktoken's speed.
- ``"scratch"``: the same files loaded into our pure-Python :class:`~.bpe.BPETokenizer`, the
  readable reference implementation.

Both are built once per process and shared (building takes a moment).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchgpt.errors import DataError, TokenizerError
from scratchgpt.fileio import PathLike, decode_utf8
from scratchgpt.tokenizers.base import (
    SpecialSet,
    Tokenizer,
    as_int_ids,
    bad_id_error,
    check_disallowed,
    resolve_special,
)
from scratchgpt.tokenizers.bpe import GPT2_PATTERN, BPETokenizer, bytes_to_unicode, token_to_bytes

BACKENDS = ("tiktoken", "scratch")


@dataclass(frozen=True, eq=False)
class GPT2Files:
    """The contents of an encoder.json / vocab.bpe pair, parsed and checked."""

    encoder: dict[str, int]
    merges: tuple[tuple[str, str], ...]
    merge_lines: tuple[int, ...]
    digest: str
    bundled: bool
    source: str


def parse_vocab_bpe(text: str, source: str) -> tuple[list[tuple[str, str]], list[int]]:
    """Parse a vocab.bpe merge list ("#version" header, then "left right" per line)."""
    merges: list[tuple[str, str]] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerError(
                f"{source}, line {lineno}: expected two tokens separated by one space, got "
                f"{line[:80]!r}; is this a GPT-2 vocab.bpe file?"
            )
        merges.append((parts[0], parts[1]))
        lines.append(lineno)
    return merges, lines


def _check_encoder(encoder: Any, source: str) -> dict[str, int]:
    if not isinstance(encoder, dict) or not encoder:
        raise TokenizerError(f"{source}: expected a JSON object mapping token -> id")
    for token, i in encoder.items():
        if type(i) is not int:
            raise TokenizerError(f"{source}: token {token!r} has id {i!r}, expected an integer")
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise TokenizerError(f"{source}: token ids must be 0..{len(encoder) - 1}, each used once")
    return encoder


def gpt2_files_from_data(
    encoder: Any, vocab_bpe: str, *, bundled: bool = False, source: str = "<data>"
) -> GPT2Files:
    """Check and wrap an encoder mapping and vocab.bpe text."""
    encoder = _check_encoder(encoder, f"{source} (encoder)")
    merges, lines = parse_vocab_bpe(vocab_bpe, f"{source} (merges)")
    digest = hashlib.sha256(
        json.dumps(encoder, sort_keys=True).encode() + b"\0" + vocab_bpe.encode()
    ).hexdigest()
    return GPT2Files(encoder, tuple(merges), tuple(lines), digest, bundled, source)


_FILES: dict[tuple, GPT2Files] = {}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None


def load_gpt2_files(
    encoder_path: PathLike | None = None, vocab_path: PathLike | None = None
) -> GPT2Files:
    """Read encoder.json and vocab.bpe (default: the bundled copies), cached per file version."""
    from scratchgpt.assets import asset_path

    default_ep, default_vp = asset_path("gpt2/encoder.json"), asset_path("gpt2/vocab.bpe")
    ep = Path(encoder_path) if encoder_path is not None else default_ep
    vp = Path(vocab_path) if vocab_path is not None else default_vp
    # The bundled files, however named, are saved as a reference instead of being embedded.
    bundled = ep.resolve() == default_ep.resolve() and vp.resolve() == default_vp.resolve()
    key = []
    for p in (ep, vp):
        try:
            st = p.stat()
        except FileNotFoundError:
            raise DataError(f"{p}: file not found") from None
        key.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    files = _FILES.get(tuple(key))
    if files is None:
        enc_text = decode_utf8(_read(ep), str(ep))
        try:
            encoder = json.loads(enc_text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{ep}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            ) from None
        vocab_text = decode_utf8(_read(vp), str(vp))
        encoder = _check_encoder(encoder, str(ep))
        merges, lines = parse_vocab_bpe(vocab_text, str(vp))
        digest = hashlib.sha256(
            json.dumps(encoder, sort_keys=True).encode() + b"\0" + vocab_text.encode()
        ).hexdigest()
        files = GPT2Files(encoder, tuple(merges), tuple(lines), digest, bundled, f"{ep} + {vp}")
        _FILES[tuple(key)] = files
    return files


@dataclass(frozen=True)
class _Layout:
    vocab: list[bytes]  # regular token id -> bytes
    merges: list[tuple[int, int, int]]
    special_tokens: dict[str, int]
    id_to_token: list[str]


_LAYOUTS: dict[str, _Layout] = {}


def _layout(files: GPT2Files) -> _Layout:
    """Token bytes, merges as ids and special tokens, as the BPE encoder needs them."""
    if files.digest in _LAYOUTS:
        return _LAYOUTS[files.digest]
    encoder = files.encoder
    byte_chars = bytes_to_unicode()
    produced = set()
    for b in range(256):
        i = encoder.get(byte_chars[b])
        if i is None:
            raise TokenizerError(
                f"{files.source}: the encoder lacks the single-byte token {byte_chars[b]!r} "
                f"(byte {b})"
            )
        produced.add(i)
    merges = []
    for (left, right), line in zip(files.merges, files.merge_lines):
        try:
            triple = (encoder[left], encoder[right], encoder[left + right])
        except KeyError as e:
            raise TokenizerError(
                f"{files.source}: merge on line {line} ({left} {right}) uses {e.args[0]!r}, "
                "which is not in the encoder"
            ) from None
        merges.append(triple)
        produced.add(triple[2])
    n = len(produced)
    # Tokens that no merge produces (GPT-2: only <|endoftext|>) are the special tokens.
    specials = {t: i for t, i in encoder.items() if i not in produced}
    if any(i < n for i in specials.values()):
        raise TokenizerError(
            f"{files.source}: tokens {sorted(specials)[:5]} are neither bytes nor made by a "
            f"merge, but their ids are not after the {n} regular tokens"
        )
    inverse = [""] * len(encoder)
    for t, i in encoder.items():
        inverse[i] = t
    vocab = [token_to_bytes(inverse[i]) for i in range(n)]
    layout = _Layout(vocab, merges, specials, inverse)
    _LAYOUTS[files.digest] = layout
    return layout


_SCRATCH: dict[str, BPETokenizer] = {}
_TIKTOKEN: dict[str, Any] = {}


def _scratch_bpe(files: GPT2Files) -> BPETokenizer:
    if files.digest not in _SCRATCH:
        lay = _layout(files)
        _SCRATCH[files.digest] = BPETokenizer(
            lay.vocab, lay.merges, lay.special_tokens, GPT2_PATTERN
        )
    return _SCRATCH[files.digest]


def _tiktoken_encoding(files: GPT2Files) -> Any:
    if files.digest not in _TIKTOKEN:
        import tiktoken

        lay = _layout(files)
        # tiktoken ranks a merge by the id of its result, so ids must follow merge order.
        for rank, (_, _, merged) in enumerate(lay.merges):
            if merged != 256 + rank:
                raise TokenizerError(
                    f"{files.source}: merge {rank} makes token {merged}, but the tiktoken "
                    f"backend needs id {256 + rank} (ids in merge order); use backend='scratch'"
                )
        ranks = {b: i for i, b in enumerate(lay.vocab)}
        _TIKTOKEN[files.digest] = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=lay.special_tokens,
            explicit_n_vocab=len(files.encoder),
        )
    return _TIKTOKEN[files.digest]


def tiktoken_gpt2_encoding() -> Any:
    """The raw ``tiktoken.Encoding`` for GPT-2, built offline from the bundled files."""
    return _tiktoken_encoding(load_gpt2_files())


class GPT2Tokenizer(Tokenizer):
    """GPT-2's encoding (50,257 tokens; ``<|endoftext|>`` = 50256), identical to tiktoken's "gpt2".

    ``backend="tiktoken"`` (fast) or ``"scratch"`` (pure Python); ``encoder_path``/``vocab_path``
    load other files in the same format instead of the bundled ones.
    """

    name = "gpt2"

    def __init__(
        self,
        backend: str = "tiktoken",
        *,
        encoder_path: PathLike | None = None,
        vocab_path: PathLike | None = None,
        files: GPT2Files | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise TokenizerError(f"unknown gpt2 backend {backend!r}; choose one of {BACKENDS}")
        if (encoder_path is None) != (vocab_path is None):
            raise TokenizerError("give both encoder_path and vocab_path, or neither")
        self.backend = backend
        self.files = files if files is not None else load_gpt2_files(encoder_path, vocab_path)
        self._paths = (encoder_path, vocab_path)
        lay = _layout(self.files)
        self._special = dict(lay.special_tokens)
        self._special_set = frozenset(self._special)
        self._inverse = lay.id_to_token
        self._enc = _tiktoken_encoding(self.files) if backend == "tiktoken" else None
        self._bpe = _scratch_bpe(self.files) if backend == "scratch" else None

    # The tiktoken path calls tiktoken directly and only does extra work when it raises, so it
    # runs at tiktoken's speed; our own rules and messages come from the shared helpers.
    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        enc = self._enc
        if enc is None:
            return self._bpe.encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special
            )
        if allowed_special and (
            allowed_special != "all" and not self._special_set.issuperset(allowed_special)
        ):
            resolve_special(self._special, allowed_special, disallowed_special)
        try:
            return enc.encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special
            )
        except ValueError:
            _, disallowed = resolve_special(self._special, allowed_special, disallowed_special)
            check_disallowed(text, disallowed)
            raise

    def encode_ordinary(self, text: str) -> list[int]:
        if self._enc is not None:
            return self._enc.encode_ordinary(text)
        return self._bpe.encode_ordinary(text)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        if self._enc is None:
            return self._bpe.decode_bytes(ids)
        ids = ids if isinstance(ids, list) else list(ids)
        try:
            return self._enc.decode_bytes(ids)
        except TypeError:
            # tiktoken takes Python ints only; numpy and torch integers are fine too.
            converted = as_int_ids(ids)
            if converted is None:
                raise bad_id_error(ids, self.vocab_size) from None
            return self.decode_bytes(converted)
        except (KeyError, ValueError, OverflowError):
            raise bad_id_error(ids, self.vocab_size) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Decode; byte sequences that are not valid UTF-8 become U+FFFD (as in tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return len(self._inverse)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def token_to_id(self, token: str) -> int:
        """Id of a token spelled as in encoder.json (``"Ġthe"`` -> 262)."""
        i = self.files.encoder.get(token)
        if i is None:
            raise TokenizerError(
                f"{token!r} is not in GPT-2's vocabulary (spelled as encoder.json)"
            )
        return i

    def id_to_token(self, id: int) -> str:
        """The token spelled as in encoder.json (262 -> ``"Ġthe"``)."""
        if type(id) is not int or not 0 <= id < len(self._inverse):
            raise bad_id_error([id], self.vocab_size)
        return self._inverse[id]

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one token."""
        return self.decode_bytes([id])

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "backend": self.backend}
        if not self.files.bundled and self._paths[0] is not None:
            config["encoder_path"] = str(self._paths[0])
            config["vocab_path"] = str(self._paths[1])
        return config

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend}
        if self.files.bundled:
            data.update(files="bundled", sha256=self.files.digest)
        else:
            lines = [f"{a} {b}" for a, b in self.files.merges]
            data.update(
                files="embedded",
                encoder=self.files.encoder,
                vocab_bpe="#version: 0.2\n" + "\n".join(lines) + "\n",
            )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], backend: str | None = None) -> GPT2Tokenizer:
        """Inverse of :meth:`to_dict` (optionally with another backend)."""
        backend = backend or data.get("backend", "tiktoken")
        kind = data.get("files")
        if kind == "bundled":
            files = load_gpt2_files()
            if data.get("sha256") not in (None, files.digest):
                raise TokenizerError(
                    "field 'sha256' does not match the bundled GPT-2 files; this tokenizer was "
                    "saved with other files: save it again with files embedded"
                )
            return cls(backend, files=files)
        if kind == "embedded":
            if not isinstance(data.get("vocab_bpe"), str):
                raise TokenizerError("field 'vocab_bpe' is missing or not a string")
            files = gpt2_files_from_data(data.get("encoder"), data["vocab_bpe"], source="saved")
            return cls(backend, files=files)
        raise TokenizerError(f"field 'files' must be 'bundled' or 'embedded', got {kind!r}")

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(backend={self.backend!r})"
