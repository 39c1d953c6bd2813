"""Preference tuning (DPO): the loss against the book's code, data, collate, the reference model,
and tiny runs through the recipe and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from book_reference import book_compute_dpo_loss, book_compute_logprobs
from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.instructions import IGNORE_INDEX, load_preference_records
from scratchgpt.data.preferences import PreferenceDataset, preference_collate
from scratchgpt.errors import DataError
from scratchgpt.tasks.dpo import (
    DPOConfig,
    DPOTask,
    book_dpo_train_config,
    dpo_loss,
    finetune_dpo,
    sequence_logprobs,
)
from scratchgpt.training.logging import read_metrics


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gpt2_tok():
    from scratchgpt.tokenizers import get_tokenizer

    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, gpt2_tok):
    from scratchgpt.model import GPTModel
    from scratchgpt.weights import save_checkpoint

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=128))
    path = tmp_path_factory.mktemp("base") / "ckpt"
    save_checkpoint(path, model, gpt2_tok, metadata={"task": "instruct", "prompt_style": "alpaca"})
    return path


def _pairs(n: int) -> list[dict[str, str]]:
    """Records whose chosen answer is always polite and whose rejected one is always rude: a
    preference a tiny model learns in a few steps, also for records it never saw."""
    topics = ["the weather", "a cat", "the sea", "bread", "music", "a tree", "the moon", "tea"]
    return [
        {
            "instruction": f"Write one sentence about {topics[i % len(topics)]}.",
            "input": "" if i % 2 else f"Example {i}",
            "output": "Here it is.",
            "chosen": "Certainly, here is a kind sentence for you.",
            "rejected": "No. Do it yourself, I do not care.",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prefs.json"
    path.write_text(json.dumps(_pairs(40)), encoding="utf-8")
    return path


# ---- the loss and the log-probabilities against the book's code --------------------------------


def test_loss_rewards_and_logprobs_equal_the_books():
    torch.manual_seed(3)
    B, T, V = 4, 9, 11
    logits = torch.randn(4, B, T, V)  # policy chosen/rejected, reference chosen/rejected
    labels = torch.randint(0, V, (B, T))
    mask = torch.zeros(B, T, dtype=torch.bool)
    for row, (start, end) in enumerate([(3, 9), (2, 6), (5, 8), (1, 9)]):
        mask[row, start:end] = True  # the response tokens, then padding
    # Ours: targets aligned with the logits (target t is token t + 1), the rest ignored.
    targets = torch.full((B, T), IGNORE_INDEX)
    targets[:, :-1] = torch.where(mask[:, 1:], labels[:, 1:], IGNORE_INDEX)

    ours = [sequence_logprobs(lg, targets, "mean") for lg in logits]
    books = [book_compute_logprobs(lg, labels, mask) for lg in logits]
    for a, b in zip(ours, books):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for beta in (0.1, 0.5):
        out = dpo_loss(*ours, beta=beta)
        loss, chosen, rejected = book_compute_dpo_loss(*books, beta=beta)
        torch.testing.assert_close(out.losses.mean(), loss, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.chosen_rewards.mean(), chosen, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.rejected_rewards.mean(), rejected, rtol=0, atol=1e-6)
    # The sum (the DPO paper, TRL): the mean times the number of response tokens.
    torch.testing.assert_close(
        sequence_logprobs(logits[0], targets, "sum"),
        ours[0] * mask[:, 1:].sum(-1),
        atol=1e-5,
        rtol=0,
    )


# ---- data and collate ------------------------------------------------------------------------


def test_bundled_preference_data_and_bad_records(tmp_path):
    records = load_preference_records()
    assert len(records) == 1100 and records[0]["chosen"] and records[0]["rejected"]
    bad = tmp_path / "bad.jsonl"
    rows = [{"prompt": "a", "chosen": "x", "rejected": "y"},
            {"prompt": "b", "chosen": "x", "rejected": "  "}]  # fmt: skip
    bad.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="record 1: field 'rejected' is empty"):
        load_preference_records(bad, fields={"instruction": "prompt"})
    with pytest.raises(DataError, match="record 0 has no field 'instruction'"):
        load_preference_records(bad)
    rows[1]["rejected"] = "z"
    del rows[0]["chosen"]
    rows[0]["better"] = "x"
    bad.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="record 1 has no field 'better'"):
        load_preference_records(bad, fields={"instruction": "prompt", "chosen": "better"})


def test_collate_scores_only_the_response_tokens(gpt2_tok):
    recs = _pairs(2)
    ds = PreferenceDataset(recs, gpt2_tok, "alpaca")
    inputs, targets = preference_collate([ds[0], ds[1]], allowed_max_length=None)
    assert inputs.shape[0] == 4 and targets.shape == inputs.shape
    for row, (rec, key) in enumerate([(recs[0], "chosen"), (recs[1], "chosen"),
                                      (recs[0], "rejected"), (recs[1], "rejected")]):  # fmt: skip
        counted = targets[row][targets[row] != IGNORE_INDEX].tolist()
        assert gpt2_tok.decode(counted) == rec[key]
        ids, _ = ds[row % 2][0 if key == "chosen" else 1]
        assert inputs[row, : len(ids)].tolist() == ids
        assert (inputs[row, len(ids) :] == 50256).all()
    cut, cut_t = preference_collate([ds[0]], allowed_max_length=5)
    assert cut.shape == (2, 5) and (cut_t == IGNORE_INDEX).all()


def test_lora_disabled_is_the_base_model():
    from scratchgpt.model import GPTModel
    from scratchgpt.model.lora import apply_lora, lora_disabled

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=97)).eval()
    x = torch.randint(0, 97, (2, 7))
    base = model(x)
    apply_lora(model, 2, 16.0)
    for name, p in model.named_parameters():
        if name.endswith("lora.B"):
            torch.nn.init.normal_(p)
    assert not torch.allclose(model(x), base)
    with lora_disabled(model) as n:
        assert n > 0
        torch.testing.assert_close(model(x), base)
    assert not torch.allclose(model(x), base)


# ---- runs --------------------------------------------------------------------------------------


def _cfg(ckpt: Path, data: Path, **dpo) -> DPOConfig:
    train = book_dpo_train_config(
        max_steps=8, batch_size=4, lr=3e-3, eval_interval=4, eval_batches=2, sample_tokens=4,
        progress=False, plot=True,
    )  # fmt: skip
    return DPOConfig(
        model={"checkpoint": str(ckpt)},
        data={"source": str(data)},
        train=train,
        dpo={"response_tokens": 4, **dpo},
    )


def _evals(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_tiny_dpo_raises_validation_reward_accuracy_and_margin(
    tmp_path, tiny_ckpt, pref_file, lora_rank
):
    run = tmp_path / "run"
    result = finetune_dpo(_cfg(tiny_ckpt, pref_file, lora_rank=lora_rank), run)
    assert result.split_sizes == {"train": 34, "test": 4, "val": 2}
    evals = _evals(run)
    first, last = evals[0], evals[-1]
    # Before training the policy is the reference: every reward is 0 and the loss log 2.
    assert first["step"] == 0
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["val_reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert first["val_reward_accuracy"] == 0.0
    assert last["val_reward_margin"] > 0.05 and last["val_reward_accuracy"] == 1.0
    assert last["val_loss"] < first["val_loss"]
    assert last["val_chosen_reward"] > last["val_rejected_reward"]
    assert (run / "rewards.png").is_file() and (run / "responses.json").is_file()
    from scratchgpt.weights import load_model

    loaded = load_model(run)
    assert loaded.metadata["task"] == "dpo" and loaded.metadata["prompt_style"] == "alpaca"
    assert (loaded.metadata["lora"] or {}).get("rank", 0) == lora_rank


def test_reference_stays_frozen_while_the_policy_trains(tiny_ckpt, pref_file, gpt2_tok):
    from scratchgpt.data.preferences import PreferenceCollator
    from scratchgpt.tasks.dpo.task import reference_copy
    from scratchgpt.weights import load_model

    model = load_model(tiny_ckpt).model.train()
    task = DPOTask(reference_copy(model), beta=0.1)
    batch = PreferenceCollator()(list(PreferenceDataset(_pairs(4), gpt2_tok)))
    before = [t.clone() for t in task.reference_logprobs(model, batch)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    task.loss(model, batch).backward()
    opt.step()
    after = task.reference_logprobs(model, batch)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    assert task.loss(model, batch).item() != pytest.approx(math.log(2), abs=1e-6)


def test_cli_finetune_dpo_then_respond(tmp_path, tiny_ckpt, pref_file, capsys):
    run = tmp_path / "run"
    args = [
        "finetune-dpo", "--checkpoint", str(tiny_ckpt), "--data", str(pref_file),
        "--out", str(run), "--max-steps", "2", "--batch-size", "2", "--beta", "0.5",
        "--logprob", "sum", "--sample-tokens", "0", "--response-tokens", "3", "--no-plot",
        "--no-progress", "--eval-batches", "1",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Val reward margins" in out and "reference: a frozen copy" in out
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    assert set(saved) == {"model", "data", "train", "dpo"}
    assert saved["dpo"]["beta"] == 0.5 and saved["dpo"]["logprob"] == "sum"
    assert saved["train"]["lr"] == 5e-6 and saved["dpo"]["prompt_style"] == "alpaca"
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err

    answers = tmp_path / "answers.json"
    respond = ["respond", "--checkpoint", str(run), "--data", str(pref_file), "--limit", "2",
               "--max-new-tokens", "3", "--out", str(answers)]  # fmt: skip
    assert main(respond) == 0
    assert "prompt style alpaca" in capsys.readouterr().err
    assert len(json.loads(answers.read_text("utf-8"))) == 2


def test_cli_names_a_bad_record(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([*_pairs(3), {**_pairs(1)[0], "chosen": ""}]), encoding="utf-8")
    args = ["finetune-dpo", "--checkpoint", str(tiny_ckpt), "--data", str(bad),
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 2
    assert "record 3: field 'chosen' is empty" in capsys.readouterr().err
    assert main(["finetune-dpo", "--out", str(tmp_path / "r2")]) == 2
    assert "--checkpoint DIR or --gpt2 NAME" in capsys.readouterr().err


@pytest.mark.slow
def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, tiny_ckpt, pref_file):
    from scratchgpt.weights import load_model

    def cfg(steps: int) -> DPOConfig:
        c = _cfg(tiny_ckpt, pref_file, responses=False)
        return c.with_overrides({"train.max_steps": steps, "train.plot": False})

    finetune_dpo(cfg(6), tmp_path / "whole")
    finetune_dpo(cfg(3), tmp_path / "parts")
    finetune_dpo(cfg(6), tmp_path / "parts", resume=True)
    whole, parts = load_model(tmp_path / "whole"), load_model(tmp_path / "parts")
    for (name, a), b in zip(whole.model.state_dict().items(), parts.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert _evals(tmp_path / "whole")[-1]["val_loss"] == _evals(tmp_path / "parts")[-1]["val_loss"]


def test_chat_template_family_model_trains_in_its_template(tmp_path):
    from hf_fixtures import MODEL_VOCAB_SIZE, write_qwen3_tokenizer
    from scratchgpt.model import build_model
    from scratchgpt.tokenizers.hf import HFTokenizer
    from scratchgpt.weights import load_model
    from scratchgpt.weights.hf import save_hf_model

    write_qwen3_tokenizer(tmp_path / "tok")
    tok = HFTokenizer.from_folder(tmp_path / "tok")
    torch.manual_seed(0)
    cfg = GPTConfig.from_preset("qwen3-tiny", vocab_size=MODEL_VOCAB_SIZE, context_length=128)
    folder = save_hf_model(build_model(cfg).eval(), tmp_path / "model", tokenizer=tok)
    data = tmp_path / "prefs.json"
    data.write_text(json.dumps(_pairs(12)), encoding="utf-8")
    c = _cfg(folder, data, lora_rank=2, responses=False)
    c = c.with_overrides({"train.max_steps": 2, "train.plot": False})
    result = finetune_dpo(c, tmp_path / "run")
    assert result.train.steps == 2
    tuned = load_model(tmp_path / "run")
    assert tuned.metadata["prompt_style"] == "chat" and tuned.metadata["task"] == "dpo"
    # Only the answer and the template's end of turn count.
    ds = PreferenceDataset(_pairs(1), tuned.tokenizer, "chat")
    _, targets = preference_collate([ds[0]])
    counted = tuned.tokenizer.decode(targets[0][targets[0] != IGNORE_INDEX].tolist())
    assert counted.startswith(_pairs(1)[0]["chosen"]) and "<|im_end|>" in counted
    assert "<|im_start|>" not in counted


def test_accumulated_micro_batches_equal_one_bigger_batch(tmp_path, tiny_ckpt, pref_file):
    from scratchgpt.weights import load_model

    def run(name: str, batch: int, accum: int):
        c = _cfg(tiny_ckpt, pref_file, responses=False)
        over = {"train.max_steps": 2, "train.batch_size": batch, "train.grad_accum_steps": accum,
                "train.shuffle": False, "train.plot": False, "train.eval_at_start": False}  # fmt: skip
        finetune_dpo(c.with_overrides(over), tmp_path / name)
        return load_model(tmp_path / name).model.state_dict()

    big, small = run("big", 4, 1), run("small", 2, 2)
    for name, a in big.items():
        torch.testing.assert_close(a, small[name], rtol=0, atol=2e-6, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_ddp_under_torchrun_equals_one_process(tmp_path, tiny_ckpt, pref_file, lora_rank):
    """Two ranks of 2 pairs give the run of one process accumulating 2 micro-batches of 2: the
    reference (a frozen copy, or the DDP-wrapped policy with its adapters off) is the same."""
    import os
    import subprocess
    import sys

    common = ["--checkpoint", str(tiny_ckpt), "--data", str(pref_file), "--max-steps", "2",
              "--batch-size", "2", "--lr", "3e-3", "--eval-interval", "1", "--eval-batches", "2",
              "--lora-rank", str(lora_rank), "--no-responses", "--sample-tokens", "0",
              "--no-plot", "--no-progress", "--device", "cpu"]  # fmt: skip
    one = tmp_path / "one"
    assert main(["finetune-dpo", "--out", str(one), *common, "--grad-accum-steps", "2"]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scratchgpt", "finetune-dpo", "--out", str(two), *common, "--strategy", "ddp"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got, ref = read_metrics(two / "metrics.jsonl"), read_metrics(one / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    keys = ("train_loss", "val_loss", "val_reward_margin", "eval_train_reward_accuracy")
    for a, b in zip(got, ref, strict=True):
        for key in keys:
            assert (key in a) == (key in b)
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-5), (key, a["step"])
