"""Sliding-window pretraining data (book chapter 2.6): golden values, windows, loaders, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scratchgpt.data import GPTDatasetV1, SlidingWindowDataset, create_dataloader, load_text
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.tokenizers import get_tokenizer, tiktoken_gpt2_encoding


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def verdict() -> str:
    return load_text("the-verdict")


def book_windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list, list]]:
    """The book's GPTDatasetV1 loop, written out as the reference."""
    out = []
    for i in range(0, len(ids) - max_length, stride):
        out.append((ids[i : i + max_length], ids[i + 1 : i + max_length + 1]))
    return out


def test_golden_verdict_first_batches(gpt2, verdict):
    loader = create_dataloader(verdict, gpt2, batch_size=1, max_length=4, stride=1, shuffle=False)
    assert loader.dataset.num_tokens == 5145
    assert len(loader.dataset) == 5145 - 4
    it = iter(loader)
    x, y = next(it)
    assert x.tolist() == [[40, 367, 2885, 1464]]
    assert y.tolist() == [[367, 2885, 1464, 1807]]
    x, y = next(it)
    assert x.tolist() == [[367, 2885, 1464, 1807]]
    assert y.tolist() == [[2885, 1464, 1807, 3619]]
    assert x.dtype == torch.int64


def test_default_tokenizer_is_gpt2(verdict):
    ds = SlidingWindowDataset(verdict[:200], max_length=4, stride=4)
    assert ds.input_ids[0].tolist() == [40, 367, 2885, 1464]


def test_book_call_style_and_tiktoken_encoding(verdict):
    # The book passes a tiktoken Encoding positionally: GPTDatasetV1(txt, tokenizer, L, stride).
    ds = GPTDatasetV1(verdict, tiktoken_gpt2_encoding(), 4, 1)
    assert GPTDatasetV1 is SlidingWindowDataset
    assert ds.num_tokens == 5145
    assert ds[1][0].tolist() == [367, 2885, 1464, 1807]


@pytest.mark.parametrize(
    ("n", "max_length", "stride"),
    [(5, 4, 1), (10, 4, 4), (10, 4, 3), (11, 3, 5), (9, 8, 1), (100, 7, 13), (30, 1, 1)],
)
def test_windows_match_the_book_loop(n, max_length, stride):
    ids = list(range(100, 100 + n))
    ds = SlidingWindowDataset(ids, max_length=max_length, stride=stride)
    got = [(x.tolist(), y.tolist()) for x, y in (ds[i] for i in range(len(ds)))]
    assert got == book_windows(ids, max_length, stride)


def test_stride_equal_to_length_does_not_overlap_and_smaller_stride_overlaps():
    ids = list(range(21))
    apart = SlidingWindowDataset(ids, max_length=4, stride=4)
    starts = [int(apart[i][0][0]) for i in range(len(apart))]
    assert starts == [0, 4, 8, 12, 16]
    overlap = SlidingWindowDataset(ids, max_length=4, stride=2)
    assert overlap[1][0].tolist() == [2, 3, 4, 5]
    assert overlap[0][0][2:].tolist() == overlap[1][0][:2].tolist()


def test_windows_are_views_into_one_tensor():
    ds = SlidingWindowDataset(list(range(50)), max_length=8, stride=3)
    base = ds.ids.untyped_storage().data_ptr()
    assert ds.input_ids.untyped_storage().data_ptr() == base
    assert ds.target_ids.untyped_storage().data_ptr() == base
    x, y = ds[2]
    assert x.untyped_storage().data_ptr() == base
    assert x.tolist() == list(range(6, 14)) and y.tolist() == list(range(7, 15))


def test_pretokenized_inputs_agree_with_text(gpt2, verdict):
    text = verdict[:500]
    ids = gpt2.encode(text)
    ref = SlidingWindowDataset(text, gpt2, max_length=8, stride=5)
    for data in (ids, np.array(ids, dtype=np.uint16), torch.tensor(ids, dtype=torch.int32)):
        ds = SlidingWindowDataset(data, max_length=8, stride=5)
        assert torch.equal(ds.input_ids, ref.input_ids)
        assert torch.equal(ds.target_ids, ref.target_ids)
        assert ds.input_ids.dtype == torch.int64


def test_endoftext_is_allowed_by_default(gpt2):
    ds = SlidingWindowDataset("Hello.<|endoftext|> World, again.", gpt2, max_length=3, stride=1)
    assert 50256 in ds.ids.tolist()


def test_drop_last(gpt2):
    ids = list(range(23))  # 19 windows of 4 with stride 1
    kept = create_dataloader(ids, batch_size=5, max_length=4, stride=1, shuffle=False)
    assert [len(x) for x, _ in kept] == [5, 5, 5]
    loose = create_dataloader(
        ids, batch_size=5, max_length=4, stride=1, shuffle=False, drop_last=False
    )
    assert [len(x) for x, _ in loose] == [5, 5, 5, 4]
    with pytest.raises(DataError, match=r"2 window\(s\), fewer than batch_size=4"):
        create_dataloader(list(range(7)), batch_size=4, max_length=4, stride=2)


def test_shuffle_is_deterministic_with_a_seed():
    ids = list(range(200))

    def order(seed: int) -> list[int]:
        loader = create_dataloader(ids, batch_size=7, max_length=4, stride=4, seed=seed)
        return [int(v) for x, _ in loader for v in x[:, 0]]

    assert order(7) == order(7)
    assert order(7) != order(8)
    assert sorted(order(7)) == list(range(0, 196, 4))
    plain = create_dataloader(ids, batch_size=7, max_length=4, stride=4, shuffle=False)
    assert [int(v) for x, _ in plain for v in x[:, 0]] == list(range(0, 196, 4))


def test_seed_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    list(create_dataloader(list(range(100)), batch_size=2, max_length=4, stride=4, seed=3))
    assert torch.equal(torch.rand(1), expected)


def test_bad_text_inputs(gpt2):
    with pytest.raises(DataError, match="empty"):
        create_dataloader("", gpt2)
    with pytest.raises(DataError, match="empty"):
        create_dataloader([], gpt2)
    with pytest.raises(DataError) as e:
        create_dataloader("Hello, world", gpt2, max_length=8)
    msg = str(e.value)
    assert "3 tokens" in msg and "max_length=8" in msg and "max_length <= 2" in msg
    # Exactly max_length tokens is one too few: the target needs one more.
    with pytest.raises(DataError, match="4 tokens"):
        create_dataloader([1, 2, 3, 4], max_length=4, batch_size=1)
    assert len(create_dataloader([1, 2, 3, 4, 5], max_length=4, batch_size=1)) == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"stride": 0}, "stride"),
        ({"stride": -3}, "stride"),
        ({"max_length": 0}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"stride": 1.5}, "stride"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_numbers_are_config_errors(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        create_dataloader(list(range(50)), **{"max_length": 4, **kwargs})


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ([1.0, 2.0, 3.0], "integers"),
        (torch.ones(10), "integers"),
        (np.ones((4, 4), dtype=np.int64), "1-D"),
        ([3, -1, 4, 5, 6], ">= 0"),
        ([1, "a", 2], "integers"),
    ],
)
def test_bad_token_ids(ids, match):
    with pytest.raises(DataError, match=match):
        SlidingWindowDataset(ids, max_length=2, stride=1)


def test_non_text_non_ids_is_rejected(gpt2):
    with pytest.raises(DataError):
        SlidingWindowDataset(b"bytes are not text", gpt2, max_length=2)


def test_tokenizer_without_endoftext_works_with_the_default():
    chars = get_tokenizer("char", corpus="hello world", special_tokens=())
    ds = SlidingWindowDataset("hello world hello", chars, max_length=4, stride=4)
    assert chars.decode(ds.input_ids[0].tolist()) == "hell"
    assert chars.decode(ds.target_ids[0].tolist()) == "ello"
