"""The one loader: anything a user may name as a model -> model + tokenizer + config + metadata.

:func:`load_model` accepts

- a scratchgpt checkpoint folder (or its ``.safetensors`` file with config.json beside it),
- a training run folder (its newest complete checkpoint), its ``checkpoints`` folder, or a
  ``latest`` / ``best`` pointer file,
- a Hugging Face folder of a family in :data:`scratchgpt.weights.hf.FAMILIES` (GPT-2, Llama 3.x,
  Qwen3; single or sharded safetensors),
- a known model name (``gpt2-small`` ..., looked up in the download cache).

config.json says which model the weights belong to, the whole architecture included: a
classifier head (``num_classes``) and LoRA adapters (``lora``) are built by ``GPTModel(cfg)``
like any other layer, and the adapters are merged into the weights unless ``merge_lora=False``.
Whether a caller can use the model it got (a command that generates text needs a language model,
not a classifier) is the caller's check: :func:`require_language_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.config import SHAPE_FIELDS, GPTConfig, LoRAConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike
from scratchgpt.weights.hf import HFFamily, hf_family, load_hf
from scratchgpt.weights.hub import resolve_model_path
from scratchgpt.weights.native import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    check_vocab,
    load_safetensors_model,
    locate_checkpoint,
    read_manifest,
    verify_weights,
)
from scratchgpt.weights.runs import POINTER_FILES, is_run_folder, resolve_checkpoint

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel

GPT2_VOCAB_SIZE = 50257


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    model: GPTModel  # in eval mode
    tokenizer: Any  # a scratchgpt Tokenizer, or None when the checkpoint has none
    config: GPTConfig  # model.cfg: the architecture of the returned model (adapters merged)
    path: Path  # the checkpoint folder (or file) that was read
    # The manifest's free metadata: task, label names, prompt style, training step ...
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "scratchgpt"  # "scratchgpt" or "hf-<model_type>" ("hf-gpt2")


@dataclass(frozen=True)
class ModelFiles:
    """What a named model is, read from its small files only (never its weights)."""

    path: Path  # the checkpoint folder or .safetensors file the name resolved to
    folder: Path
    weights: Path
    format: str  # "scratchgpt" or "hf-<model_type>"
    config: GPTConfig
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    tokenizer_file: Path | None  # scratchgpt checkpoints: tokenizer.json, when saved
    family: HFFamily | None = None  # Hugging Face folders: their model family


def resolve_path(name_or_path: PathLike) -> Path:
    """A checkpoint path for what a user named: a known model name (gpt2-small, ...) becomes its
    download-cache folder, a run folder (or ``checkpoints`` folder, or ``latest``/``best``
    pointer file) its checkpoint; anything else is returned as a path."""
    p = Path(name_or_path)
    if not p.exists():
        p = resolve_model_path(str(name_or_path))
    if (p.is_file() and p.name in POINTER_FILES) or is_run_folder(p):
        p = resolve_checkpoint(p)
    return p


def _legacy_architecture(cfg: GPTConfig, metadata: dict[str, Any]) -> GPTConfig:
    """Checkpoints written before config.json described the whole architecture kept a
    classifier's class count and the LoRA settings in the manifest's metadata only."""
    n = metadata.get("num_classes")
    if cfg.num_classes is None and isinstance(n, int) and "label_names" in metadata:
        cfg = cfg.replace(num_classes=n, tie_weights=False)
    lora = metadata.get("lora")
    if cfg.lora is None and isinstance(lora, dict) and "rank" in lora:
        cfg = cfg.replace(lora=LoRAConfig.from_dict(lora, "scratchgpt.json: metadata.lora"))
    return cfg


def inspect_model(name_or_path: PathLike) -> ModelFiles:
    """Resolve a name or path and read its config, manifest and tokenizer location (no
    weights): what ``scratchgpt info`` shows and :func:`load_model` builds."""
    p = resolve_path(name_or_path)
    folder, weights, raw = locate_checkpoint(p)
    source = str(folder / CONFIG_FILE)
    if "model_type" in raw:
        family = hf_family(raw, source)
        cfg = family.config_from_hf(raw, source)
        return ModelFiles(p, folder, weights, f"hf-{family.model_type}", cfg, {}, {}, None, family)
    cfg = GPTConfig.from_dict(raw, source=source, required=SHAPE_FIELDS)
    manifest = read_manifest(folder)
    metadata = dict(manifest.get("metadata", {}))
    tok = folder / TOKENIZER_FILE
    return ModelFiles(
        p, folder, weights, "scratchgpt", _legacy_architecture(cfg, metadata), manifest,
        metadata, tok if tok.is_file() else None,
    )  # fmt: skip


def hf_folder_tokenizer(files: ModelFiles) -> Any:
    """The tokenizer of a Hugging Face folder: GPT-2's bundled one for GPT-2 (its vocabulary is
    fixed and tiktoken is the fast path), else the folder's tokenizer.json (with its
    tokenizer_config.json and generation_config.json), or None when it has none."""
    family = files.family
    if family is not None and family.tokenizer is not None:
        from scratchgpt.tokenizers import get_tokenizer

        return get_tokenizer(family.tokenizer)
    if not (files.folder / "tokenizer.json").is_file():
        return None
    from scratchgpt.tokenizers.hf import HFTokenizer

    return HFTokenizer.from_folder(files.folder)


def load_model(
    name_or_path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    merge_lora: bool = True,
    verify: bool | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """Load any model a user may name (see the module docstring) in eval mode, with its
    tokenizer (a Hugging Face folder gets its family's bundled tokenizer), config and metadata.

    LoRA adapters are merged into the weights (``merge_lora=False`` keeps them as layers).
    A scratchgpt checkpoint's weights are checked against the checksum its manifest recorded
    (``verify=False`` skips that; None follows SCRATCHGPT_VERIFY_WEIGHTS, default on).
    ``quantize="int8"`` stores the blocks' linear layers and the head as int8 weights with
    per-channel scales for fast CPU inference (:mod:`scratchgpt.model.quantize`); a checkpoint
    saved quantized loads as it was, without it.
    """
    files = inspect_model(name_or_path)
    if files.family is not None:
        tokenizer = hf_folder_tokenizer(files)
        if tokenizer is not None:
            check_vocab(files.config.vocab_size, tokenizer, str(files.folder / CONFIG_FILE))
        model = _quantized(load_hf(files.family, files.path, device=device, dtype=dtype), quantize)
        return LoadedModel(model, tokenizer, model.cfg, files.path, {}, files.format)

    tokenizer = None
    if files.tokenizer_file is not None:
        from scratchgpt.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(files.tokenizer_file)
        check_vocab(files.config.vocab_size, tokenizer, str(files.folder))
    verify_weights(files.folder, files.manifest, files.weights, verify=verify)
    model = load_safetensors_model(files.weights, files.config, device=device, dtype=dtype)
    if merge_lora and files.config.lora is not None:
        from scratchgpt.model.lora import merge_lora as merge

        merge(model)  # the model's config drops its adapters with them
    model = _quantized(model, quantize)
    return LoadedModel(model.eval(), tokenizer, model.cfg, files.path, files.metadata, files.format)


def _quantized(model: Any, scheme: str | None) -> Any:
    """``model`` with its linear layers quantized as ``scheme`` says (None: as it is)."""
    if scheme is None or model.cfg.quantization == scheme:
        return model
    from scratchgpt.model.quantize import quantize_model

    if model.cfg.quantization is not None:
        raise CheckpointError(
            f"the checkpoint is already quantized ({model.cfg.quantization}); load it without "
            f"quantize={scheme!r}"
        )
    return quantize_model(model, scheme)


def require_language_model(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` itself when its head predicts tokens; CheckpointError for a classifier, naming
    the way to use one (for commands that generate text)."""
    n = loaded.config.num_classes
    if n is None:
        return loaded
    labels = loaded.metadata.get("label_names") or f"{n} classes"
    raise CheckpointError(
        f"{loaded.path}: is a classifier checkpoint (labels {labels}), whose head predicts "
        "labels, not tokens; load it with scratchgpt.load_classifier, or use "
        "`scratchgpt classify --checkpoint DIR TEXT...`"
    )


def with_default_tokenizer(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with the bundled GPT-2 tokenizer when it has none and its vocabulary is
    GPT-2's; CheckpointError when it has none and another vocabulary."""
    if loaded.tokenizer is None:
        if loaded.config.vocab_size != GPT2_VOCAB_SIZE:
            raise CheckpointError(
                f"{loaded.path}: no tokenizer.json and a vocabulary of "
                f"{loaded.config.vocab_size} ids (not GPT-2's); save the checkpoint with its "
                "tokenizer"
            )
        from scratchgpt.tokenizers import get_tokenizer

        loaded.tokenizer = get_tokenizer("gpt2")
    return loaded


def load_checkpoint(
    path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """:func:`load_model` for a language model: a classifier checkpoint is refused with a
    message naming the way to load it. The model is returned in eval mode."""
    return require_language_model(load_model(path, device=device, dtype=dtype, quantize=quantize))
