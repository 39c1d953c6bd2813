"""Reading tensors into a GPTModel: tensor sources, a mapping plan, and materialisation.

Every weight format goes through this one path. A *source* lists tensors (names, shapes, dtypes)
and hands them out one at a time: :class:`SafetensorsSource` (one or more safetensors files) or
:class:`DictSource` (a mapping of tensors or numpy arrays). A *plan* (:class:`TensorMap` per
parameter) says which source tensor fills which parameter and how it is transformed
(transposed, split). :func:`check_source` refuses a source that does not fit the plan with a
message naming the tensor and both shapes; :func:`materialize` fills a meta-device model built by
:func:`meta_model`, converting one tensor at a time, so the weights are never held twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel


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

    def dtype(self, name: str) -> str:
        """The stored dtype in safetensors' spelling ("F32", "BF16", ...)."""
        return self._dtype[name]

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
    integer: bool = False  # an int8 quantized weight, not a float one


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
    integer = {m.source for m in plan if m.integer}
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
            if bad_dtype is not None and name not in integer:
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
    """The model of ``cfg`` with tensors that have shapes but no storage (costs no memory, no
    init time)."""
    import torch

    from scratchgpt.model import build_model

    with torch.device("meta"):
        return build_model(cfg)


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
    return [
        TensorMap(k, k, tuple(v.shape), integer=not v.is_floating_point())
        for k, v in sd.items()
        if k not in skip
    ]


def load_with_plan(
    cfg: GPTConfig,
    source: Any,
    plan: list[TensorMap],
    *,
    ignore: Callable[[str], bool] = lambda name: False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    hint: str = "",
) -> GPTModel:
    """Check ``source`` against ``plan`` and materialise ``GPTModel(cfg)`` from it (eval mode)."""
    # Only GPT-2 has a position table (RoPE models compute positions).
    pos_name = next((m.source for m in plan if m.target == "pos_emb.weight"), None)
    check_source(
        source,
        plan,
        ignore=ignore,
        position_table=pos_name,
        context_length=cfg.context_length,
        hint=hint,
    )
    map_if_unchanged(source, plan, device=device, dtype=dtype)
    return materialize(meta_model(cfg), source, plan, device=device, dtype=dtype)


def map_if_unchanged(
    source: Any,
    plan: list[TensorMap],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> None:
    """Switch a :class:`SafetensorsSource` to zero copy when every tensor is used as stored (no
    transform, no cast, on the CPU): the parameters then are the files' memory maps (private:
    writes never reach the file), read from disk as they are first used, instead of copies."""
    import torch

    if not isinstance(source, SafetensorsSource) or torch.device(device).type != "cpu":
        return
    if any(m.transform is not None for m in plan):
        return
    stored = {source.dtype(m.source) for m in plan}
    if dtype is None or stored == {st_dtype(dtype)}:
        source.zero_copy = source.keep_views = True


def st_dtype(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype ("F32", "BF16", ...)."""
    import torch

    return {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
    }.get(dtype, str(dtype))
