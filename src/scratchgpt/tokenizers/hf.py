"""Hugging Face tokenizers (``tokenizer.json``), for Llama 3.x, Qwen3, Gemma 3 and other folders.

:class:`HFTokenizer` wraps a ``tokenizers.Tokenizer`` (the Rust library ``transformers`` uses for
its fast tokenizers), so a folder's tokenizer encodes exactly as ``AutoTokenizer`` does, at the
library's speed, behind scratchgpt's :class:`~scratchgpt.tokenizers.base.Tokenizer` interface:

- special tokens are the added tokens flagged special (``<|begin_of_text|>``, ``<|im_end|>``...)
  and follow tiktoken's rules like every scratchgpt tokenizer: :meth:`encode_ordinary` encodes
  their strings as plain text, ``encode(allowed_special=...)`` as their ids. Added tokens that are
  not special (Qwen3's ``<think>``) are ordinary vocabulary, matched in text as ``transformers``
  does. Encoding never adds BOS/EOS itself; :attr:`bos_ids` says what the model expects first.
- byte-level BPEs (Llama 3, Qwen3) and SentencePiece-style BPEs with byte fallback (Gemma's
  ``▁`` for spaces, ``<0xNN>`` pieces for characters outside the vocabulary) both give the raw
  bytes of each token (:meth:`decode_bytes`), so a character split across tokens streams whole.
- the folder's configs give the ids the pipeline needs: :attr:`stop_ids` (every id that ends a
  generation), :attr:`bos_ids`, :attr:`eot_id`, :attr:`pad_id`, and :attr:`chat_template`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scratchgpt.errors import TokenizerError
from scratchgpt.fileio import PathLike, atomic_write_json, atomic_write_text
from scratchgpt.tokenizers.base import (
    EOT,
    SpecialSet,
    Tokenizer,
    as_int_ids,
    bad_id_error,
    resolve_special,
)
from scratchgpt.tokenizers.hf_bytes import BYTE_LEVEL, byte_decoding, token_bytes_table
from scratchgpt.tokenizers.hf_folder import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    parse_tokenizer_json,
    read_hf_folder,
    without_placeholders,
)
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

# Tokens that end a turn or a text in the formats we know (Llama 3, Qwen/ChatML, GPT-2, Gemma).
END_TOKENS = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
)


class HFTokenizer(Tokenizer):
    """A ``tokenizer.json`` tokenizer with the metadata of its model folder.

    Build one with :meth:`from_folder`; the keyword arguments are the folder's settings (see
    :func:`~scratchgpt.tokenizers.hf_folder.read_hf_folder`). ``eos_token_ids`` are
    generation_config.json's end ids, ``extra_specials`` (id, content) pairs that
    tokenizer_config.json flags special beyond tokenizer.json, ``media_tokens`` the placeholders
    of images/audio/video that a multimodal processor replaces with embeddings (Gemma 3's
    ``<image_soft_token>``): one added beyond the vocabulary is left out of this text
    tokenizer, whose ids then all have an embedding row (see
    :func:`~scratchgpt.tokenizers.hf_folder.without_placeholders`).
    """

    name = "hf"

    def __init__(
        self,
        tokenizer: str | Mapping[str, Any],
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | None = None,
        eos_token_ids: Sequence[int] = (),
        bos_token_id: int | None = None,
        model_max_length: int | None = None,
        extra_specials: Iterable[tuple[int, str]] = (),
        media_tokens: Sequence[str] = (),
        source: str = "tokenizer.json",
    ) -> None:
        self.source = source
        text = without_placeholders(parse_tokenizer_json(tokenizer, source), media_tokens)
        try:
            backend = Backend.from_str(text)
        except Exception as e:  # the library raises plain Exception for every parse error
            raise TokenizerError(
                f"{source}: not a valid tokenizer.json ({' '.join(str(e).split())}); "
                "download the model folder again"
            ) from None
        # Padding or truncation saved in the file would change what encode returns.
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._mark_special(extra_specials)
        self._vocab = backend.get_vocab(with_added_tokens=True)
        self._vocab_size = max(self._vocab.values(), default=-1) + 1
        self.bos_token = self._known(bos_token, "bos_token")
        self.eos_token = self._known(eos_token, "eos_token")
        # A padding token missing from the vocabulary is left out, not added (ids must stay
        # inside the model's embedding table).
        self.pad_token = pad_token if pad_token in self._vocab else None
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        self.bos_token_id = bos_token_id
        self.model_max_length = model_max_length
        self._json = backend.to_str()
        # From here on the backend's own encode treats special-token strings as text.
        backend.encode_special_tokens = True
        self._specials = {
            t.content: i for i, t in backend.get_added_tokens_decoder().items() if t.special
        }
        decoder = backend.decoder
        decoder_spec = None if decoder is None else json.loads(decoder.__getstate__())
        self._byte_decoding = byte_decoding(decoder_spec)
        self._token_bytes: list[bytes | None] | None = None
        self._bos_ids: list[int] | None = None
        self._with_specials: Backend | None = None
        self.chat_template = chat_template

    # --- construction helpers --------------------------------------------------------------
    def _mark_special(self, extra_specials: Iterable[tuple[int, str]]) -> None:
        """Flag special what tokenizer_config.json says is special (as transformers does)."""
        known = self._backend.get_added_tokens_decoder()
        for i, content in extra_specials:
            token = known.get(i)
            if token is not None and token.content == content and not token.special:
                flags = {k: getattr(token, k) for k in ("single_word", "lstrip", "rstrip")}
                self._backend.add_special_tokens(
                    [AddedToken(content, **flags, normalized=token.normalized, special=True)]
                )

    def _known(self, token: str | None, field: str) -> str | None:
        if token is not None and token not in self._vocab:
            raise TokenizerError(
                f"{self.source}: {field} {token!r} is not in the vocabulary of {TOKENIZER_FILE}; "
                "the folder's tokenizer files do not belong together"
            )
        return token

    @classmethod
    def from_folder(cls, folder: PathLike) -> HFTokenizer:
        """The tokenizer of a Hugging Face model folder (tokenizer.json and its configs)."""
        return cls.from_dict(read_hf_folder(folder))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HFTokenizer:
        """Rebuild from :meth:`to_dict` (or :func:`read_hf_folder`) data."""
        if "tokenizer" not in data:
            raise TokenizerError("field 'tokenizer' is missing (the content of tokenizer.json)")
        options = {k: data[k] for k in _OPTIONS if data.get(k) is not None}
        options["extra_specials"] = [tuple(p) for p in options.get("extra_specials", ())]
        return cls(data["tokenizer"], **options)

    # --- encoding and decoding -------------------------------------------------------------
    def encode_ordinary(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"expected text (str) to encode, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode `text`; special tokens follow tiktoken's rules (see :mod:`.base`). With every
        special token allowed, the library encodes the whole text as ``transformers`` does."""
        allowed, disallowed = resolve_special(self._specials, allowed_special, disallowed_special)
        if disallowed or not allowed or allowed != self._specials.keys():
            return super().encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special
            )
        if not isinstance(text, str):
            raise TokenizerError(f"expected text (str) to encode, got {type(text).__name__}")
        if self._with_specials is None:
            # A second backend that matches special tokens; flipping the flag on the shared
            # one would race with other threads encoding user text.
            self._with_specials = Backend.from_str(self._json)
        return self._with_specials.encode(text, add_special_tokens=False).ids

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> list[int]:
        """The ids of :meth:`render_chat`'s prompt. The template writes the control tokens
        (BOS too), so they are encoded as special tokens and nothing more is added, as in
        transformers' ``apply_chat_template``."""
        text = self.render_chat(messages, add_generation_prompt=add_generation_prompt, **extra)
        return self.encode(text, allowed_special="all")

    def _checked(self, ids: Iterable[int]) -> list[int]:
        ids = ids if isinstance(ids, list) else list(ids)
        ints = as_int_ids(ids)
        if ints is None or (ints and (min(ints) < 0 or max(ints) >= self._vocab_size)):
            raise bad_id_error(ids, self._vocab_size)
        return ints

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Byte-level BPE and byte fallback: the tokens' raw bytes (a character split across
        tokens stays split); added tokens give their UTF-8 text. Other tokenizers:
        ``decode(ids).encode()``."""
        ints = self._checked(ids)
        if self._byte_decoding is None:
            return self._backend.decode(ints, skip_special_tokens=False).encode("utf-8")
        if self._token_bytes is None:  # built on first use (a 262k vocabulary takes a moment)
            self._token_bytes = token_bytes_table(
                self._backend, self._vocab, self._vocab_size, self._byte_decoding
            )
        table = self._token_bytes
        try:
            return b"".join([table[i] for i in ints])
        except TypeError:  # an id no token has (a hole in the vocabulary)
            hole = next(i for i in ints if table[i] is None)
            raise TokenizerError(f"token id {hole} is not in this tokenizer's vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; invalid UTF-8 (a partial character) becomes U+FFFD, as in transformers."""
        if self._byte_decoding == BYTE_LEVEL:
            return self.decode_bytes(ids).decode("utf-8", errors="replace")
        return self._backend.decode(self._checked(ids), skip_special_tokens=False)

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids: the largest id + 1 (a model's embedding table may be larger)."""
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def token_to_id(self, token: str) -> int:
        i = self._vocab.get(token)
        if i is None:
            raise TokenizerError(f"{token!r} is not a token of this tokenizer ({self.source})")
        return i

    def id_to_token(self, id: int) -> str:
        token = self._backend.id_to_token(self._checked([id])[0])
        if token is None:
            raise TokenizerError(f"token id {id} is not in this tokenizer's vocabulary")
        return token

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._vocab.get(token)

    @property
    def eot_id(self) -> int | None:
        """End of text: ``<|endoftext|>`` (GPT-2, Qwen), else ``<|end_of_text|>`` (Llama 3),
        else the eos_token's id."""
        for token in (EOT, "<|end_of_text|>"):
            if token in self._vocab:
                return self._vocab[token]
        return self._id(self.eos_token)

    @property
    def stop_ids(self) -> list[int]:
        """Every id that ends a generation, without repeats: the eos_token's id first (what a
        finished assistant turn ends with), generation_config.json's eos_token_id(s), then the
        end-of-turn/text tokens of known formats that the vocabulary has."""
        candidates = [self._id(self.eos_token), *self.eos_token_ids]
        candidates += [self._vocab.get(t) for t in END_TOKENS]
        return list(dict.fromkeys(i for i in candidates if i is not None))

    @property
    def bos_ids(self) -> list[int]:
        """What this tokenizer puts before a text (Llama 3: ``<|begin_of_text|>``; Qwen:
        nothing), found by encoding a probe with and without the post-processor."""
        if self._bos_ids is None:
            probe = "a"
            plain = self._backend.encode(probe, add_special_tokens=False).ids
            full = self._backend.encode(probe, add_special_tokens=True).ids
            starts = range(len(full) - len(plain) + 1)
            self._bos_ids = next(
                (full[:s] for s in starts if full[s : s + len(plain)] == plain), []
            )
        return list(self._bos_ids)

    @property
    def pad_id(self) -> int | None:
        """Id of the folder's pad_token, or None."""
        return self._id(self.pad_token)

    # --- chat -----------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        """The folder's Jinja chat template, or None (a base model); assignable, e.g. to a
        :func:`~scratchgpt.tokenizers.chat.family_template`."""
        return self._chat_source

    @chat_template.setter
    def chat_template(self, source: str | None) -> None:
        if source is not None and not isinstance(source, str):
            raise TokenizerError("chat_template must be the template's Jinja text or None")
        self._chat_source = source
        self._compiled: Any = None  # the compiled ChatTemplate, made on first use

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages` in this model's own format (its chat template)."""
        return self.chat.render(messages, add_generation_prompt=add_generation_prompt, **extra)

    @property
    def chat(self) -> Any:
        """The compiled :class:`~scratchgpt.tokenizers.chat.ChatTemplate` (with this tokenizer's
        special-token strings), for ``render_example`` and friends; an error if there is none."""
        if self._chat_source is None:
            raise TokenizerError(
                f"{self.source}: this tokenizer has no chat template (a base model?); set one, "
                "e.g. tokenizer.chat_template = family_template('llama3') or 'chatml'"
            )
        if self._compiled is None:
            from scratchgpt.tokenizers.chat import ChatTemplate  # jinja2 loads on first use

            self._compiled = ChatTemplate(
                self._chat_source,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                pad_token=self.pad_token,
                origin=f"{self.source}: chat template",
            )
        return self._compiled

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole tokenizer.json (parsed) and the folder settings."""
        data: dict[str, Any] = {"tokenizer": json.loads(self._json)}
        for key in _OPTIONS:
            if key not in _APPLIED:
                data[key] = getattr(self, key if key != "chat_template" else "_chat_source")
        return data

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, "source": self.source}

    def save_pretrained(self, folder: PathLike) -> Path:
        """Write tokenizer.json and tokenizer_config.json into `folder` (created if needed), so
        that ``transformers.AutoTokenizer.from_pretrained(folder)`` loads this tokenizer."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / TOKENIZER_FILE, self._json)
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "clean_up_tokenization_spaces": False,
        }
        if self.pad_token is not None:
            config["pad_token"] = self.pad_token
        # Says what the post-processor in tokenizer.json does, for versions that rebuild it.
        config["add_bos_token"] = bool(self.bos_ids)
        for key in ("model_max_length", "chat_template"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        atomic_write_json(root / CONFIG_FILE, config)
        return root

    # --- pickling (worker processes) ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # The backend pickles without its encode_special_tokens flag, and the compiled template
        # not at all: both are rebuilt.
        state = dict(self.__dict__)
        for key in ("_backend", "_with_specials", "_compiled", "_token_bytes"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._backend = Backend.from_str(self._json)
        self._backend.no_truncation()
        self._backend.no_padding()
        self._backend.encode_special_tokens = True
        self._with_specials = None
        self._compiled = None
        self._token_bytes = None

    def __repr__(self) -> str:
        return f"HFTokenizer({self.source!r}, vocab_size={self.vocab_size})"


_OPTIONS = (
    "bos_token",
    "eos_token",
    "pad_token",
    "chat_template",
    "eos_token_ids",
    "bos_token_id",
    "model_max_length",
    "extra_specials",
    "media_tokens",
    "source",
)
# Options applied to the tokenizer.json text that to_dict saves, so not saved themselves.
_APPLIED = ("extra_specials", "media_tokens")
