"""Classification data: the book's spam preparation (pandas-exact) and any labelled file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scratchgpt.data.classification import (
    ClassificationDataset,
    LabelledData,
    balance_book,
    load_labelled,
    pandas_sample_positions,
    read_delimited,
    read_sms_spam,
    spam_splits,
)
from scratchgpt.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gpt2():
    from scratchgpt.tokenizers import get_tokenizer

    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def splits():
    return spam_splits()


def test_sms_spam_rows_as_pandas_reads_them():
    data = read_sms_spam()
    assert len(data) == 5572  # from 5,574 lines: two quoted messages span two lines each
    assert data.counts() == {"ham": 4825, "spam": 747}
    assert data.label_names == ["ham", "spam"]
    # One quoted message spans three lines: its two line breaks are inside the text.
    assert sum(t.count("\n") for t in data.texts) == 2
    # A leading quote opens a quoted field: the quotes go, text after the closing quote stays.
    assert any(
        t.startswith("Wen u miss someone") and t.endswith("Keep-in-touch gdeve..")
        for t in data.texts
    )
    # A quote inside an unquoted field is an ordinary character.
    assert any(t.startswith('"') is False and '"' in t for t in data.texts)


def test_pandas_sample_is_randomstate_choice():
    for n, k in [(4825, 747), (1494, 1494), (10, 3)]:
        expected = np.random.RandomState(123).choice(n, size=k, replace=False).tolist()
        assert pandas_sample_positions(n, k, 123) == expected
    with pytest.raises(ConfigError):
        pandas_sample_positions(3, 4, 0)


def test_book_split_counts(splits):
    assert splits.sizes() == {"train": 1045, "val": 149, "test": 300}
    assert splits.train.counts() == {"ham": 528, "spam": 517}
    total = {
        k: splits.train.counts()[k] + splits.val.counts()[k] + splits.test.counts()[k]
        for k in ("ham", "spam")
    }
    assert total == {"ham": 747, "spam": 747}
    # Checked against pandas' own read_csv/sample on the same file: the first rows of the
    # shuffled training split.
    assert splits.train.texts[0] == "Dude how do you like the buff wind."
    assert splits.train.labels[:5] == [0, 0, 1, 1, 1]


def test_balance_puts_sampled_ham_first_then_spam():
    data = LabelledData(["a", "b", "c", "d", "e"], [0, 1, 0, 0, 1], ["ham", "spam"])
    bal = balance_book(data, 123)
    picks = np.random.RandomState(123).permutation(3)[:2]
    assert bal.texts == [["a", "c", "d"][i] for i in picks] + ["b", "e"]
    assert bal.labels == [0, 0, 1, 1]


def test_padding_to_longest_training_message(splits, gpt2):
    train = ClassificationDataset(splits.train, gpt2)
    assert train.max_length == 120
    assert train.input_ids.shape == (1045, 120)
    ids, mask, label = train[0]
    n = len(gpt2.encode(splits.train.texts[0]))
    assert mask.sum() == n and mask[:n].all() and not mask[n:].any()
    assert ids[:n].tolist() == gpt2.encode(splits.train.texts[0])
    assert (ids[n:] == 50256).all()
    assert label == splits.train.labels[0]
    test = ClassificationDataset(splits.test, gpt2, max_length=train.max_length)
    assert test.input_ids.shape == (300, 120) and test.num_truncated == 0
    assert int(train.attention_mask.sum(1).max()) == 120


def test_longer_texts_truncated_with_warning(gpt2):
    data = LabelledData(["one two three four five six", "hi"], [0, 1], ["a", "b"])
    with pytest.warns(UserWarning, match="1 text"):
        ds = ClassificationDataset(data, gpt2, max_length=3)
    assert ds.input_ids[0].tolist() == gpt2.encode("one two three four five six")[:3]
    assert ds.attention_mask[1].tolist() == [1, 0, 0]


def test_quoting_like_pandas(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text('a\t"multi\nline"\nb\t"say ""hi"""\nc\tmid "quote" here\n\nd\t"x" tail\n', "utf-8")
    _, rows = read_delimited(p, "\t", header=False)
    assert [f for _, f in rows] == [
        ["a", "multi\nline"],
        ["b", 'say "hi"'],
        ["c", 'mid "quote" here'],
        ["d", "x tail"],
    ]
    assert [line for line, _ in rows] == [1, 3, 4, 6]


def test_csv_tsv_jsonl_any_columns_and_classes(tmp_path):
    rows = [("good film", "pos"), ("bad film", "neg"), ("so so", "mid")] * 10
    csv_p = tmp_path / "r.csv"
    csv_p.write_text("review,sentiment\n" + "".join(f'"{t}",{y}\n' for t, y in rows), "utf-8")
    tsv_p = tmp_path / "r.tsv"
    tsv_p.write_text("review\tsentiment\n" + "".join(f"{t}\t{y}\n" for t, y in rows), "utf-8")
    jl = tmp_path / "r.jsonl"
    jl.write_text(
        "".join(json.dumps({"review": t, "sentiment": y}) + "\n" for t, y in rows), "utf-8"
    )
    results = [
        load_labelled(p, text_column="review", label_column="sentiment") for p in (csv_p, tsv_p, jl)
    ]
    for s in results:
        assert s.train.label_names == ["mid", "neg", "pos"]
        assert s.sizes() == {"train": 21, "val": 3, "test": 6}
        assert s.train.texts == results[0].train.texts
    ordered = load_labelled(
        jl, text_column="review", label_column="sentiment", label_names=["neg", "mid", "pos"]
    )
    assert ordered.train.label_names == ["neg", "mid", "pos"]
    fr = load_labelled(
        csv_p, text_column="review", label_column="sentiment", train_frac=0.5, val_frac=0.2
    )
    assert fr.sizes() == {"train": 15, "val": 6, "test": 9}


def test_given_splits(tmp_path):
    p = tmp_path / "s.jsonl"
    recs = [
        {"text": f"t{i}", "label": i % 2, "split": ["train", "validation", "test"][i % 3]}
        for i in range(9)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs), "utf-8")
    s = load_labelled(p, split_column="split")
    assert s.sizes() == {"train": 3, "val": 3, "test": 3}
    assert s.train.texts == ["t0", "t3", "t6"]
    assert s.train.label_names == ["0", "1"]
    recs[4]["split"] = "holdout"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs), "utf-8")
    with pytest.raises(DataError, match=r"line 5: split 'holdout'"):
        load_labelled(p, split_column="split")


def test_missing_columns_named_with_columns_found(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("message,category\nhello,a\nbye,b\n", "utf-8")
    with pytest.raises(DataError) as e:
        load_labelled(p)
    msg = str(e.value)
    assert "['text', 'label']" in msg and "['message', 'category']" in msg and "d.csv" in msg
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"message": "hi", "label": "a"}\n', "utf-8")
    with pytest.raises(
        DataError, match=r"line 1: missing field\(s\) \['text'\].*\['label', 'message'\]"
    ):
        load_labelled(jl)


def test_empty_text_single_class_and_unknown_label(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,a\n  ,b\n", "utf-8")
    with pytest.raises(DataError, match=r"line 3: empty text"):
        load_labelled(p)
    p.write_text("text,label\nhello,a\nbye,a\n", "utf-8")
    with pytest.raises(DataError, match="at least two classes"):
        load_labelled(p)
    p.write_text("text,label\nhello,a\nbye,c\n", "utf-8")
    with pytest.raises(
        DataError, match=r"line 3: label 'c' is not in the given label set \['a', 'b'\]"
    ):
        load_labelled(p, label_names=["a", "b"])


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_labelled(tmp_path / "none.csv")
    p = tmp_path / "d.txt"
    p.write_text("x", "utf-8")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_labelled(p)
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "a", "label": 1}\n{oops\n', "utf-8")
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_labelled(jl)
    c = tmp_path / "d.csv"
    c.write_text("text,label\na,1,extra\n", "utf-8")
    with pytest.raises(DataError, match="line 2: 3 field"):
        load_labelled(c)
    c.write_bytes(b"text,label\n\xff,1\n")
    with pytest.raises(DataError):
        load_labelled(c)
