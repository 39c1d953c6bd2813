"""The mixture-of-experts feed-forward and the Qwen3-MoE configs: routing against a dense
reference, experts that run only on their tokens, the load-balancing loss, the presets' sizes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.generation import generate
from scratchgpt.model import build_model, model_stats
from scratchgpt.model.feed_forward import SwiGLUFeedForward
from scratchgpt.model.lora import apply_lora, merge_lora
from scratchgpt.model.moe import (
    MoEFeedForward,
    Router,
    expert_usage,
    load_balancing_loss,
    moe_aux_loss,
    moe_layers,
)
from scratchgpt.model.quantize import Int8Linear, quantize_model
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.task import next_token_loss
from scratchgpt.weights import load_model, save_checkpoint


def tiny(**changes) -> GPTConfig:
    return GPTConfig.from_preset("qwen3-moe-tiny", **changes)


def dense_reference(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by a (N, E) matrix that is zero off the top-k:
    the definition, without the routing machinery."""
    probs = torch.softmax(moe.gate(x), dim=-1)
    top, idx = probs.topk(moe.top_k, dim=-1)
    if moe.norm_topk_prob:
        top = top / top.sum(-1, keepdim=True)
    weights = torch.zeros_like(probs).scatter(-1, idx, top)  # (N, E)
    outs = torch.stack([expert(x) for expert in moe.experts], dim=1)  # (N, E, emb)
    return (weights.unsqueeze(-1) * outs).sum(dim=1)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_moe_equals_dense_reference(norm_topk_prob):
    torch.manual_seed(0)
    moe = MoEFeedForward(tiny(norm_topk_prob=norm_topk_prob, num_experts=6, num_experts_per_tok=3))
    x = torch.randn(2, 9, 32)
    out = moe(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dense_reference(moe, x.reshape(-1, 32)).reshape(x.shape))


def test_each_expert_runs_only_on_its_tokens():
    torch.manual_seed(1)
    moe = MoEFeedForward(tiny(num_experts=8, num_experts_per_tok=2))
    rows: dict[int, int] = {}
    for i, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, inp, out, i=i: rows.__setitem__(i, inp[0].shape[0]))
    x = torch.randn(1, 5, 32)
    moe(x)
    # 5 tokens x 2 experts: 10 rows in all, spread over at most 8 experts, none called empty.
    assert sum(rows.values()) == 10 and all(n > 0 for n in rows.values())
    _, _, chosen = moe.route(x.reshape(-1, 32))
    assert set(rows) == set(chosen.flatten().tolist())
    counts = torch.bincount(chosen.flatten(), minlength=8)
    assert moe.expert_counts.tolist() == counts.tolist()


def test_load_balancing_loss_values_and_gradient():
    # Even load: every expert gets the same share and the same mean probability -> k.
    probs = torch.full((8, 4), 0.25)
    assert load_balancing_loss(probs, torch.tensor([4, 4, 4, 4]), 8).item() == pytest.approx(2.0)
    # Collapsed: all 8 tokens to experts 0 and 1, which hold all the probability -> E * 2 * 0.5.
    collapsed = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).expand(8, 4)
    assert load_balancing_loss(collapsed, torch.tensor([8, 8, 0, 0]), 8).item() == pytest.approx(
        4.0
    )
    torch.manual_seed(2)
    model = build_model(tiny())
    model(torch.randint(0, model.cfg.vocab_size, (2, 6)))
    aux = moe_aux_loss(model)
    assert aux is not None and aux.item() >= 2.0 - 1e-5  # k = 2 is the minimum
    aux.backward()
    for moe in moe_layers(model):
        assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0
    usage = expert_usage(model)
    assert usage is not None and int(usage.sum()) == 2 * 6 * 2 * model.cfg.n_layers


def test_load_balancing_loss_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    transformers.logging.set_verbosity_error()
    torch.manual_seed(3)
    moe = MoEFeedForward(tiny(num_experts=6, num_experts_per_tok=2))
    x = torch.randn(1, 11, 32)
    moe(x)
    theirs = load_balancing_loss_func((moe.gate(x.reshape(-1, 32)),), 6, 2)
    torch.testing.assert_close(moe.aux_loss, theirs)


def test_block_layout_follows_sparse_step_and_mlp_only_layers():
    cfg = GPTConfig.from_preset("qwen3-moe-tiny", n_layers=4, decoder_sparse_step=2)
    kinds = [type(b.ff) for b in build_model(cfg).trf_blocks]
    assert kinds == [SwiGLUFeedForward, MoEFeedForward, SwiGLUFeedForward, MoEFeedForward]
    cfg = cfg.replace(decoder_sparse_step=1, mlp_only_layers=[0, 2])
    kinds = [type(b.ff) for b in build_model(cfg).trf_blocks]
    assert kinds == [SwiGLUFeedForward, MoEFeedForward, SwiGLUFeedForward, MoEFeedForward]
    model = build_model(cfg)
    assert model.num_parameters() == model_stats(cfg).total_params
    # GPT-2 init scales every expert's down projection, not only the last one's.
    projections = list(model.residual_projections())
    assert len(projections) == 4 + 2 + 2 * cfg.num_experts


def test_config_json_of_a_dense_model_is_unchanged():
    d = GPTConfig.from_preset("qwen3-tiny").to_dict()
    assert not {"num_experts", "norm_topk_prob", "mlp_only_layers"} & set(d)
    moe = tiny(mlp_only_layers=[1])
    d = moe.to_dict()
    assert d["num_experts"] == 4 and d["mlp_only_layers"] == [1]
    assert GPTConfig.from_dict(d) == moe


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(num_experts_per_tok=5), "at most num_experts"),
        (dict(moe_intermediate_size=None), "moe_intermediate_size must be a positive"),
        (dict(mlp_only_layers=[2]), "not layer indices"),
        (dict(decoder_sparse_step=0), "decoder_sparse_step must be a positive"),
        (dict(family="llama3", qk_norm=False), "belong to the qwen3 family"),
        (dict(num_experts=None), "set num_experts too"),
    ],
)
def test_bad_moe_configs_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_qwen3_30b_a3b_has_the_published_size():
    cfg = GPTConfig.from_preset("qwen3-30b-a3b")
    stats = model_stats(cfg)
    # The counts come from the config; a 2-layer model on the meta device checks them.
    two = cfg.replace(n_layers=2)
    with torch.device("meta"):
        model = build_model(two)
    assert model.num_parameters() == model_stats(two).total_params
    # Published: 30.5B parameters in all, 3.3B activated per token (30,532,122,624 and
    # 3,353,032,704: the model card truncates).
    assert 30.5e9 <= stats.total_params < 30.6e9
    assert 3.3e9 <= stats.active_params < 3.4e9
    dense = model_stats(GPTConfig.from_preset("qwen3-0.6b"))
    assert dense.active_params == dense.total_params


def test_info_reports_active_parameters(capsys):
    from scratchgpt.cli import main

    assert main(["info", "--preset", "qwen3-30b-a3b", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["parameters"]
    assert params["total"] == 30_532_122_624 and params["active_per_token"] == 3_353_032_704
    assert main(["info", "--preset", "qwen3-moe-tiny"]) == 0
    assert "active per token" in capsys.readouterr().out
    assert main(["info", "--preset", "qwen3-tiny", "--json"]) == 0
    assert "active_per_token" not in json.loads(capsys.readouterr().out)["parameters"]


def test_lora_on_attention_or_experts_trains_and_leaves_the_router_alone():
    torch.manual_seed(5)
    model = build_model(tiny())
    idx = torch.randint(0, model.cfg.vocab_size, (2, 12))
    n = apply_lora(copy.deepcopy(model), 4, 8.0, ["feed_forward"])
    assert n == model.cfg.n_layers * model.cfg.num_experts * 3  # every expert, not the router
    assert apply_lora(model, 4, 8.0, ["attention"]) == model.cfg.n_layers * 4
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".att." in name and ".lora." in name for name in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = next_token_loss(model, idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        before = model(idx)
        merge_lora(model)
        torch.testing.assert_close(model(idx), before, rtol=1e-5, atol=1e-5)


def test_int8_quantizes_the_experts_not_the_router(tmp_path):
    torch.manual_seed(6)
    model = build_model(tiny(vocab_size=97)).eval()
    idx = torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        expected = model(idx)
    quantize_model(model)
    moe = next(moe_layers(model))
    assert type(moe.gate) is Router and moe.gate.weight.dtype == torch.float32
    assert all(isinstance(e.fc1, Int8Linear) for e in moe.experts)
    with torch.no_grad():
        got = model(idx)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert generate(model, idx, 5).shape == (1, 15)
    # A quantized checkpoint loads back as saved.
    path = save_checkpoint(tmp_path / "q", model)
    back = load_model(path).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(idx), got)


def _pretrain(out, *extra: str) -> list[dict]:
    from scratchgpt.cli import main
    from scratchgpt.training.logging import read_metrics

    argv = ["pretrain", "--preset", "book-ch5", "--model", "qwen3-moe-tiny", "--max-steps", "2",
            "--sample-tokens", "0", "--no-progress", "--no-plot", "--peak-tflops", "1",
            "--batch-size", "2", "--max-length", "16", "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    return [r for r in read_metrics(out / "metrics.jsonl") if "train_loss" in r]


def test_pretraining_adds_the_load_balancing_loss_and_logs_expert_usage(tmp_path):
    records = _pretrain(tmp_path / "run")
    assert len(records) == 2
    for r in records:
        # 2 sequences x 16 tokens, 2 experts each, in both MoE layers.
        assert len(r["expert_tokens"]) == 4 and sum(r["expert_tokens"]) == 2 * 16 * 2 * 2
        assert r["moe_aux_loss"] >= 2.0 - 1e-5 and 1.0 <= r["expert_max_load"] <= 4.0
    # The coefficient reaches the gradients: the same first step, a different second one.
    off = _pretrain(tmp_path / "off", "--moe-aux-loss-coef", "0")
    strong = _pretrain(tmp_path / "strong", "--moe-aux-loss-coef", "10")
    assert off[0]["train_loss"] == strong[0]["train_loss"]
    assert off[1]["train_loss"] != strong[1]["train_loss"]
    with pytest.raises(ConfigError, match="moe_aux_loss_coef"):
        TrainConfig(moe_aux_loss_coef=-1.0)
