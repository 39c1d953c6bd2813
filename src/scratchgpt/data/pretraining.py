"""Next-token prediction data (book chapter 2.6): sliding windows over token ids.

Every window is a pair ``(input, target)`` where the target is the input shifted by one token:
``input = ids[i : i + L]``, ``target = ids[i + 1 : i + L + 1]`` for ``i in range(0, len(ids) - L,
stride)``. ``SlidingWindowDataset`` does this over one text held in memory; ``ShardDataset`` does
it over memory-mapped token shards written by ``scratchgpt.data.prepare``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scratchgpt.data._tokenizer import resolve_tokenizer
from scratchgpt.data.shards import HEADER_SIZE, ShardHeader, read_shard_header
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, read_json

EOT = "<|endoftext|>"
DEFAULT_ALLOWED_SPECIAL = frozenset({EOT})


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _num_windows(num_tokens: int, max_length: int, stride: int) -> int:
    # len(range(0, num_tokens - max_length, stride)), the book's loop.
    return max(0, -(-(num_tokens - max_length) // stride))


def _as_id_tensor(ids: Any) -> torch.Tensor:
    """Pre-tokenized ids (list, numpy array, tensor) as a 1-D int64 tensor."""
    if isinstance(ids, torch.Tensor):
        t = ids.detach().cpu()
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"token ids must be integers, got a tensor of dtype {t.dtype}")
        t = t.to(torch.int64)
    else:
        arr = np.asarray(ids)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"token ids must be integers, got an array of dtype {arr.dtype}")
        # Convert first: torch has few kernels for unsigned types such as uint16 shard ids.
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
    if t.ndim != 1:
        raise DataError(f"token ids must be a 1-D sequence, got shape {tuple(t.shape)}")
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"token ids must be >= 0, found {int(t.min())}")
    return t.contiguous()


def tokenize_text(
    text: str,
    tokenizer: Any = None,
    *,
    allowed_special: Iterable[str] = DEFAULT_ALLOWED_SPECIAL,
) -> torch.Tensor:
    """Encode a whole text once (GPT-2 by default, ``<|endoftext|>`` allowed) as int64 ids."""
    if not isinstance(text, str):
        raise DataError(f"expected text (str), got {type(text).__name__}")
    if not text:
        raise DataError("the text is empty: there is nothing to train on")
    tok = resolve_tokenizer(tokenizer)
    allowed = set(allowed_special)
    if allowed_special is DEFAULT_ALLOWED_SPECIAL:
        # The default only asks for what the tokenizer has: a char-level vocabulary may lack EOT.
        known = getattr(tok, "special_tokens", None)
        if known is None:
            known = getattr(tok, "special_tokens_set", allowed)  # tiktoken.Encoding
        allowed &= set(known)
    ids = tok.encode(text, allowed_special=allowed)
    return torch.tensor(ids, dtype=torch.int64)


class SlidingWindowDataset(Dataset):
    """The book's ``GPTDatasetV1``: windows of ``max_length`` tokens every ``stride`` tokens.

    ``data`` is a text (tokenized once, whole) or pre-tokenized ids. ``input_ids`` and
    ``target_ids`` are ``(num_windows, max_length)`` views into one id tensor: no window is copied.
    """

    def __init__(
        self,
        data: str | Sequence[int] | np.ndarray | torch.Tensor,
        tokenizer: Any = None,
        max_length: int = 256,
        stride: int = 128,
        *,
        allowed_special: Iterable[str] = DEFAULT_ALLOWED_SPECIAL,
    ) -> None:
        _check_positive(max_length=max_length, stride=stride)
        if isinstance(data, str):
            ids = tokenize_text(data, tokenizer, allowed_special=allowed_special)
            what = "the text holds"
        else:
            ids = _as_id_tensor(data)
            what = "the token ids hold"
            if ids.numel() == 0:
                raise DataError("the token id sequence is empty: there is nothing to train on")
        if ids.numel() <= max_length:
            raise DataError(
                f"{what} {ids.numel()} tokens, too few for one window of max_length="
                f"{max_length}: a window needs more than max_length tokens (input plus the "
                f"shifted target). Use max_length <= {ids.numel() - 1} or more text."
            )
        self.ids = ids
        self.max_length = int(max_length)
        self.stride = int(stride)
        # unfold gives strided views: window k starts at k * stride, exactly the book's loop.
        self.input_ids = ids[:-1].unfold(0, self.max_length, self.stride)
        self.target_ids = ids[1:].unfold(0, self.max_length, self.stride)

    @property
    def num_tokens(self) -> int:
        """Number of tokens the windows are drawn from."""
        return int(self.ids.numel())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.target_ids[idx]


GPTDatasetV1 = SlidingWindowDataset


def _loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    num_workers: int,
    seed: int | None,
) -> DataLoader:
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise DataError(
            f"the data gives {n} window(s), fewer than batch_size={batch_size}, and drop_last=True "
            "would leave no batch at all; use a smaller batch_size, a smaller stride or "
            "max_length, more data, or drop_last=False"
        )
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )


def create_dataloader(
    text: str | Sequence[int] | np.ndarray | torch.Tensor,
    tokenizer: Any = None,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    *,
    seed: int | None = None,
    allowed_special: Iterable[str] = DEFAULT_ALLOWED_SPECIAL,
) -> DataLoader:
    """The book's ``create_dataloader_v1``: batches of (input, target) windows over one text.

    ``text`` may also be pre-tokenized ids. With ``shuffle``, a ``seed`` makes the order
    reproducible (a private ``torch.Generator``; the global RNG is left alone).
    """
    _check_positive(batch_size=batch_size, max_length=max_length, stride=stride)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    dataset = SlidingWindowDataset(
        text, tokenizer, max_length, stride, allowed_special=allowed_special
    )
    return _loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        seed=seed,
    )


# create_dataloader_v1 is the book's name.
create_dataloader_v1 = create_dataloader


def shard_paths(dir_or_files: PathLike | Sequence[PathLike], split: str = "train") -> list[Path]:
    """The shard files of one split of a prepared folder (in order), or the files given."""
    if isinstance(dir_or_files, (str, Path)) or hasattr(dir_or_files, "__fspath__"):
        root = Path(dir_or_files)  # type: ignore[arg-type]
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise DataError(f"{root}: no such shard file or prepared data folder")
        meta_path = root / "meta.json"
        if meta_path.is_file():
            meta = read_json(meta_path)
            shards = meta.get("shards", {}) if isinstance(meta, dict) else {}
            if split not in shards:
                raise DataError(
                    f"{meta_path}: no split {split!r} (splits: {', '.join(sorted(shards)) or 'none'})"
                )
            paths = [root / entry["file"] for entry in shards[split]]
        else:
            paths = sorted(root.glob(f"{split}_*.bin"))
        if not paths:
            raise DataError(
                f"{root}: no {split!r} shards; prepare the data with `scratchgpt prepare`, and for "
                "the validation split give a val fraction above 0 or more than one document"
            )
        return paths
    paths = [Path(p) for p in dir_or_files]
    if not paths:
        raise DataError("no shard files given")
    return paths


class ShardDataset(Dataset):
    """Sliding windows over memory-mapped token shards (the same convention as above).

    Windows never cross a shard boundary: each shard contributes
    ``len(range(0, n - max_length, stride))`` windows, so at most ``max_length`` tokens per shard
    go unused as window starts. ``stride`` defaults to ``max_length`` (no overlap). Items are
    int64 tensors; shards are opened lazily in each process, so DataLoader workers do not copy
    them.
    """

    def __init__(
        self,
        dir_or_files: PathLike | Sequence[PathLike],
        split: str = "train",
        max_length: int = 1024,
        stride: int | None = None,
    ) -> None:
        stride = max_length if stride is None else stride
        _check_positive(max_length=max_length, stride=stride)
        self.max_length = int(max_length)
        self.stride = int(stride)
        self.headers: list[ShardHeader] = [
            read_shard_header(p) for p in shard_paths(dir_or_files, split)
        ]
        counts = [_num_windows(h.num_tokens, self.max_length, self.stride) for h in self.headers]
        self._ends: list[int] = np.cumsum(counts).tolist()
        if not self._ends or self._ends[-1] == 0:
            longest = max(h.num_tokens for h in self.headers)
            raise DataError(
                f"the {split!r} shards hold {self.num_tokens} tokens, the longest {longest}: too few "
                f"for one window of max_length={self.max_length} (a shard needs more than "
                "max_length tokens); use a smaller max_length or more data"
            )
        self._maps: list[np.ndarray | None] = [None] * len(self.headers)

    @property
    def num_tokens(self) -> int:
        """Total number of tokens in the shards."""
        return sum(h.num_tokens for h in self.headers)

    @property
    def vocab_size(self) -> int:
        """The vocabulary size recorded in the shards' headers (0 when unknown)."""
        return max(h.vocab_size for h in self.headers)

    def __len__(self) -> int:
        return self._ends[-1]

    def _shard(self, k: int) -> np.ndarray:
        m = self._maps[k]
        if m is None:
            h = self.headers[k]
            m = np.memmap(
                h.path, dtype=h.dtype, mode="r", offset=HEADER_SIZE, shape=(h.num_tokens,)
            )
            self._maps[k] = m
        return m

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"window {idx} out of range for a dataset of {n} windows")
        k = bisect.bisect_right(self._ends, idx)
        local = idx - (self._ends[k - 1] if k else 0)
        start = local * self.stride
        chunk = torch.from_numpy(
            self._shard(k)[start : start + self.max_length + 1].astype(np.int64)
        )
        return chunk[:-1], chunk[1:]

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would carry its whole contents; reopen in the new process instead.
        state = self.__dict__.copy()
        state["_maps"] = [None] * len(self.headers)
        return state


def create_shard_dataloader(
    dir_or_files: PathLike | Sequence[PathLike],
    split: str = "train",
    batch_size: int = 4,
    max_length: int = 1024,
    stride: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    *,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader over ``ShardDataset`` windows of a prepared folder (see ``prepare``)."""
    _check_positive(batch_size=batch_size)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    dataset = ShardDataset(dir_or_files, split, max_length, stride)
    return _loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        seed=seed,
    )
