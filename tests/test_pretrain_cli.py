"""`scratchgpt pretrain` and `scratchgpt plot` end to end, the shortened demo, the book's numbers."""

from __future__ import annotations

import json
import re

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.training.logging import read_metrics

# The demo is `scratchgpt pretrain --preset book-ch5 --out runs/demo --overwrite`; this is the same
# command shortened for the test suite: a tiny model, three steps.
DEMO_QUICK = [
    "pretrain",
    "--preset",
    "book-ch5",
    "--overwrite",
    "--model",
    "tiny",
    "--max-steps",
    "3",
    "--sample-tokens",
    "5",
    "--no-progress",
    "--peak-tflops",
    "1",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    torch.set_num_threads(1)
    assert main([*DEMO_QUICK, "--out", str(out)]) == 0
    return out


def test_demo_quick_trains_saves_logs_and_plots(demo_run, capsys):
    records = read_metrics(demo_run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # eval_at_start logs step 0
    assert records[0]["val_loss"] == pytest.approx(records[0]["eval_train_loss"], abs=0.5)
    assert records[-1]["sample"].startswith("Every effort moves you")
    assert (demo_run / "loss.png").stat().st_size > 1000 and (demo_run / "lr.png").is_file()
    latest = (demo_run / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-000003"
    run = json.loads((demo_run / "run.json").read_text())
    assert run["versions"]["torch"] == torch.__version__
    assert run["config"]["data"]["source"] == "the-verdict"
    assert run["config"]["resolved_model"]["vocab_size"] == 50257


def test_generate_from_the_demo_checkpoint(demo_run, capsys):
    ckpt = demo_run / "checkpoints" / "step-000003"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(ckpt),
                "--prompt",
                "Every effort moves you",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    assert "Every effort moves you" in capsys.readouterr().out


def test_plot_command_writes_png_and_pdf(demo_run, tmp_path, capsys):
    assert main(["plot", str(demo_run), "--pdf", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[1] for p in printed) == [
        "loss.pdf",
        "loss.png",
        "lr.pdf",
        "lr.png",
    ]
    assert (tmp_path / "loss.pdf").read_bytes().startswith(b"%PDF")
    assert main(["plot", str(tmp_path / "nothing-here")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_existing_run_needs_resume_or_overwrite(demo_run, capsys):
    args = ["pretrain", "--out", str(demo_run), "--model", "tiny", "--max-steps", "3"]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_reads_the_saved_config_and_extends_a_finished_run(demo_run, capsys):
    # Only --max-steps on the command line: model, data and the rest come from config.yaml.
    assert (
        main(
            [
                "pretrain",
                "--out",
                str(demo_run),
                "--resume",
                "--max-steps",
                "4",
                "--no-progress",
                "--peak-tflops",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "resuming from step-000003" in out
    assert [r["step"] for r in read_metrics(demo_run / "metrics.jsonl")] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/no/such/file.txt"], "no such file or folder, and not a bundled text"),
        (
            ["--max-length", "512"],
            r"data.max_length \(512\) exceeds the model's context_length \(256\)",
        ),
        (
            ["--vocab-size", "100"],
            r"model.vocab_size \(100\) is smaller than the tokenizer's vocabulary \(50257\)",
        ),
        (["--batch-size", "50"], "fewer than the batch size 50"),
        (["--lr", "-1"], "train.lr must be > 0"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    assert (
        main(
            [
                "pretrain",
                "--out",
                str(tmp_path / "r"),
                "--model",
                "tiny",
                "--max-steps",
                "1",
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.slow
def test_book_initial_losses_of_chapter_5(capsys):
    """Section 5.1.3: the untrained GPT-2 small (seed 123, context 256) on The Verdict gives
    training loss 10.98758347829183 and validation loss 10.98110580444336."""
    from torch.utils.data import DataLoader

    from scratchgpt.model import GPTModel
    from scratchgpt.tasks.pretrain import (
        build_pretraining_data,
        calc_loss_loader,
        resolve_model_config,
    )
    from scratchgpt.training.config import RunConfig

    torch.set_num_threads(2)
    cfg = RunConfig.preset("book-ch5").with_overrides({"model.attention": "explicit"})
    tokenizer, train_ds, val_ds, _ = build_pretraining_data(cfg.data)
    assert (len(train_ds), len(val_ds)) == (18, 2)  # 9 batches of 2; 1 validation batch
    torch.manual_seed(123)
    model = GPTModel(resolve_model_config(cfg, tokenizer)).eval()
    train_loader = DataLoader(train_ds, batch_size=2, shuffle=False, drop_last=True)
    val_loader = DataLoader(val_ds, batch_size=2, shuffle=False, drop_last=False)
    assert calc_loss_loader(train_loader, model) == pytest.approx(10.98758347829183, abs=1e-4)
    assert calc_loss_loader(val_loader, model) == pytest.approx(10.98110580444336, abs=1e-4)


def test_dotted_config_flags_equal_the_short_ones(tmp_path, capsys):
    """`--model.n_layers 3` (the config file's spelling) and `--n-layers 3` set the same field."""
    outputs = []
    for flags in (
        ["--model.n_layers", "3", "--train.lr", "0.001"],
        ["--n-layers", "3", "--lr", "0.001"],
    ):
        assert main(["pretrain", "--out", str(tmp_path / "r"), *flags, "--print-config"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "n_layers: 3" in outputs[0] and "lr: 0.001" in outputs[0]
