"""Reading the tokenizer files of a Hugging Face model folder.

A folder holds ``tokenizer.json`` (the whole tokenizer, for the ``tokenizers`` library),
``tokenizer_config.json`` (which added tokens are BOS/EOS/padding, whether BOS is prepended, the
chat template), optionally ``chat_template.jinja`` (where newer ``transformers`` save the template)
and ``generation_config.json`` (the ids that end a generation). :func:`read_hf_folder` gathers
what :class:`~scratchgpt.tokenizers.hf.HFTokenizer` needs from them, checking each field.

Multimodal placeholders named in tokenizer_config.json (``image_token``, ``audio_token``,
``video_token``, at the top level or under ``extra_special_tokens``) are returned as
``media_tokens``: a text tokenizer leaves out those added beyond the vocabulary (Gemma 3's
``<image_soft_token>``).

``add_bos_token`` in tokenizer_config.json is not read: ``transformers`` (5.x) encodes with the
post-processor saved in tokenizer.json whatever the flag says (Llama 3's prepends
``<|begin_of_text|>``), and so do we; ``HFTokenizer.bos_ids`` reports what it prepends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratchgpt.errors import ScratchGPTError, TokenizerError
from scratchgpt.fileio import PathLike, read_json, read_text

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
GENERATION_FILE = "generation_config.json"


def _json_object(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise TokenizerError(
                f"{path.parent}: no {path.name}; a Hugging Face model folder keeps its tokenizer "
                f"there (folders with only tokenizer.model or vocab.json are not supported)"
            )
        return None
    try:
        data = read_json(path)
    except ScratchGPTError as e:
        raise TokenizerError(str(e)) from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def token_content(value: Any, field: str, source: str) -> str | None:
    """A special-token field: a string, ``{"content": ...}`` (an AddedToken) or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(
        f"{source}: field {field!r} is {value!r}; expected a token string, "
        '{"content": "..."} or null'
    )


def _optional_id(data: dict[str, Any], field: str, source: str) -> int | None:
    value = data.get(field)
    if value is not None and type(value) is not int:
        raise TokenizerError(f"{source}: field {field!r} is {value!r}; expected a token id or null")
    return value


def _chat_template(value: Any, source: str) -> str | None:
    """tokenizer_config's chat_template: a string, or a list of named ones (take "default")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        template = named.get("default")
        if template is None or isinstance(template, str):
            return template
    raise TokenizerError(
        f"{source}: field 'chat_template' must be a string or a list of "
        '{"name": ..., "template": ...} objects'
    )


def _id_list(value: Any, field: str, source: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(type(v) is int for v in values):
        raise TokenizerError(
            f"{source}: field {field!r} is {value!r}; expected an id or a list of ids"
        )
    return values


def _added_specials(config: dict[str, Any], source: str) -> list[tuple[int, str]]:
    """(id, content) of the tokens tokenizer_config.json's added_tokens_decoder flags special."""
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise TokenizerError(f"{source}: field 'added_tokens_decoder' must be an object")
    out = []
    for key, token in decoder.items():
        if (
            isinstance(token, dict)
            and token.get("special")
            and isinstance(token.get("content"), str)
        ):
            try:
                out.append((int(key), token["content"]))
            except ValueError:
                raise TokenizerError(
                    f"{source}: added_tokens_decoder key {key!r} is not a token id"
                ) from None
    return out


# Placeholders that a multimodal processor replaces with embeddings (tokenizer_config.json keys).
MEDIA_TOKEN_FIELDS = ("image_token", "audio_token", "video_token")


def _media_tokens(config: dict[str, Any], source: str) -> list[str]:
    extra = config.get("extra_special_tokens")
    places = [config, extra if isinstance(extra, dict) else {}]
    found = [
        token_content(place.get(field), field, source)
        for place in places
        for field in MEDIA_TOKEN_FIELDS
    ]
    return list(dict.fromkeys(t for t in found if t))


def read_hf_folder(folder: PathLike) -> dict[str, Any]:
    """The tokenizer of a Hugging Face model folder, as :meth:`HFTokenizer.from_dict` takes it."""
    root = Path(folder)
    if root.is_file() and root.name == TOKENIZER_FILE:
        root = root.parent
    if not root.is_dir():
        raise TokenizerError(
            f"{root}: not a folder; expected a Hugging Face model folder with {TOKENIZER_FILE}"
        )
    tokenizer = _json_object(root / TOKENIZER_FILE, required=True)
    config = _json_object(root / CONFIG_FILE, required=False) or {}
    generation = _json_object(root / GENERATION_FILE, required=False) or {}
    src = str(root / CONFIG_FILE)
    template = _chat_template(config.get("chat_template"), src)
    template_path = root / TEMPLATE_FILE
    if template_path.is_file():
        try:
            template = read_text(template_path)
        except ScratchGPTError as e:
            raise TokenizerError(str(e)) from None
    gen_src = str(root / GENERATION_FILE)
    bos_token_id = _optional_id(generation, "bos_token_id", gen_src)
    return {
        "tokenizer": tokenizer,
        "bos_token": token_content(config.get("bos_token"), "bos_token", src),
        "eos_token": token_content(config.get("eos_token"), "eos_token", src),
        "pad_token": token_content(config.get("pad_token"), "pad_token", src),
        "model_max_length": _model_max_length(config.get("model_max_length")),
        "chat_template": template,
        "eos_token_ids": _id_list(generation.get("eos_token_id"), "eos_token_id", gen_src),
        "bos_token_id": bos_token_id,
        "extra_specials": _added_specials(config, src),
        "media_tokens": _media_tokens(config, src),
        "source": str(root),
    }


def _model_max_length(value: Any) -> int | None:
    # transformers writes a huge sentinel (1e30) when the length is unknown.
    if type(value) is int and 0 < value < 10**12:
        return value
    return None


def parse_tokenizer_json(data: Any, source: str) -> str:
    """tokenizer.json content (parsed or text) as the text the ``tokenizers`` library reads."""
    if isinstance(data, str):
        return data
    if not isinstance(data, dict) or "model" not in data:
        raise TokenizerError(
            f"{source}: field 'tokenizer' must be the content of a tokenizer.json "
            "(an object with a 'model')"
        )
    return json.dumps(data, ensure_ascii=False)


def without_placeholders(text: str, media_tokens: Sequence[str]) -> str:
    """tokenizer.json `text` without the added tokens among `media_tokens` that are not in its
    model's vocabulary.

    Gemma 3's tokenizer adds ``<image_soft_token>`` at id 262144, one past its 262,144-row
    embedding table: ``transformers``' processor replaces it with image embeddings before the
    model sees it, and a text model has no row for it. Left in, it would make the tokenizer
    larger than the model (loading refuses a tokenizer with ids the model cannot embed); left
    out, its string is plain text, as for any unknown tag.
    """
    wanted = set(media_tokens)
    if not wanted or not any(t in text for t in wanted):
        return text
    spec = json.loads(text)
    vocab = spec.get("model", {}).get("vocab") or {}
    pieces = set(vocab) if isinstance(vocab, dict) else {p[0] for p in vocab if p}
    added = spec.get("added_tokens") or []
    kept = [t for t in added if not (t.get("content") in wanted and t["content"] not in pieces)]
    if len(kept) == len(added):
        return text
    spec["added_tokens"] = kept
    return json.dumps(spec, ensure_ascii=False)
