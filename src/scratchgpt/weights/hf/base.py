"""What every Hugging Face model family shares: the family description and the generic load
and save that use it.

A family (one file per family, e.g. :mod:`scratchgpt.weights.hf.gpt2`) is an :class:`HFFamily`:
how its config.json becomes a GPTConfig and back, which of its tensors fills each of our
parameters (a plan, see :mod:`scratchgpt.weights.tensors`), which of its tensors to skip, and
our weights under its names. :func:`load_hf` and :func:`save_hf` do the rest for any family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, atomic_folder, read_json, write_json
from scratchgpt.weights.native import CONFIG_FILE, WEIGHTS_FILE, locate_checkpoint, unwrap_model
from scratchgpt.weights.tensors import SafetensorsSource, TensorMap, load_with_plan

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel


@dataclass(frozen=True)
class HFFamily:
    """How one Hugging Face model family (one ``model_type``) maps onto GPTModel."""

    model_type: str  # config.json's "model_type"
    # The bundled tokenizer of its vocabulary (scratchgpt.tokenizers.get_tokenizer), or None:
    # the folder's own tokenizer.json.
    tokenizer: str | None
    # (config.json dict, where it came from) -> GPTConfig; refuses options we cannot build.
    config_from_hf: Callable[[Mapping[str, Any], str], GPTConfig]
    # (GPTConfig, dtype or None) -> config.json dict that transformers reads.
    hf_config: Callable[[GPTConfig, Any], dict[str, Any]]
    # (GPTConfig, tensor names in the files) -> how each of our parameters is read.
    plan: Callable[[GPTConfig, Sequence[str]], list[TensorMap]]
    # GPTConfig -> which tensors in the files are not weights we use (buffers, a tied head).
    ignore: Callable[[GPTConfig], Callable[[str], bool]]
    # GPTModel -> its weights under the family's names and layouts (new CPU tensors).
    state_dict: Callable[[Any], dict[str, Any]]


def check_exportable(cfg: GPTConfig) -> None:
    """Refuse what a Hugging Face language-model layout cannot hold."""
    if cfg.num_classes is not None:
        raise CheckpointError(
            f"the model has a classifier head ({cfg.num_classes} classes); a Hugging Face "
            "export holds a language model"
        )
    if cfg.lora is not None:
        raise CheckpointError(
            "the model has LoRA adapters; merge them into its weights first "
            "(scratchgpt.model.lora.merge_lora)"
        )
    if cfg.quantization is not None:
        raise CheckpointError(
            f"the model's weights are {cfg.quantization}-quantized; a Hugging Face export "
            "holds float weights: export the checkpoint before quantizing it"
        )


def renamed_state_dict(
    model: Any, plan: Callable[[GPTConfig, str], list[TensorMap]], prefix: str
) -> dict[str, torch.Tensor]:
    """Our model's weights under a family's names (new CPU tensors), for families whose
    mapping is a rename: ``plan(cfg, prefix)`` names each parameter's source (a tied head is
    the embedding table and is written once)."""
    inner = unwrap_model(model)
    check_exportable(inner.cfg)
    ours = inner.state_dict()
    names = {m.target: m.source for m in plan(inner.cfg, prefix)}
    return {theirs: ours[mine].detach().to("cpu").clone() for mine, theirs in names.items()}


def hf_weight_files(weights: Path) -> list[Path]:
    """The safetensors files of a folder: the one file, or every shard an index names."""
    if weights.name.endswith(".index.json"):
        index = read_json(weights)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{weights}: no 'weight_map' object; not a safetensors index")
        return [weights.parent / f for f in dict.fromkeys(weight_map.values())]
    return [weights]


def load_hf(
    family: HFFamily,
    path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from a Hugging Face folder of ``family`` (or its model.safetensors file with
    config.json beside it), in eval mode."""
    folder, weights, raw = locate_checkpoint(path)
    cfg = family.config_from_hf(raw, str(folder / CONFIG_FILE))
    # Transposed and split tensors are new tensors anyway: read each through its own map.
    source = SafetensorsSource(hf_weight_files(weights), zero_copy=False)
    plan = family.plan(cfg, source.names())
    return load_with_plan(cfg, source, plan, ignore=family.ignore(cfg), device=device, dtype=dtype)


def save_hf(
    family: HFFamily,
    model: Any,
    dir: PathLike,
    *,
    overwrite: bool = False,
    tokenizer: Any = None,
) -> Path:
    """Write config.json + model.safetensors in ``family``'s layout (atomic folder write; an
    existing folder needs ``overwrite=True``). A ``tokenizer`` that can write Hugging Face files
    (``save_pretrained``) is written too, with a generation_config.json naming its BOS and
    end-of-sequence ids, so ``transformers`` loads the folder as a complete model."""
    from safetensors.torch import save_file

    gpt = unwrap_model(model)
    tensors = family.state_dict(gpt)  # checks the model is exportable
    config = family.hf_config(gpt.cfg, gpt.tok_emb.weight.dtype)
    generation = _generation_config(tokenizer)
    config.update({k: v for k, v in generation.items() if k != "transformers_version"})
    with atomic_folder(dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(tmp / CONFIG_FILE, config)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "generation_config.json", generation)
    return Path(dir)


def _generation_config(tokenizer: Any) -> dict[str, Any]:
    """BOS / EOS / pad ids of a tokenizer, as generation_config.json and config.json spell them."""
    if tokenizer is None:
        return {}
    out: dict[str, Any] = {}
    bos = list(getattr(tokenizer, "bos_ids", []) or [])
    stops = list(getattr(tokenizer, "stop_ids", []) or [])
    if bos:
        out["bos_token_id"] = bos[0]
    if stops:
        out["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    pad = getattr(tokenizer, "pad_id", None)
    if pad is not None:
        out["pad_token_id"] = pad
    return out
