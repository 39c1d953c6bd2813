"""Checkpoints: one folder holding a model's weights, its config, its tokenizer and a manifest.

Layout of a scratchgpt checkpoint folder::

    model.safetensors   parameters under the model's own names (out_head.weight left out when
                        the head is tied to tok_emb: safetensors refuses shared tensors)
    config.json         GPTConfig.to_dict(), nothing else, so GPTConfig.load reads it
    tokenizer.json      the tokenizer's own save() file (when one was given)
    scratchgpt.json     format name and version, scratchgpt version, free "metadata"

Folders are written atomically: built in a hidden sibling folder, flushed to disk, then renamed
into place, so a crash never leaves a half-written checkpoint where a good one was.

Loading builds the model on the meta device and assigns the tensors read from the safetensors
file, so the weights are never held twice: with the stored dtype on CPU the parameters are the
file's memory-mapped (copy-on-write) pages themselves; otherwise each tensor is converted one at
a time. :func:`load_checkpoint` also reads Hugging Face GPT-2 folders (see scratchgpt.interop).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt import __version__
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import (
    OVERWRITE_HINT as OVERWRITE_HINT,
)
from scratchgpt.fileio import (
    PathLike,
    atomic_folder,
    read_json,
    read_text,
    write_json,
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
# A training run folder keeps its checkpoints in CHECKPOINTS_DIR, with pointer files naming the
# newest complete one and the best by validation loss (written by scratchgpt.training.state).
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
BEST_FILE = "best"


@dataclass
class LoadedModel:
    """What :func:`load_checkpoint` returns."""

    model: GPTModel  # in eval mode
    tokenizer: Any  # a scratchgpt Tokenizer, or None when the checkpoint has none
    config: GPTConfig
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "scratchgpt"  # "scratchgpt" or "hf-gpt2"


# --------------------------------------------------------------------------------------------
# Reading tensors: sources and a mapping plan, shared by every format we load
# --------------------------------------------------------------------------------------------


def corrupt_error(path: PathLike, err: BaseException) -> CheckpointError:
    """The error for a safetensors file that safetensors cannot parse."""
    return CheckpointError(
        f"corrupt or truncated: {path} ({err}); the file is not a complete safetensors file. "
        "Download or save it again."
    )


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class SafetensorsSource:
    """Tensors in one or more safetensors files (several for sharded Hugging Face folders).

    With ``zero_copy`` every tensor comes from one memory map per file and is used as is; without
    it each tensor is read through its own short-lived map, so after it has been converted
    (transposed, cast, moved) the file's pages are released again.
    """

    def __init__(self, files: Iterable[PathLike], *, zero_copy: bool) -> None:
        from safetensors import SafetensorError, safe_open

        self._safe_open = safe_open
        self._errors: tuple[type[BaseException], ...] = (SafetensorError, OSError)
        self.zero_copy = zero_copy
        self.keep_views = zero_copy
        self._file_of: dict[str, Path] = {}
        self._shape: dict[str, tuple[int, ...]] = {}
        self._dtype: dict[str, str] = {}
        self._handles: dict[Path, Any] = {}
        for f in files:
            path = Path(f)
            if not path.is_file():
                raise CheckpointError(f"{path}: weights file not found")
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                        if name in self._file_of:
                            raise CheckpointError(
                                f"tensor {name} appears in both {self._file_of[name]} and {path}"
                            )
                        sl = handle.get_slice(name)
                        self._file_of[name] = path
                        self._shape[name] = tuple(sl.get_shape())
                        self._dtype[name] = sl.get_dtype()
            except self._errors as e:
                raise corrupt_error(path, e) from None

    def names(self) -> list[str]:
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape[name]

    def where(self, name: str) -> str:
        return str(self._file_of[name])

    def check_dtype(self, name: str) -> str | None:
        """None when ``name`` holds floating-point values, else its dtype."""
        dt = self._dtype[name]
        return None if dt in _FLOAT_DTYPES else dt

    def get(self, name: str) -> torch.Tensor:
        path = self._file_of[name]
        try:
            if self.zero_copy:
                handle = self._handles.get(path)
                if handle is None:
                    handle = self._handles[path] = self._safe_open(str(path), framework="pt")
                    handle.__enter__()
                return handle.get_tensor(name)
            with self._safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        except self._errors as e:
            raise corrupt_error(path, e) from None

    def close(self) -> None:
        # Tensors already handed out keep their memory map alive on their own.
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()


class DictSource:
    """Tensors (or numpy arrays) in a mapping; ``label`` says where they came from."""

    def __init__(
        self,
        tensors: Mapping[str, Any],
        label: str,
        *,
        keep_views: bool = False,
        display: Callable[[str], str] | None = None,
    ) -> None:
        self._tensors = tensors
        self.label = label
        # Tensors the caller still holds must not become our parameters (writes would alias).
        self.keep_views = keep_views
        self._display = display

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        # Lazy mappings (a TensorFlow checkpoint) can tell shapes without reading the values.
        shape_of = getattr(self._tensors, "shape_of", None)
        return tuple(shape_of(name)) if shape_of else tuple(self._tensors[name].shape)

    def where(self, name: str) -> str:
        return self.label

    def display(self, name: str) -> str:
        """The name to show in errors (the source's own spelling)."""
        return self._display(name) if self._display is not None else name

    def check_dtype(self, name: str) -> str | None:
        import torch

        is_float = getattr(self._tensors, "is_float", None)
        if is_float is not None:
            return None if is_float(name) else "a non-float type"
        t = self._tensors[name]
        if isinstance(t, torch.Tensor):
            return None if t.is_floating_point() else str(t.dtype)
        kind = getattr(getattr(t, "dtype", None), "kind", "f")
        return None if kind == "f" else str(t.dtype)

    def get(self, name: str) -> torch.Tensor:
        import numpy as np
        import torch

        t = self._tensors[name]
        if isinstance(t, torch.Tensor):
            return t.detach()
        return torch.from_numpy(np.ascontiguousarray(t))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class TensorMap:
    """One parameter of our model: which source tensor it comes from, and how."""

    target: str  # our parameter name
    source: str  # the tensor's name in the source
    source_shape: tuple[int, ...]  # the shape the config implies for the source tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: used as is


def _display(source: Any, name: str) -> str:
    return source.display(name) if hasattr(source, "display") else name


def _fmt_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_source(
    source: Any,
    plan: list[TensorMap],
    *,
    ignore: Callable[[str], bool] = lambda name: False,
    position_table: str | None = None,
    context_length: int | None = None,
    hint: str = "",
) -> None:
    """Raise CheckpointError unless ``source`` has exactly the tensors ``plan`` needs, in shape."""
    present = source.names()
    where = source.where(present[0]) if present else getattr(source, "label", "weights")
    needed: dict[str, tuple[int, ...]] = {}
    for m in plan:
        needed.setdefault(m.source, m.source_shape)
    missing = [n for n in needed if n not in set(present)]
    unexpected = [n for n in present if n not in needed and not ignore(n)]
    problems = []
    if missing:
        names = [_display(source, n) for n in missing]
        problems.append(
            f"{len(missing)} tensor(s) the config needs are missing: {_fmt_list(names)}"
        )
    if unexpected:
        names = [_display(source, n) for n in unexpected]
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_fmt_list(names)}")
    if problems:
        raise CheckpointError(
            f"{where}: the weights do not match the config: {'; '.join(problems)}. {hint}".rstrip()
        )
    for name, want in needed.items():
        got = source.shape(name)
        if got == want:
            bad_dtype = source.check_dtype(name)
            if bad_dtype is not None:
                raise CheckpointError(
                    f"{source.where(name)}: tensor {_display(source, name)} has dtype {bad_dtype}; "
                    "model weights must be floating point"
                )
            continue
        if name == position_table and got[1:] == want[1:]:
            raise CheckpointError(
                f"{source.where(name)}: the config asks for context_length {context_length}, but "
                f"the position table {_display(source, name)} has {got[0]} positions (shape "
                f"{tuple(got)}, expected {tuple(want)}); set context_length to {got[0]} in the "
                "config"
            )
        raise CheckpointError(
            f"{source.where(name)}: tensor {_display(source, name)} has shape {tuple(got)}, but "
            f"the config needs shape {tuple(want)}. {hint}".rstrip()
        )


def meta_model(cfg: GPTConfig) -> GPTModel:
    """A GPTModel whose tensors have shapes but no storage (costs no memory, no init time)."""
    import torch

    from scratchgpt.model import GPTModel

    with torch.device("meta"):
        return GPTModel(cfg)


def materialize(
    model: GPTModel,
    source: Any,
    plan: list[TensorMap],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """Fill a meta-device ``model`` with the tensors ``plan`` reads from ``source``.

    Tensors are converted one source tensor at a time and assigned (no second copy); the tied
    head is re-tied and the causal-mask buffers, which are not in the weights, are rebuilt.
    """
    import torch

    from scratchgpt.model.attention import MultiHeadAttention

    device = torch.device(device)
    by_source: dict[str, list[TensorMap]] = {}
    for m in plan:
        by_source.setdefault(m.source, []).append(m)
    tensors: dict[str, torch.Tensor] = {}
    try:
        for src_name, maps in by_source.items():
            src = source.get(src_name)
            for m in maps:
                t = m.transform(src) if m.transform is not None else src
                want = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
                out = t.to(device=device, dtype=want).contiguous()
                if (
                    not source.keep_views
                    and out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
                ):
                    # Still a view of the source: copy it so the source (or its map) can go.
                    out = out.clone()
                tensors[m.target] = out
            del src
    finally:
        source.close()

    result = model.load_state_dict(tensors, strict=False, assign=True)
    tied = model.cfg.tie_weights
    allowed_missing = {"out_head.weight"} if tied else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        # The plan is built from the model itself, so this is a bug, not bad input.
        raise RuntimeError(
            f"internal error: plan/model mismatch (missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys})"
        )
    if tied:
        model.out_head.weight = model.tok_emb.weight
    mask = None
    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and module.mask.is_meta:
            if mask is None:
                n = module.mask.shape[0]
                mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=1)
            # One shared read-only mask instead of one per layer.
            module.mask = mask
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"internal error: tensors left on the meta device: {leftover}")
    return model.eval()


def own_plan(model: GPTModel) -> list[TensorMap]:
    """Identity plan: every state-dict entry under its own name (the tied head left out)."""
    sd = model.state_dict()
    skip = {"out_head.weight"} if model.cfg.tie_weights else set()
    return [TensorMap(k, k, tuple(v.shape)) for k, v in sd.items() if k not in skip]


def _tie_hint(cfg: GPTConfig) -> str:
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
    stored = {source._dtype[n] for n in source.names()}
    if torch.device(device).type == "cpu" and (dtype is None or stored == {_st_dtype(dtype)}):
        source.zero_copy = source.keep_views = True
    has_head = "out_head.weight" in set(source.names())
    check_source(
        source,
        plan,
        position_table="pos_emb.weight",
        context_length=cfg.context_length,
        hint=_tie_hint(cfg) if has_head == cfg.tie_weights else "",
    )
    return materialize(model, source, plan, device=device, dtype=dtype)


def _st_dtype(dtype: torch.dtype) -> str:
    import torch

    return {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
    }.get(dtype, str(dtype))


# --------------------------------------------------------------------------------------------
# Saving and loading scratchgpt checkpoints
# --------------------------------------------------------------------------------------------


def unwrap_model(model: Any) -> GPTModel:
    """The GPTModel inside DDP/FSDP (``.module``) or torch.compile (``._orig_mod``) wrappers."""
    from scratchgpt.model import GPTModel

    inner = model
    for _ in range(4):
        if isinstance(inner, GPTModel):
            return inner
        inner = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
        if inner is None:
            break
    raise CheckpointError(f"expected a scratchgpt GPTModel, got {type(model).__name__}")


def _check_vocab(cfg_vocab: int, tokenizer: Any, where: str) -> None:
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
        _check_vocab(cfg.vocab_size, tokenizer, label or str(folder))
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
    write_json(folder / CONFIG_FILE, cfg.to_dict())
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)
    write_json(folder / MANIFEST_FILE, manifest)


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
    return data


def read_pointer(ckpt_root: Path, name: str) -> Path | None:
    """The checkpoint folder a pointer file (latest/best) in ``ckpt_root`` names, if any."""
    p = ckpt_root / name
    if not p.is_file():
        return None
    target = read_text(p, errors="replace").strip()
    if not target or "/" in target or "\\" in target or target.startswith("."):
        return None
    return ckpt_root / target


def resolve_checkpoint(path: PathLike, which: str = LATEST_FILE) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints`` folder, a ``latest``/``best``
    pointer file, or a checkpoint folder itself."""
    p = Path(path)
    if p.is_file() and p.name in (LATEST_FILE, BEST_FILE):
        target = read_pointer(p.parent, p.name)
        if target is None:
            raise CheckpointError(f"{p}: does not name a checkpoint folder")
        return target
    if (p / "model.safetensors").is_file():
        return p
    for root in (p / CHECKPOINTS_DIR, p):
        target = read_pointer(root, which)
        if target is not None:
            return target
    raise CheckpointError(
        f"{p}: no checkpoint found (expected a checkpoint folder, or a run folder with "
        f"{CHECKPOINTS_DIR}/{which})"
    )


_HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def locate_checkpoint(path: PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """(folder, weights path, raw config.json) for a checkpoint folder or a .safetensors file."""
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(".safetensors"):
            hint = (
                " For a state dict saved with torch.save (the book's .pth files) use "
                "scratchgpt.interop.load_book_state_dict."
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
            f"{folder}: missing {CONFIG_FILE}; a checkpoint needs config.json beside its weights "
            "(write one with GPTConfig.save, or save the model with save_checkpoint)"
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


def resolve_checkpoint_path(path: PathLike) -> Path:
    """What a user may name as a checkpoint, as a path: a known model name (gpt2-small, ...)
    becomes its download-cache folder, a training run folder its newest complete checkpoint."""
    p = Path(path)
    if not p.exists():
        from scratchgpt.interop.hub import resolve_model_path

        p = resolve_model_path(str(path))
    is_run_folder = (p / CHECKPOINTS_DIR).is_dir() or (p / LATEST_FILE).is_file()
    if p.is_dir() and not (p / CONFIG_FILE).is_file() and is_run_folder:
        p = resolve_checkpoint(p)
    return p


def load_checkpoint(
    path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a scratchgpt checkpoint folder, a Hugging Face GPT-2 folder, or a .safetensors file
    with config.json beside it (which one is told by config.json); a known model name such as
    ``gpt2-small`` is looked up in the download cache. The model is returned in eval mode."""
    p = resolve_checkpoint_path(path)
    folder, weights, raw = locate_checkpoint(p)

    if "model_type" in raw:
        from scratchgpt.interop.gpt2_weights import config_from_hf, load_hf_gpt2
        from scratchgpt.tokenizers import get_tokenizer

        cfg = config_from_hf(raw, source=str(folder / CONFIG_FILE))
        # HF folders often hold tokenizer files in HF's own formats; GPT-2's vocabulary is bundled.
        tokenizer = get_tokenizer("gpt2")
        _check_vocab(cfg.vocab_size, tokenizer, str(folder / CONFIG_FILE))
        model = load_hf_gpt2(p, device=device, dtype=dtype)
        return LoadedModel(model, tokenizer, model.cfg, p, {}, "hf-gpt2")

    cfg = GPTConfig.from_dict(raw, source=str(folder / CONFIG_FILE))
    manifest = read_manifest(folder)
    if manifest.get("metadata", {}).get("task") == "classify":
        # Its head has one output per label, not per token: a different model shape.
        raise CheckpointError(
            f"{folder}: is a classifier checkpoint (labels {manifest['metadata'].get('label_names')}); "
            "load it with scratchgpt.tasks.classify.load_classifier, or use "
            "`scratchgpt classify --checkpoint DIR TEXT...`"
        )
    tokenizer = None
    tok_path = folder / TOKENIZER_FILE
    if tok_path.is_file():
        from scratchgpt.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(tok_path)
        _check_vocab(cfg.vocab_size, tokenizer, str(folder))
    model = load_safetensors_model(weights, cfg, device=device, dtype=dtype)
    return LoadedModel(model, tokenizer, cfg, p, dict(manifest.get("metadata", {})), "scratchgpt")
