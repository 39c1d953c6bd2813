"""The raw bytes of each token of a ``tokenizer.json`` tokenizer, for streaming text.

A token may hold part of a character (an emoji is often split across tokens), so text is
streamed from bytes: a character is shown once all its bytes have come. Two kinds of decoder let
each token be decoded alone into bytes whose concatenation is the text's decoding:

- ``ByteLevel`` (GPT-2, Llama 3, Qwen3): every byte is spelled with one printable character
  (GPT-2's table), so a token's spelling is its bytes;
- SentencePiece's byte fallback without a strip (Gemma: ``Replace("▁", " ")``, ``ByteFallback``,
  ``Fuse``): characters outside the vocabulary are spelled as byte pieces ``<0x00>``..``<0xFF>``,
  every other token decodes alone to its text (``▁`` to a space).

Other decoders (WordPiece's, Llama 2's, which strips a leading space) have no such table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scratchgpt.tokenizers.bpe import unicode_to_bytes
from tokenizers import Tokenizer as Backend

BYTE_LEVEL = "byte-level"
BYTE_FALLBACK = "byte-fallback"

# A SentencePiece byte piece: the token of one byte.
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_decoding(decoder: Any) -> str | None:
    """How tokenizer.json's decoder (parsed) turns tokens into bytes: :data:`BYTE_LEVEL`,
    :data:`BYTE_FALLBACK`, or None when tokens cannot be decoded one at a time."""
    if not isinstance(decoder, dict):
        return None
    parts = (decoder.get("decoders") or []) if decoder.get("type") == "Sequence" else [decoder]
    kinds = [p.get("type") if isinstance(p, dict) else None for p in parts]
    if kinds == ["ByteLevel"]:
        return BYTE_LEVEL
    if "ByteFallback" in kinds and set(kinds) <= {"Replace", "ByteFallback", "Fuse"}:
        return BYTE_FALLBACK
    return None


def token_bytes_table(
    backend: Backend, vocab: Mapping[str, int], vocab_size: int, decoding: str
) -> list[bytes | None]:
    """id -> the token's bytes (None for an id no token has); added tokens give their text."""
    added = {t.content for t in backend.get_added_tokens_decoder().values()}
    table: list[bytes | None] = [None] * vocab_size
    if decoding == BYTE_LEVEL:
        byte_of = unicode_to_bytes()
        for token, i in vocab.items():
            try:
                table[i] = token.encode() if token in added else bytes([byte_of[c] for c in token])
            except KeyError:  # not spelled with byte characters: keep the text
                table[i] = token.encode("utf-8")
        return table
    rest = []
    for token, i in vocab.items():
        piece = None if token in added else _BYTE_PIECE.fullmatch(token)
        if piece is not None:
            table[i] = bytes([int(piece[1], 16)])
        else:
            rest.append(i)
    texts = backend.decode_batch([[i] for i in rest], skip_special_tokens=False)
    for i, text in zip(rest, texts):
        table[i] = text.encode("utf-8")
    return table
