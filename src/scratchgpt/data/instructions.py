"""Instruction data (the book's chapter 7): records, splits, prompt styles, dataset and collate.

A record is ``{"instruction", "input", "output"}`` (field names configurable), read from JSON (a
list of objects) or JSONL (one object per line). ``split_records`` cuts them in file order into
train / test / validation as the book's section 7.2 (85% / 10% / the rest). A prompt style turns a
record into text: ``alpaca`` is the book's template exactly, ``phi3`` the one of its exercise 7.1.
``custom_collate_fn`` is the book's padding collate of section 7.3.

This module does not import torch at the top, so the CLI and the judge can use the styles cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.data.chat_style import AUTO_STYLE, CHAT_STYLE, ChatPromptStyle, encode_styled
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, read_text

if TYPE_CHECKING:
    import torch

PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|>, which the book pads with
IGNORE_INDEX = -100  # cross_entropy's default ignore_index
DEFAULT_FIELDS = {"instruction": "instruction", "input": "input", "output": "output"}
DEFAULT_DATA = "instruction-data"
PREFERENCE_DATA = "instruction-data-with-preference"


# ---------------------------------------------------------------------------------------------
# Prompt styles


@dataclass(frozen=True)
class PromptStyle:
    """How a record becomes text: ``prompt(entry)`` (everything up to and including the response
    marker) followed by the output. ``marker`` is stripped from generated responses and
    ``turn_start`` starts the next user turn (generation stops there)."""

    name: str
    preamble: str
    instruction: str  # format string with {instruction}
    input: str  # format string with {input}; used only when the input is non-empty
    response: str  # the response marker, before the output
    marker: str
    turn_start: str
    special_tokens: bool = False  # plain text: control-token look-alikes stay ordinary text

    def format_input(self, entry: Mapping[str, str]) -> str:
        """The book's ``format_input``: preamble, instruction and (non-empty) input."""
        text = self.preamble + self.instruction.format(instruction=entry["instruction"])
        if entry.get("input"):
            text += self.input.format(input=entry["input"])
        return text

    def prompt(self, entry: Mapping[str, str]) -> str:
        """What the model sees before its answer: ``format_input`` plus the response marker."""
        return self.format_input(entry) + self.response

    def full_text(self, entry: Mapping[str, str]) -> str:
        """Prompt and the expected output: one training example."""
        return self.prompt(entry) + entry["output"]


PROMPT_STYLES: dict[str, PromptStyle] = {
    "alpaca": PromptStyle(
        name="alpaca",
        preamble=(
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
        ),
        instruction="\n\n### Instruction:\n{instruction}",
        input="\n\n### Input:\n{input}",
        response="\n\n### Response:\n",
        marker="### Response:",
        turn_start="### Instruction:",
    ),
    # Exercise 7.1: the Phi-3 chat format ("<|user|>" and "<|assistant|>" are plain text to GPT-2).
    "phi3": PromptStyle(
        name="phi3",
        preamble="",
        instruction="<|user|>\n{instruction}",
        input="\n{input}",
        response="\n<|assistant|>:\n",
        marker="<|assistant|>:",
        turn_start="<|user|>",
    ),
}
DEFAULT_STYLE = "alpaca"


# Every style name: the text templates above, and "chat" (the model's own chat template).
STYLE_NAMES = (*sorted(PROMPT_STYLES), CHAT_STYLE)


def get_prompt_style(name: Any, tokenizer: Any = None) -> Any:
    """The named prompt style (a PromptStyle, or for ``"chat"`` a ChatPromptStyle built from
    ``tokenizer``'s chat template; ``"auto"``: chat when the tokenizer has a template, else
    alpaca); a ConfigError listing the known ones otherwise."""
    if isinstance(name, (PromptStyle, ChatPromptStyle)):
        return name
    if name == AUTO_STYLE:
        name = CHAT_STYLE if getattr(tokenizer, "chat_template", None) else DEFAULT_STYLE
    if name == CHAT_STYLE:
        template = getattr(tokenizer, "chat_template", None)
        if template is None:
            raise ConfigError(
                "prompt style 'chat' uses the model's chat template, and its tokenizer has none "
                "(GPT-2 and models trained here with a GPT-2 or BPE tokenizer have none); use "
                f"one of {sorted(PROMPT_STYLES)}, or a Llama 3 / Qwen3 / Gemma 3 model"
            )
        return ChatPromptStyle(tokenizer.chat)
    try:
        return PROMPT_STYLES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown prompt style {name!r}; choose one of {list(STYLE_NAMES)}"
        ) from None


def format_input(entry: Mapping[str, str], style: str | PromptStyle = DEFAULT_STYLE) -> str:
    """The book's ``format_input`` (section 7.2) in the given style."""
    return get_prompt_style(style).format_input(entry)


def extract_response(
    generated: str, prompt: str = "", style: str | PromptStyle = DEFAULT_STYLE
) -> str:
    """The answer in a generated text: without the prompt (if ``generated`` starts with it), the
    response marker, anything from the next user turn on, and surrounding whitespace (as the
    book's section 7.7: ``generated_text[len(input_text):].replace("### Response:", "").strip()``).
    """
    st = get_prompt_style(style)
    text = generated[len(prompt) :] if prompt and generated.startswith(prompt) else generated
    if st.marker:
        text = text.replace(st.marker, "")
    cut = text.find(st.turn_start) if st.turn_start else -1
    if cut >= 0:
        text = text[:cut]
    return text.strip()


# ---------------------------------------------------------------------------------------------
# Records


def _parse_records(path: Path) -> list[Any]:
    text = read_text(path)
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (stripped and not stripped.startswith("[")):
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno}); JSONL "
                    "files need one JSON object per line"
                ) from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f"{path}: expected a JSON list of records (or JSONL, one record per line), "
            f"got a {type(data).__name__}"
        )
    return data


def resolve_data_path(data: PathLike | None) -> Path:
    """A data file path, or the bundled set of that name (default: the book's 1,100 records)."""
    from scratchgpt.data.sources import SOURCES, get_path

    if data is None:
        return get_path(DEFAULT_DATA)
    p = Path(data)
    if not p.exists() and str(data) in SOURCES:
        return get_path(str(data))
    if not p.is_file():
        raise DataError(
            f"{p}: no such data file; give a JSON/JSONL file of records or a bundled name "
            f"({DEFAULT_DATA}, {PREFERENCE_DATA})"
        )
    return p


def load_instruction_records(
    data: PathLike | None = None,
    *,
    fields: Mapping[str, str] | None = None,
    extra_fields: Sequence[str] = (),
    optional: Sequence[str] = ("input",),
) -> list[dict[str, str]]:
    """Records from a JSON or JSONL file (default: the bundled instruction data), with the keys
    renamed to ``instruction``/``input``/``output``. ``fields`` maps those names (and those of
    ``extra_fields``) to the file's (e.g. ``{"output": "response"}``); a missing field named in
    ``optional`` (``input``) counts as empty. ``extra_fields`` are also required strings and kept
    (``("chosen", "rejected")`` for preference data)."""
    path = resolve_data_path(data)
    known = {**DEFAULT_FIELDS, **{x: x for x in extra_fields}}
    names = {**known, **(fields or {})}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"unknown record field(s) {unknown}; known: {sorted(known)}")
    raw = _parse_records(path)
    out = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
        item: dict[str, str] = {}
        for ours, theirs in names.items():
            if theirs not in rec:
                if ours in optional:
                    item[ours] = ""
                    continue
                raise DataError(
                    f"{path}: record {i} has no field {theirs!r} (it has {sorted(rec)}); "
                    + f"map the field name with --{ours}-field"
                )
            value = rec[theirs]
            if value is None and ours in optional:
                value = ""
            if not isinstance(value, str):
                raise DataError(
                    f"{path}: record {i}: field {theirs!r} must be a string, got "
                    f"{type(value).__name__} ({json.dumps(value)[:60]})"
                )
            item[ours] = value
        out.append(item)
    if not out:
        raise DataError(f"{path}: no records")
    return out


PREFERENCE_FIELDS = ("chosen", "rejected")


def load_preference_records(
    data: PathLike | None = None, *, fields: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Records with non-empty ``chosen`` and ``rejected`` responses (default: the bundled
    preference set), keys renamed as ``fields`` says (e.g. ``{"instruction": "prompt"}``); the
    reference ``output`` may be missing (then empty)."""
    source = PREFERENCE_DATA if data is None else data
    records = load_instruction_records(
        source, fields=fields, extra_fields=PREFERENCE_FIELDS, optional=("input", "output")
    )
    names = {**{x: x for x in PREFERENCE_FIELDS}, **(fields or {})}
    for i, rec in enumerate(records):
        for ours in PREFERENCE_FIELDS:
            if not rec[ours].strip():
                raise DataError(
                    f"{resolve_data_path(source)}: record {i}: field {names[ours]!r} is empty; "
                    "every record needs a chosen and a rejected response"
                )
    return records


def split_records(
    records: Sequence[Any], train_frac: float = 0.85, test_frac: float = 0.10
) -> tuple[list[Any], list[Any], list[Any]]:
    """(train, test, validation) in file order, as the book's section 7.2: the first
    ``int(n * train_frac)``, the next ``int(n * test_frac)``, the rest (1,100 -> 935/110/55)."""
    if not 0.0 < train_frac <= 1.0:
        raise ConfigError(f"train fraction must be in (0, 1], got {train_frac!r}")
    if not 0.0 <= test_frac < 1.0 or train_frac + test_frac > 1.0 + 1e-9:
        raise ConfigError(
            f"test fraction must be in [0, 1) with train + test <= 1, got train {train_frac!r}, "
            f"test {test_frac!r}"
        )
    n = len(records)
    n_train = int(n * train_frac)
    n_test = int(n * test_frac)
    train = list(records[:n_train])
    test = list(records[n_train : n_train + n_test])
    val = list(records[n_train + n_test :])
    if not train:
        raise DataError(
            f"the training split is empty ({n} record(s) x train fraction {train_frac}); "
            "use more records or a larger train fraction"
        )
    return train, test, val


# ---------------------------------------------------------------------------------------------
# Dataset and collate


class InstructionDataset:
    """Pre-tokenized examples (the book's ``InstructionDataset``): item ``i`` is
    ``(token_ids, prompt_length)`` where the first ``prompt_length`` ids are the prompt."""

    def __init__(
        self,
        records: Sequence[Mapping[str, str]],
        tokenizer: Any,
        style: str | PromptStyle = DEFAULT_STYLE,
    ) -> None:
        self.style = get_prompt_style(style, tokenizer)
        self.items: list[tuple[list[int], int]] = []
        from scratchgpt.errors import TokenizerError

        for i, entry in enumerate(records):
            try:
                ids = encode_styled(tokenizer, self.style.full_text(entry), self.style)
                p_ids = encode_styled(tokenizer, self.style.prompt(entry), self.style)
            except TokenizerError as e:
                raise DataError(f"record {i}: {e}") from None
            # The prompt's ids are a prefix of the full text's whenever the merge at the seam is
            # unaffected (the styles end the prompt with a newline); otherwise mask the common part.
            plen = 0
            for a, b in zip(ids, p_ids):
                if a != b:
                    break
                plen += 1
            self.items.append((ids, plen))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.items[i]


def custom_collate_fn(
    batch: Sequence[Any],
    pad_token_id: int = PAD_TOKEN_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    device: Any = "cpu",
    mask_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The book's collate (section 7.3): append one end-of-text token, pad with ``pad_token_id``
    to the longest item, targets are the inputs shifted by one, every padding target after the
    first is ``ignore_index``, then cut to ``allowed_max_length``. Items are id lists, or
    ``(ids, prompt_length)`` pairs; with ``mask_prompt`` (exercise 7.2) the targets that predict
    prompt tokens are ``ignore_index`` too."""
    import torch

    seqs, prompt_lens = [], []
    for item in batch:
        if isinstance(item, tuple):
            ids, plen = item
        else:
            ids, plen = item, 0
        seqs.append(list(ids))
        prompt_lens.append(int(plen))
    longest = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), longest - 1), pad_token_id, dtype=torch.long)
    targets = torch.full((len(seqs), longest - 1), ignore_index, dtype=torch.long)
    for row, (ids, plen) in enumerate(zip(seqs, prompt_lens)):
        n = len(ids)
        padded = ids + [pad_token_id] * (longest - n)
        inputs[row] = torch.tensor(padded[:-1], dtype=torch.long)
        # Target n-1 is the appended end-of-text (kept, so the model learns to stop); the
        # targets after it are padding. Masking by position rather than by value means a real
        # <|endoftext|> inside a record is still learned.
        targets[row, :n] = torch.tensor(padded[1 : n + 1], dtype=torch.long)
        if mask_prompt and plen > 1:
            targets[row, : plen - 1] = ignore_index
    if allowed_max_length is not None:
        inputs = inputs[:, :allowed_max_length]
        targets = targets[:, :allowed_max_length]
    return inputs.to(device), targets.to(device)


@dataclass(frozen=True)
class InstructionCollator:
    """``custom_collate_fn`` with fixed options, picklable for DataLoader workers."""

    pad_token_id: int = PAD_TOKEN_ID
    ignore_index: int = IGNORE_INDEX
    allowed_max_length: int | None = None
    mask_prompt: bool = False

    def __call__(self, batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return custom_collate_fn(
            batch,
            pad_token_id=self.pad_token_id,
            ignore_index=self.ignore_index,
            allowed_max_length=self.allowed_max_length,
            mask_prompt=self.mask_prompt,
        )
