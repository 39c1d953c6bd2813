"""Instruction fine-tuning (the book's chapter 7) on the shared training loop.

``finetune_instruct(config, out_dir)`` is the whole job: a base model (a scratchgpt checkpoint or
GPT-2 weights), instruction records split 85/10/5 in file order, ``InstructTask`` (next-token
loss that ignores padding, and optionally the prompt), the loop with the book's defaults (AdamW
5e-5, weight decay 0.1, 2 epochs, batch 8), then greedy responses for the test split written to
``responses.json`` in the run folder. The prompt style goes into every checkpoint's metadata, so
``respond`` and ``chat`` format prompts the way the model was trained.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import (
    DEFAULT_STYLE,
    IGNORE_INDEX,
    PAD_TOKEN_ID,
    InstructionCollator,
    InstructionDataset,
    extract_response,
    get_prompt_style,
    load_instruction_records,
    split_records,
)
from scratchgpt.errors import CheckpointError, ConfigError, DataError
from scratchgpt.fileio import PathLike, atomic_write_json, read_json
from scratchgpt.training.config import BOOK_CH7_TRAIN, TrainConfig, config_from_dict
from scratchgpt.training.distributed import print0
from scratchgpt.training.loop import TrainResult, train
from scratchgpt.training.run_dir import prepare_run_dir
from scratchgpt.training.task import PERPLEXITY_KEY, Task, next_token_loss, perplexity

INSTRUCT_CONFIG_FILE = "instruct_config.json"
RESPONSES_FILE = "responses.json"
GPT2_VOCAB_SIZE = 50257

# The book's section 7.6 settings (kept with the other loop presets, so the CLI can show them
# without importing torch).
BOOK_TRAIN_DEFAULTS = BOOK_CH7_TRAIN


def book_train_config(**overrides: Any) -> TrainConfig:
    """The loop settings of the book's chapter 7 (with ``overrides``)."""
    return TrainConfig(**{**BOOK_TRAIN_DEFAULTS, **overrides})


@dataclass
class InstructConfig:
    """Everything an instruction fine-tuning run needs besides its output folder."""

    checkpoint: str | None = None  # scratchgpt checkpoint / run folder / HF GPT-2 folder
    gpt2: str | None = None  # a GPT-2 name in the download cache (gpt2-small, gpt2-medium, ...)
    data: str | None = None  # JSON/JSONL file; None: the bundled 1,100 records
    fields: dict[str, str] = field(default_factory=dict)  # our name -> the file's field name
    style: str = DEFAULT_STYLE
    train_frac: float = 0.85
    test_frac: float = 0.10
    mask_prompt: bool = False  # the book's main text trains on the prompt too (exercise 7.2: mask)
    allowed_max_length: int | None = None  # None: the model's context length
    response_tokens: int = 256
    response_batch_size: int = 8
    responses: bool = True  # generate responses.json for the test split after training
    lora_rank: int = 0  # 0: full fine-tuning
    lora_alpha: float = 16.0
    train: TrainConfig = field(default_factory=book_train_config)

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.gpt2 is None):
            raise ConfigError("give exactly one base model: --checkpoint DIR or --gpt2 NAME")
        get_prompt_style(self.style)
        if self.response_tokens < 1 or self.response_batch_size < 1:
            raise ConfigError("response_tokens and response_batch_size must be >= 1")
        if self.allowed_max_length is not None and self.allowed_max_length < 2:
            raise ConfigError(f"allowed_max_length must be >= 2, got {self.allowed_max_length}")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be >= 0, got {self.lora_rank}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (``instruct_config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> InstructConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}")
        d["train"] = config_from_dict(TrainConfig, d.get("train") or {}, f"{source}: train")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# The task


def calc_loss_batch(
    input_batch: torch.Tensor, target_batch: torch.Tensor, model: nn.Module
) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``-100`` (padding, masked prompt)."""
    return next_token_loss(model, input_batch, target_batch, IGNORE_INDEX)


class InstructTask(Task):
    """Next-token loss on instruction examples; the sample answers a fixed validation record."""

    name = "instruct"

    def __init__(
        self,
        tokenizer: Any = None,
        style: str = DEFAULT_STYLE,
        sample_entry: Mapping[str, str] | None = None,
        sample_tokens: int = 50,
    ) -> None:
        self.tokenizer = tokenizer
        self.style = get_prompt_style(style)
        self.sample_entry = sample_entry
        self.sample_tokens = sample_tokens

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return calc_loss_batch(inputs, targets, model)

    def count_tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        # Token-weighted, so batches with much padding do not count as much as full ones.
        total, count = 0.0, 0
        for inputs, targets in batches:
            n = int((targets != IGNORE_INDEX).sum())
            if n == 0:
                continue
            total += float(calc_loss_batch(inputs, targets, model)) * n
            count += n
        if count == 0:
            return {}
        mean = total / count
        return {"loss": mean, PERPLEXITY_KEY: perplexity(mean)}

    def sample(self, model: nn.Module) -> str | None:
        if self.tokenizer is None or self.sample_entry is None or self.sample_tokens <= 0:
            return None
        prompt = self.style.prompt(self.sample_entry)
        from scratchgpt.generation import generate_text

        text = generate_text(
            model, self.tokenizer, prompt, max_new_tokens=self.sample_tokens, temperature=0.0
        )
        return prompt + str(text)


# ---------------------------------------------------------------------------------------------
# Models, responses


def load_base_model(checkpoint: str | None = None, gpt2: str | None = None) -> Any:
    """``LoadedModel`` of a checkpoint folder or a cached GPT-2 name, with a tokenizer."""
    from scratchgpt.checkpoints import load_checkpoint

    loaded = load_checkpoint(checkpoint if checkpoint is not None else str(gpt2))
    if loaded.tokenizer is None:
        if loaded.config.vocab_size != GPT2_VOCAB_SIZE:
            raise CheckpointError(
                f"{loaded.path}: no tokenizer.json and a vocabulary of "
                f"{loaded.config.vocab_size} ids (not GPT-2's); save the checkpoint with its tokenizer"
            )
        from scratchgpt.tokenizers import get_tokenizer

        loaded.tokenizer = get_tokenizer("gpt2")
    return loaded


def checkpoint_style(metadata: Mapping[str, Any], override: str | None = None) -> str:
    """The prompt style to use with a checkpoint: ``override``, else its metadata's, else alpaca."""
    name = override or metadata.get("prompt_style") or DEFAULT_STYLE
    return get_prompt_style(name).name


def pad_id_for(tokenizer: Any) -> int:
    """The padding id: the tokenizer's end-of-text token (GPT-2: 50256)."""
    eot = getattr(tokenizer, "eot_id", None)
    return int(eot) if eot is not None else PAD_TOKEN_ID


def generate_responses(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, str]],
    style: str = DEFAULT_STYLE,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Each record with a ``model_response``: greedy, stopping at <|endoftext|> or the next
    user turn, prompt and response marker removed (the book's section 7.7)."""
    from tqdm import tqdm

    from scratchgpt.generation import generate_text

    st = get_prompt_style(style)
    out: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(records),
        desc="responses",
        unit="rec",
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                chunk = records[start : start + batch_size]
                prompts = [st.prompt(e) for e in chunk]
                texts = generate_text(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    temperature=0.0,
                    stop_strings=[st.turn_start],
                )
                for entry, text in zip(chunk, texts):
                    out.append({**entry, "model_response": extract_response(str(text), "", st)})
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out


def write_responses(
    path: PathLike, records: Sequence[Mapping[str, Any]], *, overwrite: bool = False
) -> Path:
    """Write records (with ``model_response``) as a JSON list, atomically."""
    from scratchgpt.fileio import atomic_write_text

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    return atomic_write_text(p, json.dumps(list(records), indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# The job


@dataclass
class InstructResult:
    """What ``finetune_instruct`` returns."""

    train: TrainResult
    run_dir: Path
    responses_path: Path | None
    split_sizes: dict[str, int]
    initial_val_loss: float | None
    val_loss: float | None


def build_instruction_data(
    cfg: InstructConfig, tokenizer: Any, context_length: int
) -> tuple[Any, Any, list[dict[str, str]], list[dict[str, str]], InstructionCollator]:
    """(train dataset, val dataset or None, test records, val records, collate) for ``cfg``."""
    records = load_instruction_records(cfg.data, fields=cfg.fields)
    train_recs, test_recs, val_recs = split_records(records, cfg.train_frac, cfg.test_frac)
    train_ds = InstructionDataset(train_recs, tokenizer, cfg.style)
    val_ds = InstructionDataset(val_recs, tokenizer, cfg.style) if val_recs else None
    max_len = cfg.allowed_max_length or context_length
    if max_len > context_length:
        raise ConfigError(
            f"allowed_max_length {max_len} exceeds the model's context length {context_length}"
        )
    collate = InstructionCollator(
        pad_token_id=pad_id_for(tokenizer),
        allowed_max_length=max_len,
        mask_prompt=cfg.mask_prompt,
    )
    return train_ds, val_ds, test_recs, val_recs, collate


def _apply_lora(model: nn.Module, cfg: InstructConfig) -> dict[str, Any] | None:
    """Freeze the model and add LoRA adapters (appendix E) when ``lora_rank`` > 0; the adapter
    settings that go into the checkpoint metadata."""
    if cfg.lora_rank <= 0:
        return None
    from scratchgpt.model.lora import apply_lora

    # A tied head is the embedding table: adapting it would store one tensor under two names.
    targets = ["attention", "feed_forward"]
    if not getattr(getattr(model, "cfg", None), "tie_weights", False):
        targets.append("head")
    apply_lora(model, cfg.lora_rank, cfg.lora_alpha, targets, freeze=True)
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": targets}


def load_instruct_model(path: PathLike) -> Any:
    """``LoadedModel`` of any checkpoint (or run folder, or cached GPT-2 name); a checkpoint
    saved with LoRA adapters gets them merged into its weights."""
    from scratchgpt.checkpoints import (
        CHECKPOINTS_DIR,
        CONFIG_FILE,
        TOKENIZER_FILE,
        WEIGHTS_FILE,
        LoadedModel,
        read_manifest,
        resolve_checkpoint,
    )

    p = Path(path)
    if p.is_dir() and not (p / CONFIG_FILE).is_file() and (p / CHECKPOINTS_DIR).is_dir():
        p = resolve_checkpoint(p)
    meta = read_manifest(p).get("metadata", {}) if (p / CONFIG_FILE).is_file() else {}
    lora = meta.get("lora") if isinstance(meta, dict) else None
    if not lora:
        return load_base_model(str(path))
    from safetensors.torch import load_file

    from scratchgpt.config import GPTConfig
    from scratchgpt.model import GPTModel
    from scratchgpt.model.lora import apply_lora, merge_lora
    from scratchgpt.tokenizers import load_tokenizer
    from scratchgpt.training.state import load_weights_into

    cfg = GPTConfig.from_dict(read_json(p / CONFIG_FILE), source=str(p / CONFIG_FILE))
    model = GPTModel(cfg)
    apply_lora(model, int(lora["rank"]), float(lora["alpha"]), lora["targets"], freeze=True)
    try:
        weights = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p / WEIGHTS_FILE}: corrupt or missing ({e})") from None
    load_weights_into(model, weights, p / WEIGHTS_FILE)
    merge_lora(model)
    for param in model.parameters():
        param.requires_grad_(True)
    tok_path = p / TOKENIZER_FILE
    tokenizer = load_tokenizer(tok_path) if tok_path.is_file() else None
    loaded = LoadedModel(model.eval(), tokenizer, cfg, p, dict(meta), "scratchgpt")
    if tokenizer is None:
        from scratchgpt.tokenizers import get_tokenizer

        loaded.tokenizer = get_tokenizer("gpt2")
    return loaded


def finetune_instruct(
    config: InstructConfig | Mapping[str, Any],
    out_dir: PathLike = "runs/instruct",
    *,
    overwrite: bool = False,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> InstructResult:
    """Fine-tune a GPT on instruction records as ``config`` says and write the run (checkpoints,
    metrics, plots, ``responses.json`` for the test split) into ``out_dir``."""
    cfg = config if isinstance(config, InstructConfig) else InstructConfig.from_dict(config)
    loaded = (
        load_instruct_model(cfg.checkpoint) if cfg.checkpoint else load_base_model(gpt2=cfg.gpt2)
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    train_ds, val_ds, test_recs, val_recs, collate = build_instruction_data(
        cfg, tokenizer, loaded.config.context_length
    )
    if val_ds is None:
        print("warning: the validation split is empty: no validation loss", file=sys.stderr)
    run_dir = prepare_run_dir(out_dir, overwrite=overwrite, resume=resume)
    atomic_write_json(run_dir / INSTRUCT_CONFIG_FILE, cfg.to_dict())
    lora = _apply_lora(model, cfg)
    model.train()
    sizes = {"train": len(train_ds), "test": len(test_recs), "val": len(val_recs)}
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print0(
        f"model: {n_params:,} parameters ({n_train:,} trained"
        + (f", LoRA rank {cfg.lora_rank}" if lora else "")
        + f") from {cfg.checkpoint or cfg.gpt2}; data: {sizes['train']} train / {sizes['val']} val / "
        f"{sizes['test']} test records, prompt style {cfg.style}"
        + (", prompt masked in the loss" if cfg.mask_prompt else ""),
        flush=True,
    )
    task = InstructTask(
        tokenizer,
        cfg.style,
        sample_entry=val_recs[0] if val_recs else None,
        sample_tokens=cfg.train.sample_tokens,
    )
    metadata = {
        "task": "instruct",
        "prompt_style": cfg.style,
        "base_model": cfg.checkpoint or cfg.gpt2,
        "mask_prompt": cfg.mask_prompt,
        "lora": lora,
    }
    run_config = {"instruct": cfg.to_dict(), "resolved_model": loaded.config.to_dict()}
    result = train(
        model,
        task,
        train_ds,
        val_ds,
        cfg.train,
        run_dir,
        tokenizer=tokenizer,
        run_config=run_config,
        resume=resume,
        collate_fn=collate,
        metadata=metadata,
        argv=argv,
    )
    responses_path = None
    if cfg.responses and result.status != "interrupted" and test_recs:
        responses = generate_responses(
            model,
            tokenizer,
            test_recs,
            cfg.style,
            max_new_tokens=cfg.response_tokens,
            batch_size=cfg.response_batch_size,
        )
        responses_path = write_responses(run_dir / RESPONSES_FILE, responses, overwrite=True)
        print0(f"wrote {len(responses)} test responses to {responses_path}", flush=True)
    return InstructResult(
        train=result,
        run_dir=run_dir,
        responses_path=responses_path,
        split_sizes=sizes,
        initial_val_loss=_initial_val_loss(run_dir),
        val_loss=result.val_loss,
    )


def _initial_val_loss(run_dir: Path) -> float | None:
    """The step-0 validation loss from metrics.jsonl (with ``eval_at_start``)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step") == 0 and "val_loss" in rec:
            return float(rec["val_loss"])
    return None


def load_instruct_config(run_dir: PathLike) -> InstructConfig:
    """The InstructConfig saved in a run folder (for ``--resume``)."""
    path = Path(run_dir) / INSTRUCT_CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; {run_dir} is not an instruction fine-tuning run")
    return InstructConfig.from_dict(read_json(path), source=str(path))
