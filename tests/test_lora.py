"""LoRA (appendix E): initial equivalence, merging, trainable counts, adapter files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from book_reference import (
    BookLoRALayer,
    book_replace_linear_with_lora,
    book_run,
    run_preset,
    write_spam_like_csv,
)
from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.model import GPTModel
from scratchgpt.model.lora import (
    LinearWithLoRA,
    LoRALayer,
    apply_lora,
    count_trainable,
    has_lora,
    load_lora_adapters,
    lora_state_dict,
    merge_lora,
    read_adapter_header,
    replace_linear_with_lora,
    save_lora_adapters,
)
from scratchgpt.tasks.classify import make_classifier


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig.from_preset("tiny", vocab_size=100)).eval()


def test_lora_layer_init_and_scaling():
    layer = LoRALayer(6, 4, rank=2, alpha=8)
    assert layer.A.shape == (6, 2) and layer.B.shape == (2, 4)
    assert torch.all(layer.B == 0) and layer.A.abs().sum() > 0
    bound = 1 / 6**0.5  # kaiming_uniform with a=sqrt(5) on fan_in 2... as nn.Linear: 1/sqrt(fan)
    assert layer.A.abs().max() <= max(bound, 1 / 2**0.5) + 1e-6
    with torch.no_grad():
        layer.B.fill_(1.0)
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), 4.0 * (x @ layer.A @ layer.B))
    with pytest.raises(ConfigError):
        LoRALayer(2, 2, rank=0, alpha=1)


def test_output_at_init_equals_base_model():
    base = tiny()
    ids = torch.randint(0, 100, (2, 7))
    expected = base(ids)
    n = apply_lora(base, rank=4, alpha=8)
    assert n == 2 * 6 + 1  # q, k, v, out_proj, 2 feed-forward layers per block, the head
    assert torch.equal(base(ids), expected)


def test_merged_equals_unmerged():
    model = tiny()
    apply_lora(model, rank=3, alpha=6)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALayer):
                m.B.normal_(0, 0.5)
    ids = torch.randint(0, 100, (2, 9))
    before = model(ids)
    assert not torch.allclose(before, tiny()(ids), atol=1e-3)
    assert merge_lora(model) == 13
    assert not has_lora(model)
    assert all(type(m) is not LinearWithLoRA for m in model.modules())
    # Merged W + s*A@B rounds differently from the two-path sum (more so on other CPUs' kernels).
    torch.testing.assert_close(model(ids), before, atol=1e-4, rtol=1e-4)


def test_book_trainable_count_gpt2_small():
    # Built on the meta device: the count needs shapes, not 163M initialised numbers.
    with torch.device("meta"):
        # OpenAI's GPT-2 small, as the book loads it: qkv_bias=True.
        model = GPTModel(GPTConfig.from_preset("gpt2-small", qkv_bias=True))
        make_classifier(model, 2, trainable="all")
        before = count_trainable(model)
        for p in model.parameters():
            p.requires_grad_(False)
        replace_linear_with_lora(model, rank=16, alpha=16)
    assert before == 124_441_346  # the book: 124,441,346 trainable before LoRA (section E.4)
    assert count_trainable(model) == 2_666_528


def test_targets_and_freezing():
    model = tiny()
    make_classifier(model, 3, trainable="lora", lora_rank=2, lora_targets=["attention"])
    att = sum(isinstance(m, LinearWithLoRA) for m in model.modules())
    assert att == 4 * 2
    # Without LoRA on it, the new head is trained fully.
    assert model.out_head.weight.requires_grad and model.out_head.bias.requires_grad
    expected = 8 * 2 * (32 + 32) + 3 * 32 + 3
    assert count_trainable(model) == expected
    model2 = tiny()
    make_classifier(model2, 2, trainable="lora", lora_rank=2)
    assert isinstance(model2.out_head, LinearWithLoRA)
    assert not model2.out_head.linear.weight.requires_grad
    with pytest.raises(ConfigError, match="choose from"):
        apply_lora(tiny(), targets=["embeddings"])


def test_adapters_save_and_load(tmp_path):
    model = tiny()
    make_classifier(model, 2, trainable="lora", lora_rank=2, lora_alpha=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALayer):
                m.B.normal_()
    path = save_lora_adapters(
        model,
        tmp_path / "a.safetensors",
        extra=["out_head.linear.weight", "out_head.linear.bias"],
        metadata={"labels": ["x", "y"]},
    )
    header = read_adapter_header(path)
    assert header == {"rank": 2, "alpha": 4.0, "metadata": {"labels": ["x", "y"]}}
    ids = torch.randint(0, 100, (2, 5))
    expected = model(ids)

    other = tiny()  # the same base weights (same seed), fresh adapters and head
    make_classifier(other, 2, trainable="lora", lora_rank=2, lora_alpha=4)
    assert not torch.allclose(other(ids), expected)
    load_lora_adapters(other, path)
    torch.testing.assert_close(other(ids), expected)
    assert len(lora_state_dict(other)) == 2 * 13

    with pytest.raises(FileExistsError):
        save_lora_adapters(model, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora_adapters(tiny(), path)
    wrong_rank = tiny()
    make_classifier(wrong_rank, 2, trainable="lora", lora_rank=3)
    with pytest.raises(CheckpointError, match="shape"):
        load_lora_adapters(wrong_rank, path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_lora_adapters(other, bad)
    with pytest.raises(ConfigError, match="no LoRA layers"):
        save_lora_adapters(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x.safetensors")


def book_lora_classifier(base: GPTModel, seed: int, rank: int, alpha: float) -> GPTModel:
    """Appendix E: seed, a new Linear(emb_dim, 2) head, everything frozen, LoRA everywhere."""
    torch.manual_seed(seed)
    base.out_head = nn.Linear(base.cfg.emb_dim, 2)
    for p in base.parameters():
        p.requires_grad = False
    book_replace_linear_with_lora(base, rank, alpha)
    return base


def test_lora_initialisation_is_the_books_after_the_same_seed():
    book = book_lora_classifier(tiny(), seed=123, rank=4, alpha=8)
    ours = tiny()
    torch.manual_seed(123)
    make_classifier(ours, 2, trainable="lora", lora_rank=4, lora_alpha=8)
    expected, got = book.state_dict(), ours.state_dict()
    assert list(got) == list(expected)  # the same names: linear.weight, lora.A, lora.B, ...
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {
        n for n, p in book.named_parameters() if p.requires_grad
    }
    ids = torch.randint(0, 100, (2, 7))
    assert torch.equal(ours(ids), book(ids))

    # The book's name: every Linear, nothing frozen, the same A matrices after the same seed.
    book2, ours2 = tiny(), tiny()
    torch.manual_seed(5)
    book_replace_linear_with_lora(book2, 2, 2)
    torch.manual_seed(5)
    replace_linear_with_lora(ours2, 2, 2)
    for name, tensor in book2.state_dict().items():
        assert torch.equal(ours2.state_dict()[name], tensor), name


def test_lora_targets_keep_the_books_order():
    """Fewer targets: the chosen layers are adapted in the book's (definition) order."""
    ours = tiny()
    torch.manual_seed(3)
    apply_lora(ours, rank=2, alpha=2, targets=["head", "feed_forward"])
    adapted = [n for n, m in ours.named_modules() if isinstance(m, LinearWithLoRA)]
    assert adapted == [
        "trf_blocks.0.ff.layers.0", "trf_blocks.0.ff.layers.2",
        "trf_blocks.1.ff.layers.0", "trf_blocks.1.ff.layers.2", "out_head",
    ]  # fmt: skip
    torch.manual_seed(3)
    draws = [
        BookLoRALayer(m.linear.in_features, m.linear.out_features, 2, 2).A
        for n, m in ours.named_modules()
        if isinstance(m, LinearWithLoRA)
    ]
    for name, a in zip(adapted, draws, strict=True):
        assert torch.equal(ours.get_submodule(name).lora.A, a), name


def test_book_appendix_e_preset_reproduces_the_books_lora_training(tmp_path):
    """Appendix E: seed 123, the new head, everything frozen, LoRA rank 16 / alpha 16 on every
    Linear layer; AdamW(lr 8e-4, weight decay 0.1), batch 8; the book's loop, 15 steps."""
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    torch.manual_seed(0)
    base = tmp_path / "base"
    save_checkpoint(base, GPTModel(GPTConfig.from_preset("tiny", context_length=128)),
                    get_tokenizer("gpt2"))  # fmt: skip
    data = write_spam_like_csv(tmp_path / "same.csv", equal_length=True)
    ours, log, records = run_preset("book-appendix-e", base, data, tmp_path / "run",
                                    **{"train.max_epochs": 3})  # fmt: skip
    assert len(ours) == 15
    # Every trainable tensor (A, B) is a matrix: no weight-decay difference with LoRA.
    book, book_val = book_run(base, data, lr=8e-4, epochs=3, lora=(16, 16.0))
    assert ours == pytest.approx(book, abs=1e-5, rel=0)
    assert ours[-1] < ours[0] - 0.01  # it learns: the comparison is not of constants
    ours_val = [(r["val_loss"], r["val_accuracy"]) for r in records if "val_loss" in r]
    for (loss, acc), (book_loss, book_acc) in zip(ours_val, book_val, strict=True):
        assert loss == pytest.approx(book_loss, abs=1e-5) and acc == book_acc
    assert "recipe: preset book-appendix-e (the book's appendix E)" in log
    assert "weight decay" not in log and "LoRA A matrices drawn right after the new head" in log
