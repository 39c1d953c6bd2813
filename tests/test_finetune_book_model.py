"""What both fine-tuning recipes do to loaded weights before training, as the book's chapters 6
and 7: dropout 0.0 (GPT-2's config says 0.1), and for full instruction fine-tuning a head of its
own (loaded GPT-2 ties it to the token embeddings); and how test responses are prompted."""

from __future__ import annotations

import json

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.instructions import format_input, get_prompt_style, load_instruction_records
from scratchgpt.errors import ConfigError
from scratchgpt.model import GPTModel
from scratchgpt.tasks.instruct import InstructConfig, generate_responses, load_instruct_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tied_ckpt(tmp_path_factory):
    """A tiny tied model with GPT-2's dropout 0.1, saved as a Hugging Face GPT-2 folder."""
    from scratchgpt.weights import save_hf_gpt2

    torch.manual_seed(0)
    cfg = GPTConfig.from_preset(
        "tiny", vocab_size=50257, context_length=128, drop_rate=0.1, qkv_bias=True,
        tie_weights=True,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("base") / "hf"
    save_hf_gpt2(GPTModel(cfg), path)
    return path


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "slice.json"
    path.write_text(json.dumps(load_instruction_records()[:12]), encoding="utf-8")
    return path


def _instruct(base, data, out, *extra):
    args = ["finetune-instruct", "--checkpoint", str(base), "--data", str(data), "--out", str(out),
            "--max-steps", "1", "--batch-size", "2", "--sample-tokens", "0", "--no-responses",
            "--no-plot", "--no-progress", *extra]  # fmt: skip
    assert main(args) == 0
    return load_instruct_model(out).model


def test_instruct_drops_dropout_and_unties_the_head(tmp_path, tied_ckpt, data_slice, capsys):
    model = _instruct(tied_ckpt, data_slice, tmp_path / "run")
    assert "dropout 0.0, output head untied" in capsys.readouterr().out
    assert model.cfg.drop_rate == 0.0 and not model.cfg.tie_weights
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    assert not torch.equal(model.out_head.weight, model.tok_emb.weight)  # trained apart


def test_instruct_keeps_dropout_and_tie_when_asked(tmp_path, tied_ckpt, data_slice, capsys):
    model = _instruct(
        tied_ckpt, data_slice, tmp_path / "run", "--drop-rate", "0.1", "--no-untie-head"
    )
    assert "dropout 0.1;" in capsys.readouterr().out
    assert model.cfg.drop_rate == 0.1 and model.cfg.tie_weights
    assert model.out_head.weight is model.tok_emb.weight
    # LoRA trains neither the head nor the embeddings: nothing to untie.
    lora = _instruct(tied_ckpt, data_slice, tmp_path / "lora", "--lora-rank", "2")
    assert lora.cfg.tie_weights and lora.cfg.drop_rate == 0.0


def test_instruct_config_checks_the_drop_rate():
    with pytest.raises(ConfigError, match=r"model.drop_rate must be in \[0, 1\), got 1.5"):
        InstructConfig(model={"gpt2": "gpt2-small", "drop_rate": 1.5})


def test_classifier_from_loaded_weights_trains_without_dropout(tmp_path, tied_ckpt):
    from scratchgpt.tasks.classify import load_classifier

    f = tmp_path / "d.tsv"
    f.write_text(
        "text\tlabel\n" + "".join(f"message {i}\t{'ab'[i % 2]}\n" for i in range(20)), "utf-8"
    )
    args = ["finetune-classifier", "--gpt2", str(tied_ckpt), "--data", str(f),
            "--max-steps", "1", "--no-progress", "--no-plot"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert load_classifier(tmp_path / "a").model.cfg.drop_rate == 0.0
    assert main([*args, "--out", str(tmp_path / "b"), "--drop-rate", "0.2"]) == 0
    assert load_classifier(tmp_path / "b").model.cfg.drop_rate == 0.2


def test_marker_prompts_end_with_the_response_marker(tied_ckpt):
    """response_prompt="marker": the prompt ends with "### Response:" (the model answers at
    once); "book": format_input alone (section 7.7)."""
    from scratchgpt.generation import generate_text

    loaded = load_instruct_model(tied_ckpt)
    model, tok = loaded.model.eval(), loaded.tokenizer
    entry = load_instruction_records()[0]
    st = get_prompt_style("alpaca")
    for mode, prompt in (("marker", st.prompt(entry)), ("book", format_input(entry))):
        (got,) = generate_responses(model, tok, [entry], max_new_tokens=5, response_prompt=mode)
        text = generate_text(model, tok, prompt, max_new_tokens=5, temperature=0.0)
        assert got["model_response"] == str(text).replace(st.marker, "").strip()
    with pytest.raises(ConfigError, match="response_prompt must be one of"):
        generate_responses(model, tok, [entry], response_prompt="chat")


def test_respond_cli_takes_the_response_prompt(tmp_path, tied_ckpt, capsys):
    out = tmp_path / "r.json"
    base = ["respond", "--checkpoint", str(tied_ckpt), "--limit", "1", "--max-new-tokens", "3"]
    assert main([*base, "--response-prompt", "marker", "--out", str(out)]) == 0
    assert "responses prompted as marker" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--response-prompt", "chat"])


def test_a_run_of_an_older_release_resumes_tied(tmp_path, tied_ckpt, data_slice, capsys):
    """A config.yaml without these settings is a run that trained the model as loaded (tied
    head, the model's dropout): it resumes that way, from its tied checkpoint."""
    import yaml

    run = tmp_path / "run"
    _instruct(tied_ckpt, data_slice, run, "--no-untie-head", "--drop-rate", "none")
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    del saved["model"]["drop_rate"], saved["model"]["untie_head"]
    del saved["instruct"]["response_prompt"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved), "utf-8")
    capsys.readouterr()
    assert main(["finetune-instruct", "--out", str(run), "--resume", "--max-steps", "2"]) == 0
    assert "dropout 0.1;" in capsys.readouterr().out
    model = load_instruct_model(run).model
    assert model.cfg.tie_weights and model.cfg.drop_rate == 0.1
