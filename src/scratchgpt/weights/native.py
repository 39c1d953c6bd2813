"""scratchgpt's checkpoint folder: one folder with a model's weights, config, tokenizer and a
manifest.

Layout::

    model.safetensors   parameters under the model's own names (out_head.weight left out when
                        the head is tied to tok_emb: safetensors refuses shared tensors)
    config.json         GPTConfig.to_dict(), nothing else, so GPTConfig.load reads it; it
                        describes the whole architecture (a classifier head, LoRA adapters)
    tokenizer.json      the tokenizer's own save() file (when one was given)
    scratchgpt.json     format name and version, scratchgpt version, free "metadata", and the
                        size and SHA-256 of each weight file ("files"), checked on load

Folders are written atomically (:func:`scratchgpt.fileio.atomic_folder`). Loading builds the
model on the meta device and assigns the tensors read from the safetensors file, so the weights
are never held twice: with the stored dtype on CPU the parameters are the file's memory-mapped
(copy-on-write) pages themselves; otherwise each tensor is converted one at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt import __version__
from scratchgpt.config import GPTConfig
from scratchgpt.errors import Advice, CheckpointError
from scratchgpt.fileio import PathLike, atomic_folder, default_permissions, read_json, write_json
from scratchgpt.weights.tensors import (
    DictSource,
    SafetensorsSource,
    check_source,
    materialize,
    meta_model,
    own_plan,
    st_dtype,
)

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel

FORMAT = "scratchgpt-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "scratchgpt.json"
# Set to 0 to skip the weight-file checksums on load (the CLI's --no-verify sets it).
VERIFY_ENV = "SCRATCHGPT_VERIFY_WEIGHTS"
VERIFY_HINT = "load it anyway with verify=False (CLI: --no-verify)"


def unwrap_model(model: Any) -> GPTModel:
    """The scratchgpt model (any family) inside DDP/FSDP (``.module``) or torch.compile
    (``._orig_mod``) wrappers."""
    from scratchgpt.model import MODEL_TYPES

    inner = model
    for _ in range(4):
        if isinstance(inner, MODEL_TYPES):
            return inner
        inner = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
        if inner is None:
            break
    raise CheckpointError(f"expected a scratchgpt GPTModel, got {type(model).__name__}")


def check_vocab(cfg_vocab: int, tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer with token ids the model has no embedding for."""
    tok_vocab = int(tokenizer.vocab_size)
    if cfg_vocab < tok_vocab:
        raise CheckpointError(
            f"{where}: the model's vocab_size ({cfg_vocab}) is smaller than the tokenizer's "
            f"vocabulary ({tok_vocab} tokens), so some token ids have no embedding; use a model "
            f"with vocab_size >= {tok_vocab} or the tokenizer the model was trained with"
        )


def save_checkpoint(
    dir: PathLike,
    model: Any,
    tokenizer: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (and ``tokenizer``) as a checkpoint folder at ``dir``, atomically."""
    with atomic_folder(dir, overwrite=overwrite) as tmp:
        write_checkpoint_files(tmp, model, tokenizer, metadata=metadata, label=str(dir))
    return Path(dir)


def write_checkpoint_files(
    folder: Path,
    model: Any,
    tokenizer: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> None:
    """Write a checkpoint's files into ``folder`` (which the caller makes atomic with
    :func:`scratchgpt.fileio.atomic_folder`, so each file is written once, not twice)."""
    from safetensors.torch import save_file

    gpt = unwrap_model(model)
    cfg = gpt.cfg
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {e}") from None
    if tokenizer is not None:
        check_vocab(cfg.vocab_size, tokenizer, label or str(folder))
    skip = {"out_head.weight"} if cfg.tie_weights else set()
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in gpt.state_dict().items() if k not in skip
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchgpt_version": __version__,
        "tokenizer": TOKENIZER_FILE if tokenizer is not None else None,
        "metadata": meta,
    }
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    default_permissions(folder / WEIGHTS_FILE)
    # A few bytes of garbage inside the tensor data would load and generate nonsense: the
    # manifest records what was written, and loading checks it (see verify_weights).
    manifest["files"] = {WEIGHTS_FILE: file_digest(folder / WEIGHTS_FILE)}
    write_json(folder / CONFIG_FILE, cfg.to_dict())
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)
    write_json(folder / MANIFEST_FILE, manifest)


def file_digest(path: PathLike) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of a file, read in 8 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def verify_default() -> bool:
    """Whether loading checks weight checksums when the caller does not say: yes, unless the
    environment variable SCRATCHGPT_VERIFY_WEIGHTS is 0/false/no/off."""
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def verify_weights(
    folder: PathLike, manifest: Mapping[str, Any], weights: PathLike, *, verify: bool | None = None
) -> None:
    """Check ``weights`` against the size and SHA-256 the manifest recorded when it was saved.

    Checkpoints written before checksums were recorded (no "files" entry) pass unchecked.
    ``verify=False`` (or SCRATCHGPT_VERIFY_WEIGHTS=0 when ``verify`` is None) skips the check,
    which reads the whole file once (about a third of a second for GPT-2 small).
    """
    if not (verify_default() if verify is None else verify):
        return
    recorded = manifest.get("files")
    w = Path(weights)
    if not isinstance(recorded, dict) or w.name not in recorded:
        return
    source = Path(folder) / MANIFEST_FILE
    expected = recorded[w.name]
    if not (
        isinstance(expected, dict)
        and isinstance(expected.get("bytes"), int)
        and isinstance(expected.get("sha256"), str)
    ):
        raise CheckpointError(
            f"{source}: field files.{w.name} must be an object with 'bytes' and 'sha256'"
        )
    size = w.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(
            f"{w}: {size} bytes, but {MANIFEST_FILE} recorded {expected['bytes']} when it was "
            f"saved: the file is truncated or was replaced; restore it, or {VERIFY_HINT}"
        )
    actual = file_digest(w)["sha256"]
    if actual != expected["sha256"]:
        raise CheckpointError(
            f"{w}: contents do not match the SHA-256 recorded in {MANIFEST_FILE} when it was "
            f"saved (the file is corrupt or was changed); restore it, or {VERIFY_HINT}"
        )


def read_manifest(folder: PathLike) -> dict[str, Any]:
    """The folder's scratchgpt.json (empty dict if it has none), checked for format/version."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a scratchgpt checkpoint manifest (format != {FORMAT!r})"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this scratchgpt "
            f"understands ({FORMAT_VERSION}); upgrade scratchgpt"
        )
    if not isinstance(data.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: field 'metadata' must be a JSON object")
    if not isinstance(data.get("files", {}), dict):
        raise CheckpointError(f"{path}: field 'files' must be a JSON object")
    return data


def tie_hint(cfg: GPTConfig) -> str:
    if cfg.tie_weights:
        return (
            "(config.json has tie_weights true, so out_head.weight must not be in the file; "
            "if the file has its own head, set tie_weights to false)"
        )
    return (
        "(config.json has tie_weights false, so out_head.weight must be in the file; "
        "if the head is shared with tok_emb, set tie_weights to true)"
    )


def load_safetensors_model(
    weights: PathLike,
    cfg: GPTConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel for ``cfg`` with the weights of a safetensors file under our own names."""
    import torch

    model = meta_model(cfg)
    plan = own_plan(model)
    source = SafetensorsSource([weights], zero_copy=False)
    # Zero copy only when the file's tensors can be used as they are.
    stored = {source.dtype(n) for n in source.names()}
    if torch.device(device).type == "cpu" and (dtype is None or stored == {st_dtype(dtype)}):
        source.zero_copy = source.keep_views = True
    has_head = "out_head.weight" in set(source.names())
    check_source(
        source,
        plan,
        position_table="pos_emb.weight",
        context_length=cfg.context_length,
        hint=tie_hint(cfg) if has_head == cfg.tie_weights else "",
    )
    return materialize(model, source, plan, device=device, dtype=dtype)


def locate_checkpoint(path: PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """(folder, weights path, raw config.json) for a checkpoint folder or a .safetensors file."""
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(".safetensors"):
            hint = (
                " For a state dict saved with torch.save (the book's .pth files) use "
                "scratchgpt.weights.load_book_state_dict."
                if p.suffix in (".pth", ".pt", ".bin")
                else ""
            )
            raise CheckpointError(
                f"{p}: expected a checkpoint folder or a .safetensors file with config.json "
                f"beside it.{hint}"
            )
        folder, weights = p.parent, p
    elif p.is_dir():
        folder = p
        weights = p / WEIGHTS_FILE
    else:
        raise CheckpointError(f"{p}: no such file or folder")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder}: missing {CONFIG_FILE}; a checkpoint needs config.json beside its weights",
            Advice("write one with GPTConfig.save, or save the model with save_checkpoint"),
        )
    raw = read_json(config_path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    if p.is_dir() and not weights.is_file():
        index = p / "model.safetensors.index.json"
        if "model_type" in raw and index.is_file():
            weights = index
        elif (p / "pytorch_model.bin").is_file():
            raise CheckpointError(
                f"{p}: has pytorch_model.bin (a pickle file, which scratchgpt never loads) but no "
                "model.safetensors; convert it with transformers: "
                f"GPT2LMHeadModel.from_pretrained({str(p)!r}).save_pretrained(OUT)"
            )
        else:
            raise CheckpointError(f"{p}: missing {WEIGHTS_FILE} (the model's weights)")
    return folder, weights, raw


def load_weights_into(
    model: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: PathLike
) -> None:
    """Copy a checkpoint's tensors into an existing ``model`` (resuming: the optimizer keeps its
    parameters). The tensors must be exactly the model's own (a tied head may be absent);
    otherwise CheckpointError names the missing, unexpected or mis-shaped tensors."""
    gpt = unwrap_model(model)
    tied = gpt.cfg.tie_weights
    check_source(
        DictSource(weights, str(source)),
        own_plan(gpt),
        ignore=lambda name: tied and name == "out_head.weight",
        position_table="pos_emb.weight",
        context_length=gpt.cfg.context_length,
    )
    import torch

    with torch.no_grad():
        gpt.load_state_dict(weights, strict=False)
