"""Token shard files: round trips, header validation, and the sharded window dataset."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from scratchgpt.data import (
    ShardDataset,
    ShardWriter,
    create_shard_dataloader,
    load_shard,
    read_shard_header,
    write_shard,
)
from scratchgpt.data.shards import HEADER_SIZE, SHARD_MAGIC, dtype_for_vocab
from scratchgpt.errors import ConfigError, DataError


def test_round_trip_uint16(tmp_path):
    ids = np.array([0, 1, 50256, 40, 367, 65535 % 50257], dtype=np.int64)
    header = write_shard(tmp_path / "a.bin", ids, vocab_size=50257)
    assert header.dtype == np.uint16 and header.num_tokens == 6
    assert (tmp_path / "a.bin").stat().st_size == HEADER_SIZE + 6 * 2
    back = load_shard(tmp_path / "a.bin")
    assert isinstance(back, np.memmap)
    assert back.dtype == np.uint16
    assert back.tolist() == ids.tolist()
    h = read_shard_header(tmp_path / "a.bin")
    assert (h.version, h.num_tokens, h.vocab_size) == (1, 6, 50257)


def test_round_trip_uint32(tmp_path):
    ids = torch.tensor([0, 65535, 65536, 99_999, 7])
    header = write_shard(tmp_path / "b.bin", ids, vocab_size=100_000)
    assert header.dtype == np.uint32
    back = load_shard(tmp_path / "b.bin")
    assert back.dtype == np.uint32
    assert back.tolist() == ids.tolist()
    assert (tmp_path / "b.bin").stat().st_size == HEADER_SIZE + 5 * 4


def test_header_layout_is_little_endian_and_fixed(tmp_path):
    write_shard(tmp_path / "c.bin", [5, 6, 7], vocab_size=300)
    raw = (tmp_path / "c.bin").read_bytes()
    assert raw[:8] == SHARD_MAGIC == b"SGPTSHRD"
    assert struct.unpack_from("<IIQQ", raw, 8) == (1, 2, 3, 300)
    assert raw[32:HEADER_SIZE] == bytes(HEADER_SIZE - 32)
    assert np.frombuffer(raw[HEADER_SIZE:], dtype="<u2").tolist() == [5, 6, 7]


def test_dtype_choice():
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32
    with pytest.raises(ConfigError):
        dtype_for_vocab(0)


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "e.bin", [], vocab_size=10)
    assert load_shard(tmp_path / "e.bin").tolist() == []


def test_out_of_vocab_and_bad_ids(tmp_path):
    with pytest.raises(DataError, match=r"token id 300 at position 2 .*0\.\.299"):
        write_shard(tmp_path / "x.bin", [1, 2, 300], vocab_size=300)
    with pytest.raises(DataError, match="token id -1"):
        write_shard(tmp_path / "x.bin", [1, -1], vocab_size=300)
    with pytest.raises(DataError, match="integers"):
        write_shard(tmp_path / "x.bin", [1.5, 2.0], vocab_size=300)
    with pytest.raises(DataError, match="1-D"):
        write_shard(tmp_path / "x.bin", [[1, 2]], vocab_size=300)
    assert list(tmp_path.iterdir()) == []  # failed writes leave nothing behind


def test_writer_appends_and_refuses_overwrite(tmp_path):
    path = tmp_path / "w.bin"
    with ShardWriter(path, 1000) as w:
        w.write([1, 2])
        w.write(np.array([3], dtype=np.int32))
        assert not path.exists()  # published only on close
    assert load_shard(path).tolist() == [1, 2, 3]
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ShardWriter(path, 1000, overwrite=False)
    with pytest.raises(RuntimeError), ShardWriter(path, 1000) as w:
        w.write([9, 9])
        raise RuntimeError("crash mid-write")
    assert load_shard(path).tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


@pytest.fixture
def good_shard(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, list(range(10)), vocab_size=50257)
    return path


def _patch(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_wrong_magic(good_shard):
    _patch(good_shard, 0, b"NOTSHARD")
    with pytest.raises(DataError, match="wrong magic") as e:
        load_shard(good_shard)
    assert str(good_shard) in str(e.value)


def test_bad_version(good_shard):
    _patch(good_shard, 8, struct.pack("<I", 7))
    with pytest.raises(DataError, match="version 7") as e:
        load_shard(good_shard)
    assert str(good_shard) in str(e.value)


def test_bad_dtype_code(good_shard):
    _patch(good_shard, 12, struct.pack("<I", 3))
    with pytest.raises(DataError, match="bad dtype code 3") as e:
        read_shard_header(good_shard)
    assert str(good_shard) in str(e.value)


def test_truncated_body(good_shard):
    good_shard.write_bytes(good_shard.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"truncated: header says 10 tokens.*holds 8 tokens") as e:
        load_shard(good_shard)
    assert str(good_shard) in str(e.value)
    good_shard.write_bytes(good_shard.read_bytes()[:-1])
    with pytest.raises(DataError, match="holds 7 tokens and 1 stray bytes"):
        load_shard(good_shard)


def test_trailing_bytes(good_shard):
    good_shard.write_bytes(good_shard.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match=r"too long: header says 10 tokens.*holds 11"):
        load_shard(good_shard)


def test_truncated_header_and_missing_file(good_shard, tmp_path):
    good_shard.write_bytes(good_shard.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated: the file is 100 bytes"):
        load_shard(good_shard)
    good_shard.write_bytes(b"SGPT")
    with pytest.raises(DataError, match="truncated"):
        load_shard(good_shard)
    with pytest.raises(DataError, match="not found"):
        load_shard(tmp_path / "nope.bin")


# -- ShardDataset ----------------------------------------------------------------------------


@pytest.fixture
def shard_dir(tmp_path):
    """Three shards with distinct ids so a window crossing a boundary would be visible."""
    ids = {0: list(range(0, 10)), 1: list(range(100, 107)), 2: list(range(200, 203))}
    for k, v in ids.items():
        write_shard(tmp_path / f"train_{k:06d}.bin", v, vocab_size=1000)
    write_shard(tmp_path / "val_000000.bin", list(range(500, 520)), vocab_size=1000)
    return tmp_path, ids


def test_shard_dataset_windows_stay_inside_shards(shard_dir):
    folder, ids = shard_dir
    ds = ShardDataset(folder, "train", max_length=3, stride=2)
    expected = []
    for v in ids.values():
        for i in range(0, len(v) - 3, 2):
            expected.append((v[i : i + 3], v[i + 1 : i + 4]))
    got = [(x.tolist(), y.tolist()) for x, y in (ds[i] for i in range(len(ds)))]
    assert got == expected
    assert len(ds) == 4 + 2 + 0
    assert ds.num_tokens == 20
    assert ds.vocab_size == 1000
    x, y = ds[-1]
    assert x.dtype == y.dtype == torch.int64
    assert x.tolist() == [102, 103, 104]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_shard_dataset_default_stride_and_split(shard_dir):
    folder, _ = shard_dir
    val = ShardDataset(folder, "val", max_length=4)
    assert [val[i][0].tolist()[0] for i in range(len(val))] == [500, 504, 508, 512]
    files = ShardDataset([folder / "train_000001.bin"], max_length=6)
    assert len(files) == 1 and files[0][1].tolist() == list(range(101, 107))


def test_shard_dataset_opens_maps_lazily_and_does_not_carry_them(shard_dir):
    folder, _ = shard_dir
    ds = ShardDataset(folder, max_length=2)
    ds[0]
    assert ds._maps[0] is not None
    state = ds.__getstate__()
    assert state["_maps"] == [None, None, None]


def test_shard_dataset_errors(shard_dir, tmp_path_factory):
    folder, _ = shard_dir
    with pytest.raises(DataError, match="max_length=20"):
        ShardDataset(folder, max_length=20)
    with pytest.raises(DataError, match="no 'test' shards"):
        ShardDataset(folder, "test", max_length=2)
    with pytest.raises(DataError, match="no such shard file"):
        ShardDataset(folder / "missing", max_length=2)
    with pytest.raises(ConfigError, match="stride"):
        ShardDataset(folder, max_length=2, stride=0)


def test_shard_dataloader_is_seeded(shard_dir):
    folder, _ = shard_dir

    def order(seed):
        loader = create_shard_dataloader(folder, batch_size=2, max_length=2, stride=1, seed=seed)
        return [x[:, 0].tolist() for x, _ in loader]

    assert order(1) == order(1)
    assert order(1) != order(2)
    with pytest.raises(DataError, match="fewer than batch_size"):
        create_shard_dataloader(folder, "val", batch_size=64, max_length=4)
