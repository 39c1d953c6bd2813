"""Classification fine-tuning: head, last-real-token selection, metrics, the CLI end to end, and
every bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import yaml

from book_reference import book_run, run_preset, write_spam_like_csv
from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError, ConfigError, DataError
from scratchgpt.model import GPTModel
from scratchgpt.tasks.classify import (
    Classifier,
    ClassifyConfig,
    classification_metrics,
    classifier_logits,
    classify,
    default_train_config,
    last_token_index,
    load_classifier,
    make_classifier,
    size_eval_to_epochs,
)
from scratchgpt.weights import read_manifest, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_classifier(num_classes: int = 2, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=100))
    return make_classifier(model, num_classes, trainable="all").eval()


def test_head_and_trainable_parts():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=100, tie_weights=True))
    make_classifier(model, 3)
    assert model.out_head.weight.shape == (3, 32) and model.out_head.bias is not None
    assert model.cfg.tie_weights is False  # the head is no longer the embedding
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("trf_blocks.1.", "final_norm.", "out_head."))
    }
    head_only = make_classifier(
        GPTModel(GPTConfig.from_preset("tiny", vocab_size=100)), 2, trainable="head"
    )
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {
        "out_head.weight",
        "out_head.bias",
    }
    two = make_classifier(
        GPTModel(GPTConfig.from_preset("tiny", vocab_size=100)), 2, train_blocks=2
    )
    assert all(p.requires_grad for p in two.trf_blocks.parameters())
    assert not two.tok_emb.weight.requires_grad
    with pytest.raises(ConfigError, match="at least 2 classes"):
        make_classifier(GPTModel(GPTConfig.from_preset("tiny", vocab_size=100)), 1)
    with pytest.raises(ConfigError, match="train_blocks"):
        make_classifier(GPTModel(GPTConfig.from_preset("tiny", vocab_size=100)), 2, train_blocks=3)


def test_last_real_token_with_padding_on_both_sides():
    model = tiny_classifier()
    a, b = [5, 6, 7, 8], [9, 10]
    alone_a = classifier_logits(model, torch.tensor([a]))
    alone_b = classifier_logits(model, torch.tensor([b]))
    pad = 0
    ids = torch.tensor(
        [[*a, pad, pad], b + [pad] * 4, [pad, pad, *a], [pad] * 4 + b, [pad] + b + [pad] * 3]
    )
    mask = (torch.arange(6) >= 0).repeat(5, 1).long()
    mask[0, 4:] = 0
    mask[1, 2:] = 0
    mask[2, :2] = 0
    mask[3, :4] = 0
    mask[4] = torch.tensor([0, 1, 1, 0, 0, 0])
    assert last_token_index(mask).tolist() == [3, 1, 5, 5, 2]
    out = classifier_logits(model, ids, mask)
    for row, ref in zip(out, [alone_a, alone_b, alone_a, alone_b, alone_b], strict=True):
        torch.testing.assert_close(row, ref[0], atol=1e-5, rtol=1e-5)
    # Right padding only: the same logits as the unpadded texts, with no attention mask needed.
    right = classifier_logits(model, ids[:2], mask[:2])
    torch.testing.assert_close(right, torch.cat([alone_a, alone_b]), atol=1e-5, rtol=1e-5)
    # Without a mask: the last position (the book's choice).
    torch.testing.assert_close(classifier_logits(model, ids[:1]), model(ids[:1])[:, -1])
    with pytest.raises(DataError, match="no real tokens"):
        classifier_logits(model, ids[:1], torch.zeros(1, 6, dtype=torch.long))


def test_metrics():
    m = classification_metrics([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2], ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    assert m["per_class"]["a"]["precision"] == 0.5 and m["per_class"]["c"]["f1"] == 1.0
    empty = classification_metrics([0, 0], [0, 0], ["a", "b"])
    assert empty["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_config_needs_one_start_model():
    with pytest.raises(ConfigError, match="exactly one starting model"):
        ClassifyConfig()
    with pytest.raises(ConfigError, match="exactly one"):
        ClassifyConfig(model={"checkpoint": "a", "gpt2": "gpt2-small"})
    with pytest.raises(ConfigError, match="LoRA targets"):
        ClassifyConfig(model={"random_init": "tiny"}, classify={"lora_targets": ["nope"]})


def test_config_defaults_are_the_book_and_the_flat_form_still_works():
    cfg = ClassifyConfig(model={"random_init": "tiny"})
    t = cfg.train
    assert (t.batch_size, t.lr, t.weight_decay, t.max_epochs, t.sample_tokens) == (
        8,
        5e-5,
        0.1,
        5,
        0,
    )
    assert cfg.data.source == "spam" and cfg.classify.trainable == "last-blocks"
    with pytest.deprecated_call():
        old = ClassifyConfig(random_init="tiny", data="x.csv", trainable="lora", lora_rank=4)
    assert (old.model.random_init, old.data.source, old.classify.lora_rank) == ("tiny", "x.csv", 4)
    with pytest.raises(ConfigError, match="LoRA targets"), pytest.deprecated_call():
        ClassifyConfig(random_init="tiny", lora_targets=["nope"])
    # Per-epoch evaluation: sized from the splits unless the field is set by hand.
    sized = size_eval_to_epochs(cfg, n_train=1045, n_val=149)
    assert (sized.train.eval_interval, sized.train.eval_batches) == (130, 19)
    assert sized.classify.epoch_eval == []
    by_hand = cfg.with_overrides({"train.eval_interval": 7})
    assert by_hand.classify.epoch_eval == ["eval_batches"]
    sized = size_eval_to_epochs(by_hand, n_train=1045, n_val=149)
    assert (sized.train.eval_interval, sized.train.eval_batches) == (7, 19)
    assert sized.train == default_train_config(1045, 149, eval_interval=7)


def test_cli_resumes_a_run_folder_of_older_releases(tmp_path, capsys):
    """A run folder with finetune.json (no config.yaml) still resumes with its settings."""
    run = tmp_path / "old"
    run.mkdir()
    flat = {"checkpoint": "base", "gpt2": None, "random_init": None, "data": "spam",
            "format": None, "text_column": "text", "label_column": "label", "split_column": None,
            "labels": None, "train_frac": 0.7, "val_frac": 0.1, "split_seed": 123,
            "max_length": None, "trainable": "lora", "train_blocks": 1, "lora_rank": 4,
            "lora_alpha": 8.0, "lora_targets": ["attention"], "drop_rate": None}  # fmt: skip
    train = {**default_train_config(1045, 149).__dict__, "max_steps": 3}
    (run / "finetune.json").write_text(json.dumps({"classify": flat, "train": train}), "utf-8")
    assert main(["finetune-classifier", "--out", str(run), "--resume", "--max-steps", "4",
                 "--print-config"]) == 0  # fmt: skip
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["checkpoint"] == "base" and cfg["classify"]["lora_rank"] == 4
    assert cfg["classify"]["epoch_eval"] == [] and cfg["train"]["eval_interval"] == 130
    assert cfg["train"]["max_steps"] == 4


# ---------------------------------------------------------------------------------------------
# End to end: a tiny pretrained-style checkpoint -> finetune-classifier -> classify


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    from scratchgpt.tokenizers import get_tokenizer

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", context_length=128))
    path = tmp_path_factory.mktemp("base") / "ckpt"
    save_checkpoint(path, model, get_tokenizer("gpt2"), metadata={"task": "pretrain"})
    return path


@pytest.fixture(scope="module")
def spam_run(base_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "spam"
    argv = ["finetune-classifier", "--checkpoint", str(base_ckpt), "--data", "spam", "--out", str(out),
            "--max-steps", "3", "--eval-batches", "1", "--no-progress", "--lr", "1e-3"]  # fmt: skip
    return out, argv


@pytest.mark.slow
def test_cli_end_to_end_on_bundled_spam(spam_run, capsys):
    out, argv = spam_run
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "1,045 train / 149 validation / 300 test" in text
    assert "padded/truncated to 120 tokens" in text
    assert "test: accuracy" in text and "confusion matrix" in text
    assert "Val acc" in text  # the loop's evaluation line shows the accuracy
    report = json.loads((out / "classification_report.json").read_text())
    assert report["sizes"] == {"train": 1045, "val": 149, "test": 300}
    assert report["test"]["n"] == 300 and sum(map(sum, report["test"]["confusion_matrix"])) == 300
    assert report["steps"] == 3
    for name in ("loss.png", "accuracy.png", "metrics.jsonl", "run.json", "config.yaml"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "config.yaml").read_text("utf-8"))
    assert set(saved) == {"model", "data", "train", "classify"}
    # The resolved config: evaluation once per epoch (1,045 texts / batch 8).
    assert saved["train"]["eval_interval"] == 130 and saved["classify"]["epoch_eval"] == []
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "val_accuracy" in records[-1] and "eval_train_accuracy" in records[-1]
    meta = read_manifest(out / "checkpoints" / "step-000003")["metadata"]
    assert meta["task"] == "classify" and meta["label_names"] == ["ham", "spam"]
    assert meta["num_classes"] == 2 and meta["max_length"] == 120 and meta["pad_token_id"] == 50256

    assert (
        main(["classify", "--checkpoint", str(out), "WINNER! Claim your prize now", "see you soon"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    label, prob, txt = lines[0].split("\t")
    assert (
        label in ("ham", "spam")
        and 0.5 <= float(prob) <= 1
        and txt == "WINNER! Claim your prize now"
    )

    # Python API: the same predictions from the folder and from a loaded Classifier.
    clf = load_classifier(out)
    assert isinstance(clf, Classifier) and clf.label_names == ["ham", "spam"]
    preds = classify(out, ["WINNER! Claim your prize now", "see you soon"])
    again = classify(clf, ["WINNER! Claim your prize now", "see you soon"])
    assert [p.label for p in preds] == [line.split("\t")[0] for line in lines]
    for p, q in zip(preds, again, strict=True):
        assert p.probability == pytest.approx(q.probability)
        assert sum(p.probabilities.values()) == pytest.approx(1.0)

    # --resume continues the same run from its checkpoint.
    assert (
        main(
            [
                "finetune-classifier",
                "--out",
                str(out),
                "--resume",
                "--max-steps",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "resuming from step-000003" in capsys.readouterr().out
    assert json.loads((out / "classification_report.json").read_text())["steps"] == 4


def test_classify_file_with_labels(spam_run, tmp_path, capsys):
    out, argv = spam_run
    if not (out / "checkpoints").is_dir():
        assert main(argv) == 0
        capsys.readouterr()  # the run's own output
    f = tmp_path / "m.tsv"
    f.write_text("text\tlabel\nhello there\tham\nFREE entry now\tspam\n", "utf-8")
    assert (
        main(
            [
                "classify",
                "--checkpoint",
                str(out),
                "--file",
                str(f),
                "--text-column",
                "text",
                "--label-column",
                "label",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    rows = [json.loads(x) for x in captured.out.splitlines()]
    assert [r["text"] for r in rows] == ["hello there", "FREE entry now"]
    assert "accuracy:" in captured.err
    # Labels not in the classifier's label set.
    f.write_text("text\tlabel\nhello there\tham\nbuy now\tjunk\n", "utf-8")
    assert (
        main(
            [
                "classify",
                "--checkpoint",
                str(out),
                "--file",
                str(f),
                "--text-column",
                "text",
                "--label-column",
                "label",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "label 'junk'" in err and "['ham', 'spam']" in err
    # Plain text file: one text per line; an empty line is refused.
    t = tmp_path / "m.txt"
    t.write_text("first\n\nthird\n", "utf-8")
    assert main(["classify", "--checkpoint", str(out), "--file", str(t)]) == 2
    assert "line 2: empty line" in capsys.readouterr().err


def test_classify_bad_inputs(spam_run, base_ckpt, capsys):
    out, argv = spam_run
    if not (out / "checkpoints").is_dir():
        assert main(argv) == 0
    clf = load_classifier(out)
    with pytest.raises(DataError, match="text 2 is empty"):
        classify(clf, ["fine", "   "])
    with pytest.warns(UserWarning, match="longer than the classifier's 120 tokens"):
        (p,) = classify(clf, ["spam " * 300])
    assert p.label in ("ham", "spam")
    # A language model is not a classifier.
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(base_ckpt)
    assert main(["classify", "--checkpoint", str(base_ckpt), "hello"]) == 2
    assert "not a classifier" in capsys.readouterr().err
    assert main(["classify", "--checkpoint", str(out)]) == 2
    assert "no texts" in capsys.readouterr().err


def test_finetune_bad_data(base_ckpt, tmp_path, capsys):
    def run(data: str, *extra: str) -> str:
        code = main(["finetune-classifier", "--checkpoint", str(base_ckpt), "--data", data, "--out",
                     str(tmp_path / "r"), "--overwrite", "--max-steps", "1", "--no-progress", *extra])  # fmt: skip
        assert code == 2
        return capsys.readouterr().err

    f = tmp_path / "d.csv"
    f.write_text("message,category\nhi,a\nbye,b\n", "utf-8")
    err = run(str(f))
    assert "missing column(s) ['text', 'label']" in err and "['message', 'category']" in err
    f.write_text("text,label\n" + "hi,a\n" * 20, "utf-8")
    assert "at least two classes" in run(str(f))
    f.write_text("text,label\nhi,a\n,b\n", "utf-8")
    assert "line 3: empty text" in run(str(f))
    f.write_text("text,label\nhi,a\nyo,c\n", "utf-8")
    assert "label 'c' is not in the given label set" in run(str(f), "--labels", "a,b")
    assert "exactly one starting model" in run("spam", "--gpt2", "gpt2-small")


def test_lora_cli_three_classes_and_merge(tmp_path, capsys):
    rows = [
        ("good film loved it", "pos"),
        ("bad film hated it", "neg"),
        ("it was a film", "mid"),
    ] * 8
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps({"review": t, "y": y}) + "\n" for t, y in rows), "utf-8")
    out = tmp_path / "lora"
    code = main(["finetune-classifier", "--random-init", "tiny", "--data", str(f), "--text-column", "review",
                 "--label-column", "y", "--trainable", "lora", "--lora-rank", "2", "--out", str(out),
                 "--max-steps", "2", "--batch-size", "4", "--no-progress", "--no-plot", "--lr", "1e-2"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "16 train / 2 validation / 6 test" in text and "trainable: lora (rank 2" in text
    assert (out / "adapters.safetensors").is_file()
    merged = load_classifier(out)
    unmerged = load_classifier(out, merge=False)
    assert merged.label_names == ["mid", "neg", "pos"]
    from scratchgpt.model.lora import has_lora

    assert has_lora(unmerged.model) and not has_lora(merged.model)
    texts = ["good film", "bad film", "a film"]
    for p, q in zip(classify(merged, texts), classify(unmerged, texts), strict=True):
        assert p.label == q.label
        assert p.probability == pytest.approx(q.probability, abs=1e-5)


def test_start_from_gpt2_folder(tmp_path, capsys, monkeypatch):
    from scratchgpt.weights import save_hf_gpt2

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", qkv_bias=True, tie_weights=True))
    save_hf_gpt2(model, tmp_path / "hf")
    f = tmp_path / "d.tsv"
    f.write_text(
        "text\tlabel\n" + "".join(f"message {i}\t{'ab'[i % 2]}\n" for i in range(20)), "utf-8"
    )
    out = tmp_path / "run"
    args = ["finetune-classifier", "--gpt2", str(tmp_path / "hf"), "--data", str(f), "--out", str(out),
            "--max-steps", "1", "--no-progress", "--no-plot"]  # fmt: skip
    assert main(args) == 0
    assert "model: GPT-2 " in capsys.readouterr().out
    clf = load_classifier(out)
    assert clf.model.cfg.qkv_bias and not clf.model.cfg.tie_weights
    assert clf.label_names == ["a", "b"]
    # A GPT-2 name that is not downloaded: the interop error, which says how to get it.
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args[2] = "gpt2-small"
    assert main([*args, "--overwrite"]) == 2
    assert "gpt2-small is not downloaded" in capsys.readouterr().err


def test_load_checkpoint_refuses_a_classifier_with_a_pointer(tmp_path):
    """load_checkpoint builds a token head; a classifier folder gets a message naming the way in."""
    from scratchgpt.config import GPTConfig
    from scratchgpt.errors import CheckpointError
    from scratchgpt.model import GPTModel
    from scratchgpt.tasks.classify import classifier_metadata, make_classifier
    from scratchgpt.weights import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = make_classifier(GPTModel(GPTConfig.from_preset("tiny")), 2, trainable="all")
    meta = classifier_metadata(["ham", "spam"], 16, 50256, trainable="all")
    save_checkpoint(tmp_path / "clf", model, metadata=meta)
    with pytest.raises(
        CheckpointError, match=r"classifier checkpoint \(labels \['ham', 'spam'\]\)"
    ):
        load_checkpoint(tmp_path / "clf")


# ---------------------------------------------------------------------------------------------
# The book presets against the book's own loop (tests/book_reference.py), step for step


def per_epoch_validation(records: list[dict]) -> list[tuple[float, float]]:
    return [(r["val_loss"], r["val_accuracy"]) for r in records if "val_loss" in r]


def test_book_ch6_preset_reproduces_the_books_training_loop(base_ckpt, tmp_path):
    """Sections 6.5-6.7: seed 123 before the new head; the last block, the final norm and the
    head trained with AdamW(lr 5e-5, weight decay 0.1), batch 8, drop_last, dropout 0; the
    loss and accuracy of section 6.6; 15 steps over 3 epochs."""
    # Texts of equal length: no padding, so the book's last position is the last real token.
    same = write_spam_like_csv(tmp_path / "same.csv", equal_length=True)
    ours, log, records = run_preset(
        "book-ch6", base_ckpt, same, tmp_path / "a", **{"train.max_epochs": 3}
    )
    assert len(ours) == 15
    # The book's exact code: on texts of equal length its last position is the last real token.
    book, book_val = book_run(base_ckpt, same, lr=5e-5, epochs=3)
    assert ours == pytest.approx(book, abs=1e-5, rel=0)
    # Validation loss and accuracy after each epoch: calc_loss_loader, calc_accuracy_loader.
    ours_val = per_epoch_validation(records)
    assert len(ours_val) == 3
    for (loss, acc), (book_loss, book_acc) in zip(ours_val, book_val, strict=True):
        assert loss == pytest.approx(book_loss, abs=1e-5) and acc == book_acc
    # The book decays every trainable tensor (biases, LayerNorm scales), as the preset does
    # (train.decay_all_parameters); scratchgpt's default, matrices only, visibly differs.
    matrices, _ = book_run(base_ckpt, same, lr=5e-5, epochs=3, matrices_only=True)
    assert max(abs(a - b) for a, b in zip(ours, matrices, strict=True)) > 1e-6
    assert "recipe: preset book-ch6 (the book's chapter 6); differences from the book's" in log
    assert "weight decay" not in log


def test_book_ch6_preset_on_padded_texts_reads_the_last_real_token(base_ckpt, tmp_path):
    """The one difference on purpose in what the loss sees: the book reads the last position,
    a padding token for every text shorter than the longest; scratchgpt the last real token."""
    padded = write_spam_like_csv(tmp_path / "padded.csv")
    ours, log, _ = run_preset(
        "book-ch6", base_ckpt, padded, tmp_path / "b", **{"train.max_epochs": 2}
    )
    assert len(ours) == 10
    book, _ = book_run(base_ckpt, padded, lr=5e-5, epochs=2, read_last_real=True)
    assert ours == pytest.approx(book, abs=1e-5, rel=0)
    last_position, _ = book_run(base_ckpt, padded, lr=5e-5, epochs=2)
    assert abs(ours[0] - last_position[0]) > 1e-3  # from the first step on
    assert "read each text's last real token (book: the last position, padding" in log
    # Other settings are not the book's recipe: no such line.
    _, log, _ = run_preset("book-ch6", base_ckpt, padded, tmp_path / "c",
                           **{"train.lr": 1e-3, "train.max_steps": 1})  # fmt: skip
    assert "recipe: preset" not in log
    _, log, _ = run_preset("book-ch6", base_ckpt, padded, tmp_path / "d",
                           **{"model.drop_rate": 0.1, "train.max_steps": 1})  # fmt: skip
    assert "recipe: preset book-ch6" in log and "dropout 0.1 (book: 0.0)" in log


def test_book_note_names_the_preset_only_for_its_recipe():
    from scratchgpt.tasks.classify.book import book_note

    def note(preset: str, **over: Any) -> str | None:
        d = ClassifyConfig.merge(
            ClassifyConfig.preset_dict(preset), {"model.random_init": "tiny", **over}, "test"
        )
        cfg = ClassifyConfig.from_dict(d)
        torch.manual_seed(0)
        model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=100))
        c = cfg.classify
        make_classifier(model, 2, trainable=c.trainable, lora_rank=c.lora_rank)
        return book_note(cfg, model)

    assert note("book-ch6").startswith("recipe: preset book-ch6 (the book's chapter 6)")
    assert "bf16 autocast (book: fp32)" in note("book-ch6", **{"train.precision": "bf16"})
    # Shorter, longer, other seeds and evaluation schedules are still the recipe.
    assert note("book-ch6", **{"train.max_epochs": 1, "train.seed": 7, "train.eval_interval": 3})
    assert note("book-appendix-e", **{"classify.train_blocks": 2}).startswith(
        "recipe: preset book-appendix-e (the book's appendix E)"
    )
    for preset, key, value in [
        ("book-ch6", "train.grad_clip", 1.0),
        ("book-ch6", "train.decay_all_parameters", False),
        ("book-ch6", "train.schedule", "cosine"),
        ("book-ch6", "train.batch_size", 4),
        ("book-ch6", "classify.trainable", "lora"),  # LoRA at chapter 6's lr is not appendix E
        ("book-ch6", "classify.train_blocks", 2),
        ("book-appendix-e", "classify.lora_rank", 8),
    ]:
        assert note(preset, **{key: value}) is None, key
