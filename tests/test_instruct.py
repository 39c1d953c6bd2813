"""Instruction data, prompt styles, collate, masking, response extraction and a tiny fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.instructions import (
    IGNORE_INDEX,
    InstructionCollator,
    InstructionDataset,
    custom_collate_fn,
    extract_response,
    format_input,
    get_prompt_style,
    load_instruction_records,
    load_preference_records,
    split_records,
)
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.tasks.instruct import (
    InstructConfig,
    book_train_config,
    calc_loss_batch,
    finetune_instruct,
    generate_responses,
    load_instruct_model,
)
from scratchgpt.tokenizers import get_tokenizer


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
    save_checkpoint(path, model, gpt2_tok)
    return path


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory):
    records = load_instruction_records()[:24]
    path = tmp_path_factory.mktemp("data") / "slice.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


ENTRY = {
    "instruction": "Identify the correct spelling of the following word.",
    "input": "Ocassion",
    "output": "The correct spelling is 'Occasion.'",
}
PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


# ---- prompt styles ----------------------------------------------------------------------------


def test_alpaca_template_is_the_books():
    st = get_prompt_style("alpaca")
    assert format_input(ENTRY) == (
        PREAMBLE
        + "\n\n### Instruction:\nIdentify the correct spelling of the following word."
        + "\n\n### Input:\nOcassion"
    )
    assert st.full_text(ENTRY) == format_input(ENTRY) + (
        "\n\n### Response:\nThe correct spelling is 'Occasion.'"
    )
    no_input = {**ENTRY, "input": ""}
    assert format_input(no_input) == (
        PREAMBLE + "\n\n### Instruction:\nIdentify the correct spelling of the following word."
    )


def test_phi3_template_is_exercise_7_1():
    st = get_prompt_style("phi3")
    assert st.full_text(ENTRY) == (
        "<|user|>\nIdentify the correct spelling of the following word.\nOcassion"
        "\n<|assistant|>:\nThe correct spelling is 'Occasion.'"
    )


def test_unknown_prompt_style_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown prompt style 'chatml'.*alpaca"):
        get_prompt_style("chatml")


def test_extract_response():
    st = get_prompt_style("alpaca")
    prompt = format_input(ENTRY)
    generated = prompt + "\n\n### Response:\nThe correct spelling is 'Occasion'.  \n"
    assert extract_response(generated, prompt) == "The correct spelling is 'Occasion'."
    # A continuation that starts the next example is cut there.
    assert extract_response(" Yes.\n\n### Instruction:\nMore", "", st) == "Yes."
    assert extract_response("\n<|assistant|>:\n Hi <|user|> x", "", "phi3") == "Hi"


# ---- collate ----------------------------------------------------------------------------------


def test_collate_golden_values_of_the_book():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    assert inputs.tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 50256, 50256, 50256],
        [7, 8, 9, 50256, 50256],
    ]
    assert targets.tolist() == [
        [1, 2, 3, 4, 50256],
        [6, 50256, -100, -100, -100],
        [8, 9, 50256, -100, -100],
    ]


def test_collate_truncates_to_allowed_max_length():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6]], allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 50256]]
    assert targets.tolist() == [[1, 2, 3], [6, 50256, -100]]


def test_prompt_masking(gpt2_tok):
    ds = InstructionDataset([ENTRY], gpt2_tok, "alpaca")
    ids, plen = ds[0]
    st = get_prompt_style("alpaca")
    assert ids == gpt2_tok.encode(st.full_text(ENTRY))
    assert plen == len(gpt2_tok.encode(st.prompt(ENTRY)))
    _, plain = InstructionCollator()([ds[0]])
    inputs, masked = InstructionCollator(mask_prompt=True)([ds[0]])
    # Targets predicting prompt tokens 1..plen-1 are ignored; the first response token is kept.
    assert (masked[0, : plen - 1] == IGNORE_INDEX).all()
    assert masked[0, plen - 1] == ids[plen]
    assert torch.equal(masked[0, plen - 1 :], plain[0, plen - 1 :])
    assert int((masked != IGNORE_INDEX).sum()) == len(ids) - plen + 1  # response + end-of-text
    # The loss changes accordingly (only the response counts).
    torch.manual_seed(0)
    from scratchgpt.model import GPTModel

    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=128)).eval()
    with torch.no_grad():
        masked_loss, plain_loss = (
            float(calc_loss_batch(inputs, t, model)) for t in (masked, plain)
        )
    assert masked_loss != plain_loss


# ---- records and splits -----------------------------------------------------------------------


def test_bundled_split_counts_of_the_book():
    records = load_instruction_records()
    train, test, val = split_records(records)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train[0] == records[0] and val[-1] == records[-1] and test[0] == records[935]
    train, test, val = split_records(records, 0.8, 0.1)
    assert (len(train), len(test), len(val)) == (880, 110, 110)


def test_empty_training_split_is_an_error():
    with pytest.raises(DataError, match="training split is empty"):
        split_records([ENTRY], 0.5, 0.1)
    with pytest.raises(ConfigError, match="train \\+ test <= 1"):
        split_records([ENTRY] * 10, 0.9, 0.2)


def test_preference_records_load_and_split():
    records = load_preference_records()
    assert len(records) == 1100
    assert {"chosen", "rejected", "instruction", "input", "output"} <= set(records[0])
    train, test, val = split_records(records)
    assert (len(train), len(test), len(val)) == (935, 110, 55)


def test_jsonl_and_field_mapping(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        {"prompt": "Say hi", "answer": "Hi"},
        {"prompt": "Add 1+1", "context": "x", "answer": "2"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    recs = load_instruction_records(
        path, fields={"instruction": "prompt", "input": "context", "output": "answer"}
    )
    assert recs == [
        {"instruction": "Say hi", "input": "", "output": "Hi"},
        {"instruction": "Add 1+1", "input": "x", "output": "2"},
    ]


@pytest.mark.parametrize(
    "records, message",
    [
        ([ENTRY, {"instruction": "a", "input": ""}], "record 1 has no field 'output'"),
        ([ENTRY, ENTRY, {**ENTRY, "output": 7}], "record 2: field 'output' must be a string"),
        ([ENTRY, "text"], "record 1 is a str"),
        ([], "no records"),
    ],
)
def test_bad_records_name_the_record_and_field(tmp_path, records, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_instruction_records(path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ENTRY) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_instruction_records(path)


# ---- end to end -------------------------------------------------------------------------------


def _cfg(ckpt: Path, data: Path, **kw) -> InstructConfig:
    train = book_train_config(
        max_steps=4, batch_size=4, lr=2e-3, eval_interval=2, sample_interval=2,
        sample_tokens=4, progress=False, plot=False,
    )  # fmt: skip
    return InstructConfig(
        model={"checkpoint": str(ckpt)},
        data={"source": str(data)},
        train=train,
        instruct={"response_tokens": 6, **kw},
    )


def test_tiny_finetune_and_responses(tmp_path, tiny_ckpt, data_slice, gpt2_tok):
    result = finetune_instruct(_cfg(tiny_ckpt, data_slice), tmp_path / "run")
    assert result.split_sizes == {"train": 20, "test": 2, "val": 2}
    assert result.initial_val_loss is not None and result.val_loss < result.initial_val_loss
    loaded = load_instruct_model(tmp_path / "run")
    assert loaded.metadata["prompt_style"] == "alpaca" and loaded.metadata["task"] == "instruct"
    responses = json.loads((tmp_path / "run" / "responses.json").read_text("utf-8"))
    test_recs = load_instruction_records(data_slice)[20:22]
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in responses] == test_recs
    # The file holds what the final checkpoint answers, greedy.
    again = generate_responses(
        loaded.model, loaded.tokenizer, test_recs, "alpaca", max_new_tokens=6
    )
    assert [r["model_response"] for r in responses] == [r["model_response"] for r in again]
    assert all(isinstance(r["model_response"], str) for r in responses)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("sample" in rec and "### Response:" in rec["sample"] for rec in lines)


def test_lora_finetune_trains_adapters_and_loads_merged(tmp_path, tiny_ckpt, data_slice):
    from scratchgpt.weights import load_checkpoint

    cfg = _cfg(tiny_ckpt, data_slice, lora_rank=2, responses=False)
    result = finetune_instruct(cfg, tmp_path / "run")
    assert result.val_loss < result.initial_val_loss
    loaded = load_instruct_model(tmp_path / "run")
    assert loaded.metadata["lora"]["rank"] == 2
    base = load_checkpoint(tiny_ckpt).model
    # Merged weights differ from the base where adapters were trained; embeddings are frozen.
    assert torch.equal(loaded.model.tok_emb.weight, base.tok_emb.weight)
    assert not torch.equal(
        loaded.model.trf_blocks[0].att.W_query.weight, base.trf_blocks[0].att.W_query.weight
    )


def test_cli_finetune_respond_and_loss(tmp_path, tiny_ckpt, data_slice, capsys):
    run = tmp_path / "run"
    args = [
        "finetune-instruct", "--checkpoint", str(tiny_ckpt), "--data", str(data_slice),
        "--out", str(run), "--max-steps", "2", "--batch-size", "4", "--prompt-style", "phi3",
        "--mask-prompt", "--sample-tokens", "0", "--response-tokens", "4", "--no-plot",
        "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    assert "validation loss:" in capsys.readouterr().out
    assert main(args) == 2  # the run folder exists
    assert "--resume" in capsys.readouterr().err
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    assert set(saved) == {"model", "data", "train", "instruct"}
    opts = saved["instruct"]
    assert opts["prompt_style"] == "phi3" and opts["mask_prompt"] and saved["train"]["lr"] == 5e-5

    out = tmp_path / "r.json"
    respond = ["respond", "--checkpoint", str(run), "--data", str(data_slice), "--limit", "2",
               "--max-new-tokens", "3", "--out", str(out)]  # fmt: skip
    assert main(respond) == 0
    assert "prompt style phi3" in capsys.readouterr().err  # taken from the checkpoint
    assert len(json.loads(out.read_text("utf-8"))) == 2
    assert main(respond) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err

    assert main(["evaluate", "loss", "--checkpoint", str(run), "--data", str(data_slice)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["tokens"] > 0 and line["ppl"] == pytest.approx(
        torch.tensor(line["loss"]).exp().item(), rel=1e-5
    )


def test_cli_bad_input(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([ENTRY, {"instruction": 3, "output": "x"}]), encoding="utf-8")
    base = ["finetune-instruct", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "r")]
    assert main([*base, "--data", str(bad)]) == 2
    assert "record 1: field 'instruction' must be a string" in capsys.readouterr().err
    assert main(["finetune-instruct", "--out", str(tmp_path / "r2")]) == 2
    assert "--checkpoint DIR or --gpt2 NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--prompt-style", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_cli_resume_keeps_the_saved_settings(tmp_path, tiny_ckpt, data_slice, capsys):
    run = tmp_path / "run"
    first = [
        "finetune-instruct", "--checkpoint", str(tiny_ckpt), "--data", str(data_slice),
        "--out", str(run), "--max-steps", "2", "--batch-size", "4", "--prompt-style", "phi3",
        "--sample-tokens", "0", "--no-responses", "--no-plot", "--no-progress",
    ]  # fmt: skip
    assert main(first) == 0
    resume = ["finetune-instruct", "--out", str(run), "--resume", "--max-steps", "3"]
    assert main(resume) == 0
    assert "resuming from step-000002" in capsys.readouterr().out
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    assert saved["instruct"]["prompt_style"] == "phi3" and saved["train"]["max_steps"] == 3
    assert saved["train"]["batch_size"] == 4 and not saved["instruct"]["responses"]
    assert load_instruct_model(run).metadata["prompt_style"] == "phi3"


def test_config_sections_legacy_form_and_book_defaults(tmp_path):
    cfg = InstructConfig(model={"gpt2": "gpt2-small"})
    assert cfg.train == book_train_config() and cfg.instruct.prompt_style == "auto"
    # auto is the book's alpaca for a tokenizer without a chat template (GPT-2's).
    assert get_prompt_style("auto", get_tokenizer("gpt2")).name == "alpaca"
    assert (cfg.data.source, cfg.data.train_frac, cfg.data.test_frac) == (None, 0.85, 0.10)
    with pytest.raises(ConfigError, match="exactly one base model"):
        InstructConfig()
    # The flat keywords of older releases still work, with a warning.
    with pytest.deprecated_call():
        old = InstructConfig(
            checkpoint="ck", style="phi3", fields={"output": "response"}, lora_rank=2
        )
    assert (old.model.checkpoint, old.instruct.prompt_style) == ("ck", "phi3")
    assert old.data.fields == {"instruction": "instruction", "input": "input", "output": "response"}
    with pytest.deprecated_call():
        assert old.style == "phi3"
    assert InstructConfig.from_dict(old.to_dict()) == old


def test_cli_resumes_a_run_folder_of_older_releases(tmp_path, capsys):
    """A run folder with instruct_config.json (no config.yaml) still resumes with its settings."""
    run = tmp_path / "old"
    run.mkdir()
    old = {"checkpoint": "base", "gpt2": None, "data": "d.json", "fields": {"input": "context"},
           "style": "phi3", "train_frac": 0.8, "test_frac": 0.1, "mask_prompt": True,
           "allowed_max_length": None, "response_tokens": 7, "response_batch_size": 8,
           "responses": False, "lora_rank": 0, "lora_alpha": 16.0,
           "train": {**book_train_config(max_steps=3).__dict__}}  # fmt: skip
    (run / "instruct_config.json").write_text(json.dumps(old), "utf-8")
    assert main(["finetune-instruct", "--out", str(run), "--resume", "--lr", "1e-3",
                 "--print-config"]) == 0  # fmt: skip
    cfg = yaml.safe_load(capsys.readouterr().out)
    # It trained the base model as loaded and prompted responses with the marker: kept.
    assert cfg["model"] == {"checkpoint": "base", "gpt2": None, "drop_rate": None,
                            "untie_head": False}  # fmt: skip
    assert cfg["instruct"]["response_prompt"] == "marker"
    assert (cfg["data"]["source"], cfg["data"]["input_field"]) == ("d.json", "context")
    assert cfg["instruct"]["prompt_style"] == "phi3" and cfg["instruct"]["response_tokens"] == 7
    assert (cfg["train"]["max_steps"], cfg["train"]["lr"]) == (3, 1e-3)
