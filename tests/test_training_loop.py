"""The training loop: determinism, gradient accumulation, exact resume, checkpoints, failures."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from scratchgpt.config import GPTConfig
from scratchgpt.data.pretraining import SlidingWindowDataset
from scratchgpt.errors import CheckpointError
from scratchgpt.model import GPTModel
from scratchgpt.tasks.pretrain import PretrainTask, pretrain
from scratchgpt.training import state as st
from scratchgpt.training.config import RunConfig, TrainConfig
from scratchgpt.training.logging import read_metrics
from scratchgpt.training.loop import TrainingDivergedError, train
from scratchgpt.training.run_dir import prepare_run_dir
from scratchgpt.training.sampler import EpochBatchSampler
from scratchgpt.training.setup import build_optimizer

# ~700 characters: 43 windows of 16 -> 10 micro-batches of 4 per epoch, so a dozen steps cross
# epoch boundaries (a new shuffled order) several times.
TEXT = (
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it "
    "was no great surprise to me to hear that, in the height of his glory, he had dropped his "
    "painting, married a rich widow, and established himself in a villa on the Riviera. The height "
    "of his glory--that was what the women called it. I can hear Mrs. Gideon Thwing--his last "
    "Chicago sitter--deploring his unaccountable abdication. Of course it was really wasteful of "
    "him to stop. Poor Jack! He had been the fashionable painter and now he had simply given up. "
    "Mrs. Thwing was quite right; it was a pity, and it seemed unaccountable at first. But "
    "Mrs. Gisburn's drawing-room explained it: the pictures had all gone and only one remained."
)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and other test processes share this machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def char_config(text_path, **train):
    base = {
        "batch_size": 4,
        "max_steps": 12,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup_steps": 3,
        "min_lr": 1e-4,
        "grad_clip": 1.0,
        "eval_interval": 4,
        "eval_batches": 2,
        "sample_tokens": 0,
        "sample_prompt": "Jack",
        "progress": False,
        "plot": False,
        "precision": "fp32",
        "checkpoint_interval": 3,
        "keep_last": 10,
        "seed": 7,
        "peak_tflops": 1.0,
    }
    base.update(train)
    return RunConfig.from_dict(
        {
            "model": {
                "preset": "tiny",
                "context_length": 16,
                "emb_dim": 16,
                "n_heads": 2,
                "n_layers": 2,
                "drop_rate": 0.1,
            },
            "data": {
                "source": str(text_path),
                "tokenizer": "char",
                "max_length": 16,
                "stride": 16,
                "train_ratio": 0.8,
            },
            "train": base,
        }
    )


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def losses(run_dir, key="train_loss"):
    return {r["step"]: r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r}


@pytest.fixture
def full_run(tmp_path, text_file):
    run = tmp_path / "full"
    result = pretrain(char_config(text_file), run)
    assert result.status == "completed" and result.steps == 12
    return run


def test_same_seed_same_losses_and_seed_matters(tmp_path, text_file, full_run):
    again = tmp_path / "again"
    pretrain(char_config(text_file), again)
    assert losses(again) == losses(full_run)
    assert len(losses(full_run)) == 12
    other = tmp_path / "other"
    pretrain(char_config(text_file, seed=8), other)
    assert losses(other) != losses(full_run)


def test_evaluation_and_samples_draw_no_random_numbers(tmp_path, text_file, full_run):
    # Dropout is on: if evaluating or sampling consumed RNG, the training losses would change.
    busy = tmp_path / "busy"
    pretrain(char_config(text_file, eval_interval=1, sample_interval=2, sample_tokens=3), busy)
    assert losses(busy) == losses(full_run)
    assert "sample" in read_metrics(busy / "metrics.jsonl")[1]


def test_resume_after_crash_reproduces_the_losses_exactly(tmp_path, full_run):
    # Simulate a crash right after step 6's checkpoint: later checkpoints lost, `latest` behind,
    # metrics.jsonl holding records past the checkpoint and a torn last line.
    crashed = tmp_path / "crashed"
    shutil.copytree(full_run, crashed)
    ckpts = crashed / "checkpoints"
    for name in ("step-000009", "step-000012"):
        shutil.rmtree(ckpts / name)
    (ckpts / "latest").write_text("step-000006\n")
    (ckpts / ".tmp-step-000009").mkdir()
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "train_lo')
    cfg = RunConfig.load(crashed / "config.yaml")
    result = pretrain(cfg, crashed, resume=True)
    assert result.steps == 12
    assert losses(crashed) == losses(full_run)
    assert losses(crashed, "val_loss") == losses(full_run, "val_loss")
    assert not (ckpts / ".tmp-step-000009").exists()
    steps = [r["step"] for r in read_metrics(crashed / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # no duplicated or stale records
    run = json.loads((crashed / "run.json").read_text())
    assert run["resumes"][0]["resumed_from_step"] == 6


def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, full_run):
    crashed = tmp_path / "crashed"
    shutil.copytree(full_run, crashed)
    ckpts = crashed / "checkpoints"
    shutil.rmtree(ckpts / "step-000012")
    (ckpts / "latest").write_text("step-000009\n")
    state = ckpts / "step-000009" / st.STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    with pytest.warns(
        UserWarning, match=r"skipping checkpoint step-000009: .*training_state.pt: corrupt"
    ):
        result = pretrain(RunConfig.load(crashed / "config.yaml"), crashed, resume=True)
    assert result.steps == 12 and losses(crashed) == losses(full_run)


def test_training_state_never_unpickles_objects(tmp_path, full_run):
    ckpt = full_run / "checkpoints" / "step-000012"
    state = torch.load(ckpt / st.STATE_FILE, weights_only=True)  # plain data only
    assert state["step"] == 12 and set(state["rng"]) >= {"python", "numpy", "torch", "cuda"}
    assert state["epoch"] >= 1 and "optimizer" in state and state["scheduler"]["kind"] == "cosine"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": st.STATE_FORMAT, "version": 1, "x": Evil()}, ckpt / st.STATE_FILE)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        st.read_training_checkpoint(ckpt, GPTConfig.load(ckpt / "config.json"))


def test_checkpoint_of_another_model_is_refused(tmp_path, text_file, full_run):
    cfg = char_config(text_file).with_overrides({"model.n_layers": 3})
    with pytest.raises(
        CheckpointError, match=r"different model config \(n_layers: checkpoint 2, this run 3\)"
    ):
        pretrain(cfg, full_run, resume=True)


def test_retention_keeps_last_n_and_best(tmp_path, text_file):
    run = tmp_path / "run"
    result = pretrain(char_config(text_file, checkpoint_interval=2, keep_last=2), run)
    ckpts = run / "checkpoints"
    names = sorted(p.name for p in st.list_checkpoints(ckpts))
    val = losses(run, "val_loss")
    saved_steps = range(2, 13, 2)
    best_step = min(saved_steps, key=lambda s: val[s])
    best = f"step-{best_step:06d}"
    assert (ckpts / "best").read_text().strip() == best
    assert set(names) == {"step-000010", "step-000012", best}
    assert (ckpts / "latest").read_text().strip() == "step-000012"
    assert result.best_checkpoint == ckpts / best
    assert st.resolve_checkpoint(run) == ckpts / "step-000012"
    assert st.resolve_checkpoint(run, "best") == ckpts / best


def test_checkpoint_folder_loads_as_a_model(full_run):
    from scratchgpt.weights import load_checkpoint

    loaded = load_checkpoint(st.resolve_checkpoint(full_run))
    assert loaded.metadata["task"] == "pretrain" and loaded.metadata["step"] == 12
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("Jack")) == "Jack"
    # A run folder works wherever a checkpoint does: it means the newest complete checkpoint.
    from_run = load_checkpoint(full_run)
    assert from_run.path == loaded.path and from_run.metadata["step"] == 12
    from scratchgpt.cli import main

    assert main(["info", "--checkpoint", str(full_run), "--json"]) == 0


def test_metrics_and_run_json(full_run):
    records = read_metrics(full_run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))
    for r in records:
        assert {"step", "epoch", "tokens_seen", "lr", "train_loss"} <= set(r)
    assert records[0]["tokens_seen"] == 4 * 16 and records[-1]["tokens_seen"] == 12 * 4 * 16
    assert records[-1]["epoch"] == 2  # 9 steps per epoch (8 of the 10 micro-batches: 80% split)
    assert {"val_loss", "val_ppl", "eval_train_loss"} <= set(records[3])
    run = json.loads((full_run / "run.json").read_text())
    assert {"python", "torch", "scratchgpt"} <= set(run["versions"])
    assert run["machine"]["cpu_count"] >= 1 and isinstance(run["command"], list)
    assert run["config"]["train"]["seed"] == 7 and run["config"]["resolved_model"]["n_layers"] == 2


def _random_ids(n=600, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g)


def _train_weights(tmp_path, name, batch_size, k):
    torch.manual_seed(0)
    cfg = GPTConfig.from_preset("tiny", vocab_size=50, context_length=16, drop_rate=0.0)
    model = GPTModel(cfg)
    data = SlidingWindowDataset(_random_ids(), max_length=16, stride=8)
    tc = TrainConfig(
        batch_size=batch_size,
        grad_accum_steps=k,
        max_steps=5,
        lr=1e-2,
        eval_interval=0,
        eval_batches=1,
        progress=False,
        plot=False,
        sample_tokens=0,
        grad_clip=0.5,
        seed=3,
        peak_tflops=1.0,
    )
    run = prepare_run_dir(tmp_path / name)
    train(model, PretrainTask(), data, None, tc, run)
    return model, losses(run), losses(run, "grad_norm")


def test_gradient_accumulation_equals_a_larger_batch(tmp_path):
    big, big_losses, big_norms = _train_weights(tmp_path, "big", batch_size=8, k=1)
    acc, acc_losses, acc_norms = _train_weights(tmp_path, "acc", batch_size=2, k=4)
    assert big_losses.keys() == acc_losses.keys() == set(range(1, 6))
    for s in big_losses:
        assert acc_losses[s] == pytest.approx(big_losses[s], abs=1e-6)
        # The gradient norm is a function of the whole accumulated gradient.
        assert acc_norms[s] == pytest.approx(big_norms[s], rel=1e-5)
    # Adam divides by sqrt(v), so float-rounding noise in near-zero gradient entries is
    # magnified in the update: after five steps the weights agree to 1e-4, not 1e-6.
    for (name, a), b in zip(big.state_dict().items(), acc.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=name)


def test_weight_decay_only_on_matrices():
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50, qkv_bias=True, tie_weights=True))
    names = {id(p): n for n, p in model.named_parameters()}
    for decay_emb in (True, False):
        opt = build_optimizer(model, TrainConfig(weight_decay=0.1, decay_embeddings=decay_emb))
        decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
        plain = {names[id(p)] for p in opt.param_groups[1]["params"]}
        assert (
            opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0
        )
        assert not decayed & plain and len(decayed) + len(plain) == len(names)
        assert all(n.endswith("weight") for n in decayed)
        assert "trf_blocks.0.att.W_query.bias" in plain and "final_norm.scale" in plain
        assert "trf_blocks.1.ff.layers.2.weight" in decayed
        assert ("tok_emb.weight" in decayed) is decay_emb and (
            "pos_emb.weight" in decayed
        ) is decay_emb


def test_data_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch, start=0):
        return list(
            EpochBatchSampler(
                10, 3, shuffle=True, drop_last=True, seed=seed, epoch=epoch, start=start
            )
        )

    assert order(1, 0) == order(1, 0) and order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert order(1, 2, start=1) == order(1, 2)[1:]
    assert len(order(1, 0)) == 3 and sorted(i for b in order(1, 0) for i in b) != list(range(10))


class NaNAfter(PretrainTask):
    def __init__(self, bad_call):
        super().__init__()
        self.calls, self.bad_call = 0, bad_call

    def loss(self, model, batch):
        loss = super().loss(model, batch)
        self.calls += 1
        return loss * float("nan") if self.calls >= self.bad_call else loss


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from scratchgpt.tokenizers import get_tokenizer

    tok = get_tokenizer("char", corpus="abcdefgh")
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=tok.vocab_size, context_length=16))
    data = SlidingWindowDataset(torch.arange(200) % 8, max_length=8, stride=8)
    tc = TrainConfig(
        batch_size=2,
        max_steps=10,
        eval_interval=0,
        checkpoint_interval=2,
        progress=False,
        plot=False,
        sample_tokens=0,
        peak_tflops=1.0,
    )
    run = prepare_run_dir(tmp_path / "nan")
    with pytest.raises(
        TrainingDivergedError, match=r"non-finite training loss \(nan\) at step 5 .*step-000004"
    ):
        train(model, NaNAfter(bad_call=5), data, None, tc, run, tokenizer=tok)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000004"
    assert max(losses(run)) == 4


def test_run_folder_protection(tmp_path):
    run = prepare_run_dir(tmp_path / "r")
    (run / "run.json").write_text("{}")
    (run / "checkpoints" / "step-000001").mkdir(parents=True)  # something to continue
    with pytest.raises(FileExistsError, match=r"--resume .* --overwrite"):
        prepare_run_dir(run)
    assert prepare_run_dir(run, resume=True) == run
    prepare_run_dir(run, overwrite=True)
    assert not (run / "run.json").exists()
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="already holds a run"):
        prepare_run_dir(other)  # no checkpoint, but not a run folder either: not reused
    with pytest.raises(FileExistsError, match="does not look like a scratchgpt run folder"):
        prepare_run_dir(other, overwrite=True)
    assert [p.name for p in other.iterdir()] == ["thesis.tex"]  # not even a lock file left


@pytest.mark.skipif(
    not (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    ),
    reason="CPU without native bf16",
)
def test_bf16_autocast_trains_close_to_fp32(tmp_path, text_file, full_run):
    run = tmp_path / "bf16"
    pretrain(char_config(text_file, precision="bf16", max_steps=3), run)
    fp32, bf16 = losses(full_run), losses(run)
    assert bf16[1] == pytest.approx(fp32[1], rel=2e-2) and bf16[1] != fp32[1]


def test_pretrain_on_prepared_token_shards(tmp_path):
    from scratchgpt.data.corpus import prepare
    from scratchgpt.tokenizers import get_tokenizer

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.txt").write_text(TEXT[i * 100 :] + TEXT[: i * 100], encoding="utf-8")
    tok = get_tokenizer("char", corpus=TEXT)
    tok_file = tok.save(tmp_path / "tok.json")
    shards = tmp_path / "shards"
    prepare(docs, shards, tok_file, val_fraction=0.3, num_workers=1, progress=False, seed=1)
    cfg = RunConfig.from_dict(
        {
            "model": {"preset": "tiny", "context_length": 16, "emb_dim": 16, "n_heads": 2},
            "data": {"source": str(shards), "max_length": 16},
            "train": {
                "max_steps": 3,
                "batch_size": 4,
                "sample_tokens": 0,
                "progress": False,
                "plot": False,
                "peak_tflops": 1.0,
            },
        }
    )
    result = pretrain(cfg, tmp_path / "run")
    assert result.steps == 3 and result.val_loss is not None
    loaded_tok = st.resolve_checkpoint(tmp_path / "run") / "tokenizer.json"
    assert json.loads(loaded_tok.read_text())["type"] == "char"  # the shards' own tokenizer
