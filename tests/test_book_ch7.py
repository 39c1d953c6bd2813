"""The book's chapter 7 reproduced step for step: full fine-tuning of loaded GPT-2 weights with
the preset book-ch7, against the book's formulas written out here (its ``format_input``,
``InstructionDataset``, ``custom_collate_fn``, ``calc_loss_batch``, ``train_model_simple`` and its
section-7.7 response loop), on a tiny random GPT-2 saved by transformers.

transformers takes seconds to import; this file and tests/test_interop_gpt2.py are the ones that
use it.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from scratchgpt.data.instructions import load_instruction_records  # noqa: E402
from scratchgpt.model import GPTModel  # noqa: E402
from scratchgpt.tasks.instruct import (  # noqa: E402
    InstructConfig,
    finetune_instruct,
    generate_responses,
    load_base_model,
)
from scratchgpt.tokenizers import get_tokenizer  # noqa: E402
from scratchgpt.training.config import preset_mapping  # noqa: E402
from scratchgpt.training.sampler import epoch_seed  # noqa: E402
from scratchgpt.weights import load_checkpoint, load_model  # noqa: E402

transformers.logging.set_verbosity_error()
CONTEXT = 64


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny random GPT-2 (tied head, resid_pdrop 0.1 as OpenAI's) in save_pretrained form."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_positions=CONTEXT, n_embd=16, n_layer=2, n_head=2))
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    """60 records: 51 train / 6 test / 3 validation, 6 batches of 8 per epoch (12 steps)."""
    path = tmp_path_factory.mktemp("data") / "records.json"
    path.write_text(json.dumps(load_instruction_records()[:60]), encoding="utf-8")
    return path


# ---- the book's code, written out (chapter 7, sections 7.2-7.7) -------------------------------


def book_format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


def book_encoded_texts(data, tokenizer):
    """InstructionDataset's encoded_texts."""
    out = []
    for entry in data:
        full_text = book_format_input(entry) + f"\n\n### Response:\n{entry['output']}"
        out.append(tokenizer.encode(full_text))
    return out


def book_collate(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None):
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


def book_calc_loss_batch(input_batch, target_batch, model):
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def book_train_model_simple(model, loader_of_epoch, optimizer, num_epochs):
    """train_model_simple's update order; its evaluations (eval mode, no_grad, drop_rate 0)
    change no weight and draw no random number here, so they are left out."""
    losses = []
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in loader_of_epoch(epoch):
            optimizer.zero_grad()
            loss = book_calc_loss_batch(input_batch, target_batch, model)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def book_generate(model, idx, max_new_tokens, context_size, eos_id):
    """Chapter 5's generate, greedy (temperature 0, no top-k)."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def book_model(folder):
    """load_weights_into_gpt's model: BASE_CONFIG's drop_rate 0.0, the head its own copy of wte."""
    loaded = load_model(str(folder)).model
    model = GPTModel(loaded.cfg.replace(drop_rate=0.0, tie_weights=False))
    model.load_state_dict(loaded.state_dict())
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    return model


# ---- the tests ----------------------------------------------------------------------------------


def test_book_ch7_full_finetuning_step_for_step(tmp_path, gpt2_folder, records_file):
    """Section 7.6: the preset book-ch7 on loaded GPT-2 weights gives the book's losses, step
    for step (dropout 0.0 and an untied head, as the book's chapter 7)."""
    cfg = InstructConfig.from_dict(
        {
            **preset_mapping("book-ch7"),
            "model": {"checkpoint": str(gpt2_folder)},
            "data": {**preset_mapping("book-ch7")["data"], "source": str(records_file)},
            "train": {
                **preset_mapping("book-ch7")["train"],
                "progress": False,
                "plot": False,
                "sample_tokens": 0,
                # Evaluations change nothing in training: one at the end keeps the test short.
                "eval_interval": 0,
                "eval_batches": 1,
                "eval_at_start": False,
            },
            "instruct": {**preset_mapping("book-ch7")["instruct"], "responses": False},
        }
    )
    result = finetune_instruct(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ours = [rec["train_loss"] for rec in lines if "train_loss" in rec]
    assert result.split_sizes == {"train": 51, "test": 6, "val": 3}
    assert len(ours) == 12

    # The book: 85/10/5 split in file order, its dataset, collate and loader settings.
    records = load_instruction_records(records_file)
    train_data = records[:51]
    tokenizer = get_tokenizer("gpt2")
    train_dataset = book_encoded_texts(train_data, tokenizer)

    def loader_of_epoch(epoch):
        # batch 8, shuffle, drop_last, num_workers 0; the permutation of epoch e comes from a
        # generator seeded by (seed, e), where the book draws it from the global RNG.
        g = torch.Generator().manual_seed(epoch_seed(123, epoch))
        return DataLoader(
            train_dataset,
            batch_size=8,
            sampler=RandomSampler(train_dataset, generator=g),
            drop_last=True,
            num_workers=0,
            collate_fn=lambda b: book_collate(b, allowed_max_length=CONTEXT),
        )

    model = book_model(gpt2_folder)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.00005, weight_decay=0.1)
    book = book_train_model_simple(model, loader_of_epoch, optimizer, num_epochs=2)
    assert len(book) == 12
    assert ours == pytest.approx(book, abs=1e-5)

    tuned = load_checkpoint(tmp_path / "run").model
    assert tuned.cfg.drop_rate == 0.0 and not tuned.cfg.tie_weights
    assert not torch.equal(tuned.out_head.weight, tuned.tok_emb.weight)
    idx = torch.tensor([tokenizer.encode(book_format_input(records[0]))])
    with torch.no_grad():
        assert torch.allclose(tuned.eval()(idx), model.eval()(idx), atol=1e-4)


def test_book_ch7_responses_as_section_7_7(gpt2_folder, records_file):
    """Section 7.7: greedy responses from format_input(entry) alone, the model writing the
    marker, which is then removed: response by response the book's text."""
    loaded = load_base_model(str(gpt2_folder))
    model = loaded.model.eval()
    tokenizer = get_tokenizer("gpt2")
    # Records whose prompt and answer fit the tiny context (the book's window never slides).
    test_data = [
        e
        for e in load_instruction_records()
        if len(tokenizer.encode(book_format_input(e))) + 12 <= CONTEXT
    ][:4]
    book = []
    for entry in test_data:
        input_text = book_format_input(entry)
        token_ids = book_generate(
            model,
            torch.tensor([tokenizer.encode(input_text)]),
            max_new_tokens=12,
            context_size=CONTEXT,
            eos_id=50256,
        )
        generated_text = tokenizer.decode(token_ids.squeeze(0).tolist())
        book.append(generated_text[len(input_text) :].replace("### Response:", "").strip())
    for batch_size in (1, 4):
        ours = generate_responses(
            model, loaded.tokenizer, test_data, "alpaca", max_new_tokens=12, batch_size=batch_size
        )
        assert [r["model_response"] for r in ours] == book


def test_book_ch7_data_and_collate(records_file):
    """Sections 7.2-7.5: the split in file order, the encoded examples and the padded batches
    (inputs, targets with -100 after the first end-of-text) are the book's, batch for batch."""
    from scratchgpt.tasks.instruct import build_instruction_data

    cfg = InstructConfig(model={"checkpoint": "unused"}, data={"source": str(records_file)})
    tokenizer = get_tokenizer("gpt2")
    train_ds, val_ds, test_recs, val_recs, collate = build_instruction_data(cfg, tokenizer, CONTEXT)
    records = load_instruction_records(records_file)
    assert (len(train_ds), len(test_recs), len(val_ds)) == (51, 6, 3)
    assert test_recs == records[51:57] and val_recs == records[57:]
    book_train = book_encoded_texts(records[:51], tokenizer)
    for start in range(0, 51, 8):
        ours = collate([train_ds[i] for i in range(start, min(start + 8, 51))])
        book = book_collate(book_train[start : start + 8], allowed_max_length=CONTEXT)
        assert all(torch.equal(a, b) for a, b in zip(ours, book, strict=True))
