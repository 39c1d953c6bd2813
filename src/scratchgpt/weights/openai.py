"""GPT-2 weights in the book's and OpenAI's own layouts.

- The book's ``torch.save(model.state_dict())`` files: the same parameter names as ours, plus the
  book's persistent ``att.mask`` buffers (a chapter-6 classifier loads too, with a config that
  has ``num_classes``).
- OpenAI's original TensorFlow checkpoint (model.ckpt.* + hparams.json), whose variable names map
  one to one onto Hugging Face's (so the GPT-2 plan of scratchgpt.weights.hf.gpt2 reads them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, read_json
from scratchgpt.weights.hf.gpt2 import hf_plan
from scratchgpt.weights.tensors import (
    DictSource,
    check_source,
    load_with_plan,
    materialize,
    meta_model,
    own_plan,
)

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel


# --------------------------------------------------------------------------------------------
# The book's state dicts
# --------------------------------------------------------------------------------------------

_BOOK_MASK = re.compile(r"^trf_blocks\.\d+\.att\.mask$")


def load_book_state_dict(
    path_or_dict: PathLike | Mapping[str, Any],
    cfg: GPTConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from the book's ``torch.save(model.state_dict())`` file (or such a dict).

    Our parameter names are the book's, so this is a key-for-key load; the book's ``att.mask``
    buffers are dropped (ours are rebuilt). Files are read with ``weights_only=True``.
    """
    import torch

    if isinstance(path_or_dict, Mapping):
        source = DictSource(path_or_dict, "state dict")
    else:
        p = Path(path_or_dict)
        if not p.is_file():
            raise CheckpointError(f"{p}: state-dict file not found")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            try:  # mmap needs the zip format; the legacy format is read without it
                sd = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"corrupt or truncated: {p} ({e})") from None
        except Exception as e:
            raise CheckpointError(
                f"{p}: cannot read it as a weights-only state dict ({e})"
            ) from None
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{p}: holds a {type(sd).__name__}, expected a state dict")
        # The loaded dict is ours alone, so its tensors can become the parameters as they are.
        source = DictSource(sd, str(p), keep_views=True)
    model = meta_model(cfg)
    plan = own_plan(model)

    def ignore(name: str) -> bool:
        return bool(_BOOK_MASK.match(name)) or (cfg.tie_weights and name == "out_head.weight")

    check_source(
        source,
        plan,
        ignore=ignore,
        position_table="pos_emb.weight",
        context_length=cfg.context_length,
    )
    return materialize(model, source, plan, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# OpenAI's TensorFlow checkpoint
# --------------------------------------------------------------------------------------------

_OPENAI_LAYER_NAMES = {
    "attn/c_attn/w": "attn.c_attn.weight",
    "attn/c_attn/b": "attn.c_attn.bias",
    "attn/c_proj/w": "attn.c_proj.weight",
    "attn/c_proj/b": "attn.c_proj.bias",
    "mlp/c_fc/w": "mlp.c_fc.weight",
    "mlp/c_fc/b": "mlp.c_fc.bias",
    "mlp/c_proj/w": "mlp.c_proj.weight",
    "mlp/c_proj/b": "mlp.c_proj.bias",
    "ln_1/g": "ln_1.weight",
    "ln_1/b": "ln_1.bias",
    "ln_2/g": "ln_2.weight",
    "ln_2/b": "ln_2.bias",
}
_OPENAI_TOP_NAMES = {
    "model/wte": "wte.weight",
    "model/wpe": "wpe.weight",
    "model/ln_f/g": "ln_f.weight",
    "model/ln_f/b": "ln_f.bias",
}
_OPENAI_LAYER = re.compile(r"^model/h(\d+)/(.+)$")
_HF_LAYER = re.compile(r"^h\.(\d+)\.(.+)$")
_HF_TO_OPENAI_LAYER = {v: k for k, v in _OPENAI_LAYER_NAMES.items()}
_HF_TO_OPENAI_TOP = {v: k for k, v in _OPENAI_TOP_NAMES.items()}


def openai_to_hf_name(name: str) -> str | None:
    """Hugging Face's name for an OpenAI variable ("model/h0/attn/c_attn/w" ->
    "h.0.attn.c_attn.weight"), or None for a variable GPT-2 does not use."""
    if name in _OPENAI_TOP_NAMES:
        return _OPENAI_TOP_NAMES[name]
    m = _OPENAI_LAYER.match(name)
    if m and m.group(2) in _OPENAI_LAYER_NAMES:
        return f"h.{m.group(1)}.{_OPENAI_LAYER_NAMES[m.group(2)]}"
    return None


def hf_to_openai_name(name: str) -> str:
    """OpenAI's name for a Hugging Face GPT-2 tensor name (the name itself if there is none)."""
    if name in _HF_TO_OPENAI_TOP:
        return _HF_TO_OPENAI_TOP[name]
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _HF_TO_OPENAI_LAYER:
        return f"model/h{m.group(1)}/{_HF_TO_OPENAI_LAYER[m.group(2)]}"
    return name


class _OpenAIParams(Mapping):
    """OpenAI variables under Hugging Face names; Conv1D weights lose their leading 1 axis."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = params
        self.hf_to_openai: dict[str, str] = {}
        for name in params:
            hf = openai_to_hf_name(name)
            self.hf_to_openai[hf if hf is not None else name] = name

    def __getitem__(self, key: str) -> Any:
        value = self._params[self.hf_to_openai[key]]
        if len(getattr(value, "shape", ())) == 3 and value.shape[0] == 1:
            value = value[0]
        return value

    def shape_of(self, key: str) -> tuple[int, ...]:
        name = self.hf_to_openai[key]
        get_shape = getattr(self._params, "shape_of", None)
        shape = tuple(get_shape(name) if get_shape else self._params[name].shape)
        return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape

    def is_float(self, key: str) -> bool:
        name = self.hf_to_openai[key]
        is_float = getattr(self._params, "is_float", None)
        if is_float is not None:
            return is_float(name)
        return DictSource({name: self._params[name]}, "").check_dtype(name) is None

    def __iter__(self) -> Iterator[str]:
        return iter(self.hf_to_openai)

    def __len__(self) -> int:
        return len(self.hf_to_openai)


def _hparam(hparams: Mapping[str, Any], key: str) -> int:
    if key not in hparams:
        raise CheckpointError(
            f"hparams.json: missing {key!r} (expected n_vocab, n_ctx, n_embd, n_head, n_layer)"
        )
    return hparams[key]


def gpt2_from_openai_params(
    params: Mapping[str, Any],
    hparams: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from OpenAI's GPT-2 variables ({"model/h0/attn/c_attn/w": array (1, E, 3E),
    ...}) and hparams.json ({"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"})."""
    cfg = GPTConfig.from_dict(
        dict(
            vocab_size=_hparam(hparams, "n_vocab"),
            context_length=_hparam(hparams, "n_ctx"),
            emb_dim=_hparam(hparams, "n_embd"),
            n_heads=_hparam(hparams, "n_head"),
            n_layers=_hparam(hparams, "n_layer"),
            drop_rate=0.1,
            qkv_bias=True,
            tie_weights=True,
            attention="sdpa",
            init="gpt2",
        ),
        source="hparams.json",
    )
    mapped = _OpenAIParams(params)
    source = DictSource(
        mapped,
        "OpenAI checkpoint",
        display=lambda n: mapped.hf_to_openai.get(n) or hf_to_openai_name(n),
    )
    return load_with_plan(cfg, source, hf_plan(cfg, prefix=""), device=device, dtype=dtype)


class _TFCheckpointVariables(Mapping):
    """A TensorFlow checkpoint's variables, each read only when asked for (saves memory)."""

    def __init__(self, tf: Any, ckpt: str) -> None:
        self._reader = tf.train.load_checkpoint(ckpt)
        self._shapes = self._reader.get_variable_to_shape_map()
        self._dtypes = self._reader.get_variable_to_dtype_map()

    def __getitem__(self, key: str) -> Any:
        return self._reader.get_tensor(key)

    def shape_of(self, key: str) -> tuple[int, ...]:
        return tuple(self._shapes[key])

    def is_float(self, key: str) -> bool:
        return bool(self._dtypes[key].is_floating)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def load_openai_tf_gpt2(
    dir: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from OpenAI's original GPT-2 folder (hparams.json, checkpoint, model.ckpt.*).

    Needs TensorFlow (``pip install 'scratchgpt[tf]'``), only to read the checkpoint format;
    Hugging Face's safetensors copies of the same weights need nothing extra.
    """
    folder = Path(dir)
    if not (folder / "hparams.json").is_file():
        raise CheckpointError(f"{folder}: missing hparams.json; expected OpenAI's GPT-2 folder")
    try:
        import tensorflow as tf
    except ImportError:
        raise CheckpointError(
            "reading OpenAI's TensorFlow checkpoint needs TensorFlow: pip install "
            "'scratchgpt[tf]'. Or use the same weights in safetensors form: "
            "`scratchgpt download gpt2-small` (or any Hugging Face GPT-2 folder)."
        ) from None
    ckpt = tf.train.latest_checkpoint(str(folder))
    if ckpt is None:
        raise CheckpointError(f"{folder}: no TensorFlow checkpoint (model.ckpt.*) found")
    hparams = read_json(folder / "hparams.json")
    return gpt2_from_openai_params(
        _TFCheckpointVariables(tf, ckpt), hparams, device=device, dtype=dtype
    )
