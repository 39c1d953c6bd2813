"""The training loop's small parts alone: state, the no-op job, print0, the one loss and
perplexity, and the old import paths of names that moved."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scratchgpt.training import job as jb
from scratchgpt.training.distributed import print0
from scratchgpt.training.state import TrainState
from scratchgpt.training.task import PERPLEXITY_KEY, next_token_loss, perplexity


def test_train_state_round_trip(tmp_path):
    root = tmp_path / "checkpoints"
    s = TrainState(step=8, epoch=1, batch_in_epoch=4, tokens_seen=512, val_loss=2.5,
                   best_val_loss=2.5, best_checkpoint=root / "step-000008",
                   last_checkpoint=root / "step-000008", elapsed_s=3.0)  # fmt: skip
    d = s.to_dict()
    assert d["best_checkpoint"] == "step-000008" and "last_checkpoint" not in d
    back = TrainState.from_dict(d, root / "step-000008")
    assert back == s
    assert s.saved_now() and not s.is_new_best()
    s.step, s.val_loss = 9, 2.0
    assert not s.saved_now() and s.is_new_best()
    assert TrainState().is_new_best() is False


def test_single_process_job_is_a_no_op():
    job = jb.for_job("ddp")
    assert isinstance(job, jb.SingleProcess) and not job.enabled and not job.fsdp
    assert (job.rank, job.world_size, job.is_main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    assert job.wrap(model, torch.device("cpu")) is model
    assert job.all_sum([1.5, 3, 0.0], torch.device("cpu")) == [1.5, 3, 0.0]
    assert job.all_gather_objects("x") == ["x"]
    assert job.full_model(model) is model
    assert job.full_optimizer_state(model, opt) == opt.state_dict()
    assert job.run_info("ddp", 8) is None
    with job.grad_sync(last=False):
        job.barrier()


def test_print0_only_on_rank_0(monkeypatch, capsys):
    lines: list[str] = []
    print0("a", 1)
    print0("b", writer=lines.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    print0("c")
    print0("d", writer=lines.append)
    assert capsys.readouterr().out == "a 1\n" and lines == ["b"]


def test_next_token_loss_and_perplexity():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[0, :2] = -100
    want = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.equal(next_token_loss(logits, None, targets), want)
    model = torch.nn.Embedding(7, 7)
    ids = torch.randint(0, 7, (2, 5))
    assert torch.equal(
        next_token_loss(model, ids, targets), next_token_loss(model(ids), ids, targets)
    )
    total = next_token_loss(logits, None, targets, reduction="sum")
    assert float(total) == pytest.approx(float(want) * 8, rel=1e-6)
    assert perplexity(math.log(3.0)) == pytest.approx(3.0)
    assert math.isfinite(perplexity(1e9)) and PERPLEXITY_KEY == "ppl"


def test_evaluate_loss_old_perplexity_key_warns():
    from scratchgpt.evaluation.metrics import evaluate_loss

    torch.manual_seed(0)
    model = torch.nn.Embedding(7, 7)
    data = [(torch.randint(0, 7, (5,)), torch.randint(0, 7, (5,))) for _ in range(3)]
    result = evaluate_loss(model, data, batch_size=2)
    assert "perplexity" not in result and result["ppl"] == pytest.approx(math.exp(result["loss"]))
    with pytest.warns(DeprecationWarning, match="'ppl'"):
        assert result["perplexity"] == result["ppl"]


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("EpochBatchSampler", "sampler"),
        ("epoch_seed", "sampler"),
        ("resolve_device", "setup"),
        ("resolve_precision", "setup"),
        ("cpu_has_fast_bf16", "setup"),
        ("build_optimizer", "setup"),
        ("to_device", "setup"),
        ("prepare_run_dir", "run_dir"),
    ],
)
def test_moved_names_warn_from_loop(name, home):
    new = getattr(importlib.import_module(f"scratchgpt.training.{home}"), name)
    loop = importlib.import_module("scratchgpt.training.loop")
    with pytest.warns(DeprecationWarning, match=f"scratchgpt.training.{home}.{name}"):
        assert getattr(loop, name) is new


def test_documented_names_stay_in_training_package():
    import scratchgpt.training as tr
    from scratchgpt.training.run_dir import prepare_run_dir
    from scratchgpt.training.setup import build_optimizer

    assert tr.prepare_run_dir is prepare_run_dir and tr.build_optimizer is build_optimizer
    assert tr.TrainState is TrainState and tr.perplexity is perplexity


def test_train_is_short_and_has_no_closures():
    import ast

    src = Path(importlib.import_module("scratchgpt.training.loop").__file__).read_text("utf-8")
    fn = next(
        n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "train"
    )
    assert fn.end_lineno - fn.lineno <= 210
    nested = [
        n for n in ast.walk(fn) if isinstance(n, (ast.FunctionDef, ast.Lambda)) and n is not fn
    ]
    assert not nested and "nonlocal" not in ast.get_source_segment(src, fn)
