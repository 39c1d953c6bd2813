"""GPT-2 weights in other layouts <-> scratchgpt's GPTModel.

Three layouts are read:

- Hugging Face ``transformers`` GPT-2 (config.json + model.safetensors, as on the hub or written by
  ``save_pretrained``); :func:`save_hf_gpt2` writes it back.
- The book's ``torch.save(model.state_dict())`` files: the same parameter names as ours, plus the
  book's persistent ``att.mask`` buffers.
- OpenAI's original TensorFlow checkpoint (model.ckpt.* + hparams.json), whose variable names map
  one to one onto Hugging Face's.

Hugging Face stores GPT-2's linear layers as ``Conv1D`` with weights shaped (in, out), the
transpose of ``nn.Linear``'s (out, in), and the query/key/value projections as one fused
``c_attn`` (E, 3E) matrix; the mapping transposes and splits them (table in docs/weights.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.checkpoints import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    DictSource,
    SafetensorsSource,
    TensorMap,
    check_source,
    locate_checkpoint,
    materialize,
    meta_model,
    unwrap_model,
)
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, atomic_folder, read_json, write_json

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel

# GPT-2's "gelu_new" and PyTorch's tanh GELU are the same function (our GELU).
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
GPT2_EOT_ID = 50256


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def config_from_hf(raw: Mapping[str, Any], source: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 config.json; unsupported options are refused."""
    if "model_type" not in raw:
        raise CheckpointError(
            f"{source}: not a Hugging Face config (it has no model_type); for a scratchgpt "
            "checkpoint use scratchgpt.checkpoints.load_checkpoint"
        )
    if raw.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{source}: model_type is {raw.get('model_type')!r}; scratchgpt reads GPT-2 models "
            "(model_type 'gpt2') and its own checkpoints"
        )
    act = raw.get("activation_function", "gelu_new")
    if act not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation_function {act!r} is not supported; scratchgpt's GPT uses the "
            f"tanh GELU ({' or '.join(SUPPORTED_ACTIVATIONS)})"
        )
    n_embd = raw.get("n_embd", 768)
    n_inner = raw.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        raise CheckpointError(
            f"{source}: n_inner {n_inner} is not supported; scratchgpt's feed-forward layer is "
            f"4 * n_embd = {4 * n_embd} wide (set n_inner to null)"
        )
    unsupported = {
        "scale_attn_weights": (True, "attention scores are always scaled by 1/sqrt(head_dim)"),
        "scale_attn_by_inverse_layer_idx": (False, "no per-layer attention scaling"),
        "add_cross_attention": (False, "a decoder-only model has no cross-attention"),
    }
    for key, (want, why) in unsupported.items():
        if key in raw and bool(raw[key]) != want:
            raise CheckpointError(
                f"{source}: {key}={raw[key]!r} is not supported ({why}); it must be {want}"
            )
    context = raw.get("n_positions", raw.get("n_ctx", 1024))
    fields = dict(
        vocab_size=raw.get("vocab_size", 50257),
        context_length=context,
        emb_dim=n_embd,
        n_heads=raw.get("n_head", 12),
        n_layers=raw.get("n_layer", 12),
        drop_rate=float(raw.get("resid_pdrop", raw.get("embd_pdrop", 0.1))),
        qkv_bias=True,
        tie_weights=bool(raw.get("tie_word_embeddings", True)),
        attention="sdpa",
        init="gpt2",
        ln_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
    )
    return GPTConfig.from_dict(fields, source=source)


def hf_config_from_ours(cfg: GPTConfig, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A Hugging Face GPT-2 config.json for ``cfg``."""
    # GPT-2's end-of-text id only means something when the vocabulary reaches it.
    eot = GPT2_EOT_ID if cfg.vocab_size > GPT2_EOT_ID else None
    out: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,
        "layer_norm_epsilon": cfg.ln_eps,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
    }
    if dtype is not None:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out


# --------------------------------------------------------------------------------------------
# The key mapping
# --------------------------------------------------------------------------------------------


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.t()


def _cols_t(k: int, e: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Columns k*e..(k+1)*e of a fused (E, 3E) c_attn weight, as an (E, E) Linear weight."""
    return lambda x: x[:, k * e : (k + 1) * e].t()


def _part(k: int, e: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x[k * e : (k + 1) * e]


def hf_plan(cfg: GPTConfig, prefix: str = "transformer.") -> list[TensorMap]:
    """How each of our parameters is read from a Hugging Face GPT-2 state dict."""
    e, v, c = cfg.emb_dim, cfg.vocab_size, cfg.context_length
    p = prefix
    plan = [
        TensorMap("tok_emb.weight", f"{p}wte.weight", (v, e)),
        TensorMap("pos_emb.weight", f"{p}wpe.weight", (c, e)),
    ]
    for i in range(cfg.n_layers):
        h, b = f"{p}h.{i}.", f"trf_blocks.{i}."
        for k, name in enumerate(("W_query", "W_key", "W_value")):
            plan.append(
                TensorMap(
                    f"{b}att.{name}.weight", f"{h}attn.c_attn.weight", (e, 3 * e), _cols_t(k, e)
                )
            )
            if cfg.qkv_bias:
                plan.append(
                    TensorMap(f"{b}att.{name}.bias", f"{h}attn.c_attn.bias", (3 * e,), _part(k, e))
                )
        plan += [
            TensorMap(f"{b}att.out_proj.weight", f"{h}attn.c_proj.weight", (e, e), _t),
            TensorMap(f"{b}att.out_proj.bias", f"{h}attn.c_proj.bias", (e,)),
            TensorMap(f"{b}ff.layers.0.weight", f"{h}mlp.c_fc.weight", (e, 4 * e), _t),
            TensorMap(f"{b}ff.layers.0.bias", f"{h}mlp.c_fc.bias", (4 * e,)),
            TensorMap(f"{b}ff.layers.2.weight", f"{h}mlp.c_proj.weight", (4 * e, e), _t),
            TensorMap(f"{b}ff.layers.2.bias", f"{h}mlp.c_proj.bias", (e,)),
            TensorMap(f"{b}norm1.scale", f"{h}ln_1.weight", (e,)),
            TensorMap(f"{b}norm1.shift", f"{h}ln_1.bias", (e,)),
            TensorMap(f"{b}norm2.scale", f"{h}ln_2.weight", (e,)),
            TensorMap(f"{b}norm2.shift", f"{h}ln_2.bias", (e,)),
        ]
    plan += [
        TensorMap("final_norm.scale", f"{p}ln_f.weight", (e,)),
        TensorMap("final_norm.shift", f"{p}ln_f.bias", (e,)),
    ]
    if not cfg.tie_weights:
        plan.append(TensorMap("out_head.weight", "lm_head.weight", (v, e)))
    return plan


# HF's causal-mask buffers: older transformers versions saved them with the weights.
_HF_BUFFERS = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")


def _hf_ignore(tied: bool) -> Callable[[str], bool]:
    # With tied embeddings transformers uses wte as the head whatever lm_head.weight holds.
    return lambda name: bool(_HF_BUFFERS.match(name)) or (tied and name == "lm_head.weight")


def _hf_weight_files(weights: Path) -> list[Path]:
    if weights.name.endswith(".index.json"):
        index = read_json(weights)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{weights}: no 'weight_map' object; not a safetensors index")
        return [weights.parent / f for f in dict.fromkeys(weight_map.values())]
    return [weights]


def load_hf_gpt2(
    path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from a Hugging Face GPT-2 folder (or its model.safetensors file with
    config.json beside it), in eval mode. Keys may carry the ``transformer.`` prefix or not."""
    folder, weights, raw = locate_checkpoint(path)
    cfg = config_from_hf(raw, source=str(folder / CONFIG_FILE))
    # Transposed and split tensors are new tensors anyway: read each through its own map.
    source = SafetensorsSource(_hf_weight_files(weights), zero_copy=False)
    names = source.names()
    prefix = "transformer." if any(n.startswith("transformer.") for n in names) else ""
    return _load_with_plan(
        cfg, source, hf_plan(cfg, prefix), _hf_ignore(cfg.tie_weights), device, dtype
    )


def _load_with_plan(
    cfg: GPTConfig,
    source: Any,
    plan: list[TensorMap],
    ignore: Callable[[str], bool],
    device: torch.device | str,
    dtype: torch.dtype | None,
) -> GPTModel:
    pos_name = next(m.source for m in plan if m.target == "pos_emb.weight")
    check_source(
        source, plan, ignore=ignore, position_table=pos_name, context_length=cfg.context_length
    )
    return materialize(meta_model(cfg), source, plan, device=device, dtype=dtype)


def hf_state_dict(model: Any, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """Our model's weights under Hugging Face GPT-2 names and layouts (new CPU tensors).

    Without qkv_bias the fused c_attn bias is written as zeros, which computes the same thing.
    """
    import torch

    gpt = unwrap_model(model)
    cfg = gpt.cfg
    p = prefix

    def c(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to("cpu").contiguous()

    out = {f"{p}wte.weight": c(gpt.tok_emb.weight), f"{p}wpe.weight": c(gpt.pos_emb.weight)}
    for i, block in enumerate(gpt.trf_blocks):
        h, att = f"{p}h.{i}.", block.att
        qkv = (att.W_query, att.W_key, att.W_value)
        out[f"{h}attn.c_attn.weight"] = c(torch.cat([lin.weight.t() for lin in qkv], dim=1))
        if cfg.qkv_bias:
            out[f"{h}attn.c_attn.bias"] = c(torch.cat([lin.bias for lin in qkv]))
        else:
            w = att.W_query.weight
            out[f"{h}attn.c_attn.bias"] = torch.zeros(3 * cfg.emb_dim, dtype=w.dtype)
        out[f"{h}attn.c_proj.weight"] = c(att.out_proj.weight.t())
        out[f"{h}attn.c_proj.bias"] = c(att.out_proj.bias)
        out[f"{h}mlp.c_fc.weight"] = c(block.ff.layers[0].weight.t())
        out[f"{h}mlp.c_fc.bias"] = c(block.ff.layers[0].bias)
        out[f"{h}mlp.c_proj.weight"] = c(block.ff.layers[2].weight.t())
        out[f"{h}mlp.c_proj.bias"] = c(block.ff.layers[2].bias)
        out[f"{h}ln_1.weight"] = c(block.norm1.scale)
        out[f"{h}ln_1.bias"] = c(block.norm1.shift)
        out[f"{h}ln_2.weight"] = c(block.norm2.scale)
        out[f"{h}ln_2.bias"] = c(block.norm2.shift)
    out[f"{p}ln_f.weight"] = c(gpt.final_norm.scale)
    out[f"{p}ln_f.bias"] = c(gpt.final_norm.shift)
    if not cfg.tie_weights:
        out["lm_head.weight"] = c(gpt.out_head.weight)
    return out


def save_hf_gpt2(model: Any, dir: PathLike, *, overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors that ``transformers.GPT2LMHeadModel.from_pretrained``
    loads as is (atomic folder write; an existing folder needs ``overwrite=True``)."""
    from safetensors.torch import save_file

    gpt = unwrap_model(model)
    tensors = hf_state_dict(gpt)
    config = hf_config_from_ours(gpt.cfg, dtype=gpt.tok_emb.weight.dtype)
    with atomic_folder(dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(tmp / CONFIG_FILE, config)
    return Path(dir)


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
    from scratchgpt.checkpoints import own_plan

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
    return _load_with_plan(cfg, source, hf_plan(cfg, prefix=""), lambda n: False, device, dtype)


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
