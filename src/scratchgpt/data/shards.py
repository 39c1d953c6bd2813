"""Token shards: one flat file of token ids per shard, for corpora too large for memory.

A shard is a fixed 256-byte little-endian header followed by the ids, nothing else, so it can be
memory-mapped and sliced without reading it (the idea of llm.c's ``.bin`` files):

====== ====== ======== ==============================================================
offset bytes  type     field
====== ====== ======== ==============================================================
0      8      bytes    magic ``b"SGPTSHRD"``
8      4      uint32   format version (1)
12     4      uint32   dtype code: 2 = uint16, 4 = uint32 (the item size in bytes)
16     8      uint64   number of tokens N
24     8      uint64   vocabulary size the ids were written for (0 = unknown)
32     224    zeros    reserved
256    N*size uint*    the token ids
====== ====== ======== ==============================================================

uint16 is used whenever the vocabulary fits (GPT-2's 50,257 tokens do), halving disk and page
cache compared with uint32.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, atomic_path

SHARD_MAGIC = b"SGPTSHRD"
SHARD_VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQQ")
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's header says (validated against the file's size)."""

    path: Path
    version: int
    dtype: np.dtype
    num_tokens: int
    vocab_size: int

    @property
    def nbytes(self) -> int:
        """Size of the whole file: header plus ids."""
        return HEADER_SIZE + self.num_tokens * self.dtype.itemsize


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest shard dtype that holds every id of a vocabulary: uint16 up to 65,536 tokens."""
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if vocab_size <= 1 << 16:
        return _DTYPES[2]
    if vocab_size <= 1 << 32:
        return _DTYPES[4]
    raise ConfigError(f"vocab_size {vocab_size} does not fit in uint32 token shards")


def _pack_header(dtype: np.dtype, num_tokens: int, vocab_size: int) -> bytes:
    head = _HEADER.pack(SHARD_MAGIC, SHARD_VERSION, dtype.itemsize, num_tokens, vocab_size)
    return head.ljust(HEADER_SIZE, b"\0")


def _check_ids(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.ndim != 1:
        raise DataError(f"{where}: token ids must be a 1-D sequence, got shape {tuple(ids.shape)}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"{where}: token ids must be integers, got dtype {ids.dtype}")
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        pos = int(np.argmax(ids == bad))
        raise DataError(
            f"{where}: token id {bad} at position {pos} is outside the vocabulary "
            f"(0..{vocab_size - 1}); was the shard written with the right tokenizer?"
        )


class ShardWriter:
    """Append ids to a shard, then publish it atomically on ``close()``.

    The ids go to a temporary file next to ``path``; the header (with the final count) is written
    last and the file renamed into place, so a crash never leaves a shard with a wrong count.
    """

    def __init__(self, path: PathLike, vocab_size: int, *, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype_for_vocab(self.vocab_size)
        self.num_tokens = 0
        # fileio.atomic_path, held open for the writer's life: close() publishes, abort() drops.
        self._publish = atomic_path(self.path, overwrite=overwrite)
        self._tmp = self._publish.__enter__()
        self._file: Any = open(self._tmp, "xb")  # noqa: SIM115 (closed in close/abort)
        self._file.write(b"\0" * HEADER_SIZE)

    def write(self, ids: Any) -> None:
        """Append a 1-D sequence of token ids (list, numpy array or CPU tensor)."""
        if self._file is None:
            raise ValueError(f"{self.path}: shard writer is closed")
        arr = np.asarray(ids)
        _check_ids(arr, self.vocab_size, str(self.path))
        if arr.size:
            try:
                self._file.write(arr.astype(self.dtype, copy=False).tobytes())
            except BaseException as e:
                self._drop(e)  # the temporary file goes; a full disk becomes an OutputError
                raise
            self.num_tokens += int(arr.size)

    def close(self) -> ShardHeader:
        """Write the header, flush to disk and rename the shard into place."""
        if self._file is None:
            raise ValueError(f"{self.path}: shard writer is closed")
        f, self._file = self._file, None
        try:
            f.seek(0)
            f.write(_pack_header(self.dtype, self.num_tokens, self.vocab_size))
            f.close()
        except BaseException as e:
            self._file = f
            self._drop(e)
            raise
        self._publish.__exit__(None, None, None)
        return ShardHeader(self.path, SHARD_VERSION, self.dtype, self.num_tokens, self.vocab_size)

    def abort(self) -> None:
        """Drop the partial shard; the destination is left as it was."""
        if self._file is not None:
            self._drop(RuntimeError("shard writer aborted"))

    def _drop(self, exc: BaseException) -> None:
        """Close and delete the temporary file. ``fileio.atomic_path`` raises the OutputError
        for ``exc`` when it means a full or read-only disk (else nothing is raised here)."""
        f, self._file = self._file, None
        if f is None:
            return
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            f.close()
        self._publish.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shard(
    path: PathLike, ids: Any, vocab_size: int, *, overwrite: bool = True
) -> ShardHeader:
    """Write one shard atomically: uint16 ids when ``vocab_size <= 65536``, else uint32."""
    with ShardWriter(path, vocab_size, overwrite=overwrite) as w:
        w.write(ids)
    return ShardHeader(Path(path), SHARD_VERSION, w.dtype, w.num_tokens, w.vocab_size)


def read_shard_header(path: PathLike) -> ShardHeader:
    """Read and validate a shard's header, including that the file size matches its count."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{p}: shard file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder, expected a token shard file") from None
    what = "run `scratchgpt prepare` again to rebuild it"
    truncated = (
        f"{p}: truncated: the file is {size} bytes, shorter than the {HEADER_SIZE}-byte header; "
        f"{what}"
    )
    if raw[:8] != SHARD_MAGIC:
        if len(raw) < len(SHARD_MAGIC) and SHARD_MAGIC.startswith(raw):
            raise DataError(truncated)
        raise DataError(
            f"{p}: wrong magic {raw[:8]!r} (expected {SHARD_MAGIC!r}): not a scratchgpt "
            f"token shard, or its header is corrupt; {what}"
        )
    if len(raw) < HEADER_SIZE:
        raise DataError(truncated)
    _, version, code, count, vocab_size = _HEADER.unpack_from(raw)
    if version != SHARD_VERSION:
        raise DataError(
            f"{p}: unsupported shard format version {version} (this scratchgpt reads version "
            f"{SHARD_VERSION}); {what} with this version"
        )
    if code not in _DTYPES:
        raise DataError(
            f"{p}: bad dtype code {code} in header (expected 2 for uint16 or 4 for uint32); {what}"
        )
    dtype = _DTYPES[code]
    body = size - HEADER_SIZE
    held, stray = divmod(body, dtype.itemsize)
    if held != count or stray:
        extra = f" and {stray} stray bytes" if stray else ""
        kind = "truncated" if body < count * dtype.itemsize else "too long"
        raise DataError(
            f"{p}: {kind}: header says {count} tokens ({dtype.name}), file holds {held} "
            f"tokens{extra}; {what}"
        )
    return ShardHeader(p, version, dtype, int(count), int(vocab_size))


def load_shard(path: PathLike) -> np.ndarray:
    """Memory-map a shard's ids (read-only ``np.memmap``; a plain empty array for 0 tokens)."""
    header = read_shard_header(path)
    if header.num_tokens == 0:
        # mmap cannot map zero bytes.
        return np.empty(0, dtype=header.dtype)
    return np.memmap(
        header.path, dtype=header.dtype, mode="r", offset=HEADER_SIZE, shape=(header.num_tokens,)
    )
