"""The shared log-likelihood, `evaluate choice` (multiple-choice accuracy) and MMLU's download."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data import sources
from scratchgpt.errors import DataError
from scratchgpt.evaluation.choice import (
    evaluate_choice,
    example_path,
    load_choice_items,
    resolve_choice_data,
)
from scratchgpt.evaluation.loglik import encode_pair, score_continuations


@pytest.fixture(scope="module")
def gpt2_tok():
    from scratchgpt.tokenizers import get_tokenizer

    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny(gpt2_tok):
    from scratchgpt.model import GPTModel

    torch.manual_seed(0)
    return GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=16)).eval()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny, gpt2_tok):
    from scratchgpt.weights import save_checkpoint

    path = tmp_path_factory.mktemp("m") / "ckpt"
    save_checkpoint(path, tiny, gpt2_tok)
    return path


@torch.no_grad()
def _direct(model, context, continuation):
    """log p(continuation | context) from one unbatched forward pass of the whole text."""
    ids = torch.tensor([[*context, *continuation]])
    logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)[0]
    n = len(context)
    return sum(float(logp[n - 1 + j, tok]) for j, tok in enumerate(continuation))


def test_scores_equal_a_direct_computation_in_any_batching(tiny):
    reqs = [([5, 6, 7], [8, 9]), ([1], [2, 3, 4, 5]), ([10, 11, 12, 13, 14], [15]), ([3], [3])]
    expected = [_direct(tiny, c, x) for c, x in reqs]
    for batch_size in (1, 3, 8):
        scores = score_continuations(tiny, reqs, pad_id=0, batch_size=batch_size)
        assert [s.tokens for s in scores] == [2, 4, 1, 1]
        for s, e in zip(scores, expected):
            assert s.logprob == pytest.approx(e, abs=1e-4)
    # Greedy: the continuation of each context's argmax is greedy by construction.
    ctx = [7, 8, 9]
    nxt = int(tiny(torch.tensor([ctx]))[0, -1].argmax())
    (s,) = score_continuations(tiny, [(ctx, [nxt])], pad_id=0)
    assert s.greedy
    (s,) = score_continuations(tiny, [(ctx, [(nxt + 1) % 50257])], pad_id=0)
    assert not s.greedy


def test_long_requests_are_cut_from_the_left(tiny):
    context, cont = list(range(100, 130)), [7, 8, 9]  # 33 tokens, the context is 16
    (s,) = score_continuations(tiny, [(context, cont)], pad_id=0)
    whole = [*context, *cont][-17:]
    assert s.logprob == pytest.approx(_direct(tiny, whole[:-3], cont), abs=1e-4)


def test_encode_pair_moves_trailing_space_and_handles_empty_context(gpt2_tok):
    ctx, cont = encode_pair(gpt2_tok, "The capital of France is ", "Paris")
    assert gpt2_tok.decode(ctx) == "The capital of France is" and gpt2_tok.decode(cont) == " Paris"
    ctx, cont = encode_pair(gpt2_tok, "", "Hello there")
    assert ctx == [50256] and gpt2_tok.decode(cont) == "Hello there"


def test_evaluate_loss_uses_the_same_logprobs(tiny):
    from scratchgpt.evaluation.metrics import evaluate_loss
    from scratchgpt.training.task import next_token_loss

    torch.manual_seed(1)
    x = torch.randint(0, 50257, (3, 9))
    y = torch.randint(0, 50257, (3, 9))
    y[1, 5:] = -100
    report = evaluate_loss(tiny, [(x[i], y[i]) for i in range(3)], batch_size=2)
    with torch.no_grad():
        expected = float(next_token_loss(tiny, x, y))
    assert report["loss"] == pytest.approx(expected, abs=1e-5)


# ---- items -------------------------------------------------------------------------------------


def test_item_formats(tmp_path):
    items = load_choice_items(example_path())
    assert len(items) == 12 and items[1].answer == 1 and items[2].answer == 0
    assert {i.subject for i in items} == {"geography", "arithmetic", "science", "language"}
    (tmp_path / "a.csv").write_text(
        "question,A,B,C,answer,subject\nWhich?,x,y,z,C,s1\n", encoding="utf-8"
    )
    (tmp_path / "b.json").write_text(
        json.dumps([{"question": "Q?", "choices": ["no", "yes"], "answer": "yes"}]), "utf-8"
    )
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    (mmlu / "abstract_algebra_test.csv").write_text(
        '"Find 2+2, ""quickly""",3,4,5,6,B\n', encoding="utf-8"
    )
    (a,) = load_choice_items(tmp_path / "a.csv")
    assert (a.choices, a.answer, a.subject) == (("x", "y", "z"), 2, "s1")
    (b,) = load_choice_items(tmp_path / "b.json")
    assert b.answer == 1 and b.subject is None
    (m,) = load_choice_items(mmlu)
    assert m.question == 'Find 2+2, "quickly"' and m.answer == 1
    assert m.subject == "abstract_algebra" and len(m.choices) == 4
    assert len(load_choice_items(tmp_path)) == 2  # a folder: its files, in name order


@pytest.mark.parametrize(
    "line, message",
    [
        ({"question": "Q", "choices": ["a", "b"]}, "line 2: no field 'answer'"),
        ({"question": "Q", "choices": ["a"], "answer": 0}, "line 2: field 'choices' must be"),
        ({"question": "Q", "choices": ["a", "b"], "answer": 2}, "line 2: answer 2 is out of range"),
        ({"question": "Q", "choices": ["a", "b"], "answer": "c"}, "line 2: field 'answer' is"),
    ],
)
def test_bad_items_name_the_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = {"question": "Q", "choices": ["a", "b"], "answer": 0}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_choice_items(path)


def test_accuracy_follows_the_loglikelihoods(tiny, gpt2_tok):
    items = load_choice_items(example_path())
    report = evaluate_choice(tiny, gpt2_tok, items, batch_size=5)
    rows = report["items"]
    for item, row in zip(items, rows):
        for choice, ll in zip(item.choices, row["loglikelihoods"]):
            ctx, cont = encode_pair(gpt2_tok, item.context(), " " + choice)
            assert ll == pytest.approx(_direct(tiny, ctx[-(17 - len(cont)) :], cont), abs=1e-4)
        lls = row["loglikelihoods"]
        assert row["prediction"] == lls.index(max(lls))
        normed = [ll / (len(c) + 1) for ll, c in zip(lls, item.choices)]
        assert row["prediction_norm"] == normed.index(max(normed))
    assert report["accuracy"] == sum(r["correct"] for r in rows) / 12
    assert sum(s["count"] for s in report["subjects"].values()) == 12
    geo = [r for r in rows if r["subject"] == "geography"]
    assert report["subjects"]["geography"]["accuracy"] == sum(r["correct"] for r in geo) / 3


def test_cli_evaluate_choice(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "report.json"
    args = ["evaluate", "choice", "--checkpoint", str(tiny_ckpt), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "geography" in text and "(12 questions)" in text
    report = json.loads(out.read_text("utf-8"))
    assert report["count"] == 12 and set(report["subjects"]) == {
        "geography", "arithmetic", "science", "language"
    }  # fmt: skip
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args[:4], "--data", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_mmlu_download_is_checked_and_its_test_files_extracted(tmp_path, monkeypatch):
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        for name, text in [("data/test/astronomy_test.csv", "Q1?,a,b,c,d,A\nQ2?,a,b,c,d,D\n"),
                           ("data/dev/astronomy_dev.csv", "Q?,a,b,c,d,A\n")]:  # fmt: skip
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256 mismatch"):
        sources.download("mmlu", cache, url=archive.as_uri())
    digest = sources.sha256_file(archive)
    monkeypatch.setitem(
        sources.SOURCES, "mmlu", dataclasses.replace(sources.SOURCES["mmlu"], sha256=digest)
    )
    with pytest.raises(DataError, match="not bundled and not in the cache"):
        resolve_choice_data("mmlu", cache)
    sources.download("mmlu", cache, url=archive.as_uri())
    folder = resolve_choice_data("mmlu", cache)
    assert sorted(p.name for p in folder.iterdir()) == ["astronomy_test.csv"]
    items = load_choice_items(folder)
    assert [(i.subject, i.answer) for i in items] == [("astronomy", 0), ("astronomy", 3)]
    assert resolve_choice_data("mmlu", cache) == folder  # extracted once
