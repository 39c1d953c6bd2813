"""Every command on a Llama 3.x, a Qwen3, a Qwen3-MoE and a Gemma 3 folder, end to end on tiny
random models: info, generate, chat, respond, evaluate loss, finetune-instruct (full and LoRA, in
the family's chat template), finetune-classifier + classify, export, and a chat completion served
to the official ``openai`` client. The folders are Hugging Face layouts (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with a chat template, generation_config.json) built
offline."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hf_fixtures import (
    MODEL_VOCAB_SIZE,
    write_gemma3_tokenizer,
    write_llama3_tokenizer,
    write_qwen3_tokenizer,
)
from scratchgpt.chat import ChatSession
from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.instructions import load_instruction_records
from scratchgpt.model import build_model
from scratchgpt.tokenizers.hf import HFTokenizer
from scratchgpt.weights import load_model
from scratchgpt.weights.hf import save_hf_model

FAMILIES = {
    "llama": ("llama3-tiny", write_llama3_tokenizer, "<|eot_id|>"),
    "qwen3": ("qwen3-tiny", write_qwen3_tokenizer, "<|im_end|>"),
    # Qwen3-MoE: the same tokenizer, a mixture of experts in every block.
    "qwen3_moe": ("qwen3-moe-tiny", write_qwen3_tokenizer, "<|im_end|>"),
    # Gemma 3: local layers with a window of 8 (shorter than the prompts), Gemma's tokenizer
    # (byte fallback, <bos>) and its user/model chat template.
    "gemma3": ("gemma3-tiny", write_gemma3_tokenizer, "<end_of_turn>"),
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family, Hugging Face folder of a tiny random model with its tokenizer)."""
    preset, write_tokenizer, _ = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    write_tokenizer(root / "tok")
    tokenizer = HFTokenizer.from_folder(root / "tok")
    torch.manual_seed(0)
    cfg = GPTConfig.from_preset(preset, vocab_size=MODEL_VOCAB_SIZE, context_length=256)
    model = build_model(cfg).eval()
    folder = save_hf_model(model, root / "model", tokenizer=tokenizer)
    return request.param, folder


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory):
    records = load_instruction_records()[:16]
    path = tmp_path_factory.mktemp("data") / "slice.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_folder_loads_with_its_tokenizer_and_template(family):
    name, folder = family
    loaded = load_model(folder)
    tok = loaded.tokenizer
    assert isinstance(tok, HFTokenizer) and tok.chat_template
    assert tok.token_to_id(FAMILIES[name][2]) in tok.stop_ids
    assert loaded.config.family == FAMILIES[name][0].split("-")[0]


def test_info_generate_and_evaluate_loss(family, data_slice, capsys):
    _, folder = family
    assert main(["info", "--checkpoint", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"].startswith("hf-") and info["config"]["n_kv_groups"] == 2
    argv = ["generate", "--checkpoint", str(folder), "--prompt", "The quick brown fox",
            "--max-new-tokens", "8", "--seed", "1"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("The quick brown fox")
    assert main(["evaluate", "loss", "--checkpoint", str(folder), "--data", str(data_slice)]) == 0
    assert "loss" in capsys.readouterr().out


def test_chat_renders_the_folders_template(family):
    _, folder = family
    loaded = load_model(folder)
    session = ChatSession(loaded.model, loaded.tokenizer, style="chat", max_new_tokens=6)
    session.history.append(("Hi there", "Hello!"))
    prompt = session.build_prompt("What is the capital of France?")
    messages = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert prompt == loaded.tokenizer.render_chat(messages)
    reply = session.reply("What is the capital of France?")
    assert isinstance(reply, str) and len(session.history) == 2


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_finetune_instruct_in_the_chat_template_then_respond(family, data_slice, tmp_path, lora):
    _name, folder = family
    run = tmp_path / "run"
    argv = ["finetune-instruct", "--checkpoint", str(folder), "--data", str(data_slice),
            "--out", str(run), "--max-steps", "2", "--batch-size", "4", "--sample-tokens", "0",
            "--response-tokens", "4", "--no-plot", "--no-progress", "--lr", "1e-3"]  # fmt: skip
    if lora:
        argv += ["--lora-rank", "4"]
    assert main(argv) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    assert saved["instruct"]["prompt_style"] == "chat"
    responses = json.loads((run / "responses.json").read_text("utf-8"))
    assert responses and all("model_response" in r for r in responses)
    tuned = load_model(run)
    assert tuned.metadata["prompt_style"] == "chat" and tuned.config.lora is None
    assert tuned.tokenizer.chat_template == load_model(folder).tokenizer.chat_template
    out = tmp_path / "answers.json"
    argv = ["respond", "--checkpoint", str(run), "--data", str(data_slice), "--out", str(out),
            "--max-new-tokens", "3", "--limit", "2"]  # fmt: skip
    assert main(argv) == 0
    assert len(json.loads(out.read_text("utf-8"))) == 2
    # The fine-tuned model exports back to a Hugging Face folder with its tokenizer.
    exported = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(exported)]) == 0
    again = load_model(exported)
    assert again.config == tuned.config and again.tokenizer.chat_template
    ours, back = tuned.model.state_dict(), again.model.state_dict()
    assert ours.keys() == back.keys() and all(torch.equal(ours[k], back[k]) for k in ours)
    # Same weights; the logits may differ in the last bits (a mixture of experts runs tiny
    # matmuls whose CPU kernels round differently with the tensors' memory alignment).
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(again.model(idx), tuned.model(idx), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_finetune_classifier_then_classify(family, tmp_path, capsys):
    _, folder = family
    run = tmp_path / "clf"
    argv = ["finetune-classifier", "--checkpoint", str(folder), "--data", "spam", "--out",
            str(run), "--max-steps", "2", "--eval-batches", "1", "--no-progress", "--lr", "1e-3",
            "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert (
        main(["classify", "--checkpoint", str(run), "You won a free prize!", "See you at 5"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(("spam" in line) or ("ham" in line) for line in lines)
    loaded = load_model(run)
    assert (
        loaded.config.num_classes == 2 and loaded.config.family == load_model(folder).config.family
    )


def test_chat_completion_through_the_openai_client(family):
    from scratchgpt.serving import create_app, load_served_model
    from test_serving import LiveServer

    _, folder = family
    served = load_served_model(folder)
    assert served.style == "chat"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with LiveServer(create_app(served)) as server:
        reply = server.client().chat.completions.create(
            model=served.name, messages=messages, max_tokens=5, temperature=0
        )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    prompt = served.tokenizer.render_chat(messages)
    ids = served.tokenizer.encode(prompt, allowed_special="all")
    assert reply.usage.prompt_tokens == len(ids)
