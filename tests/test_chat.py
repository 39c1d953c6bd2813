"""Chat: history within the context window, and the CLI driven through a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest
import torch

from scratchgpt.chat import ChatSession
from scratchgpt.config import GPTConfig
from scratchgpt.model import GPTModel
from scratchgpt.tasks.instruct import load_instruct_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chat_ckpt(tmp_path_factory):
    from scratchgpt.model import GPTModel
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    torch.manual_seed(1)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=96))
    path = tmp_path_factory.mktemp("chat") / "ckpt"
    save_checkpoint(path, model, get_tokenizer("gpt2"), metadata={"prompt_style": "phi3"})
    return path


def test_history_is_kept_within_the_context(chat_ckpt):
    loaded = load_instruct_model(chat_ckpt)
    session = ChatSession(loaded.model, loaded.tokenizer, "phi3", max_new_tokens=8)
    first = session.reply("What is the capital of France?")
    assert session.history == [("What is the capital of France?", first)]
    prompt = session.build_prompt("And of Italy?")
    assert prompt.startswith("<|user|>\nWhat is the capital of France?\n<|assistant|>:\n")
    assert prompt.endswith("<|user|>\nAnd of Italy?\n<|assistant|>:\n")
    for i in range(8):
        session.reply(f"Tell me fact number {i} about rivers.")
        assert session.prompt_tokens("next?") <= 96 - 8
    prompt = session.build_prompt("last one")
    # The oldest turns were dropped, the newest kept.
    assert "capital of France" not in prompt and "fact number 7" in prompt
    session.reset()
    assert session.build_prompt("hi") == "<|user|>\nhi\n<|assistant|>:\n"


def test_chat_and_server_share_one_prompt_renderer():
    """A session's history and the same conversation sent as chat messages give one prompt."""
    from scratchgpt.data.prompts import render_chat
    from scratchgpt.tokenizers import get_tokenizer

    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=1024))
    session = ChatSession(model, get_tokenizer("gpt2"), "alpaca", max_new_tokens=8)
    session.history = [("Name a colour.", "Blue"), ("Another?", "Red")]
    messages = [
        ("user", "Name a colour."),
        ("assistant", "Blue"),
        ("user", "Another?"),
        ("assistant", "Red"),
        ("user", "One more?"),
    ]
    prompt = session.build_prompt("One more?")
    assert render_chat(messages, "alpaca") == prompt
    assert prompt.count("### Instruction:") == 3 and prompt.endswith("### Response:\n")


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} from the chat; got {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_chat_through_a_pseudo_terminal(chat_ckpt):
    loaded = load_instruct_model(chat_ckpt)
    expected = ChatSession(loaded.model, loaded.tokenizer, "phi3", max_new_tokens=6)
    want1 = expected.reply("Hello there")
    want2 = expected.reply("Say more")
    assert want1 and want2  # the random model does not stop at once: there is text to compare

    main_fd, sub_fd = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scratchgpt", "chat", "--checkpoint", str(chat_ckpt),
         "--max-new-tokens", "6", "--dtype", "fp32"],  # compared with the fp32 model
        stdin=sub_fd, stdout=sub_fd, stderr=sub_fd, env=env, close_fds=True,
    )  # fmt: skip
    os.close(sub_fd)
    try:
        banner = _read_until(main_fd, b">>> ")
        assert b"prompt style phi3" in banner  # from the checkpoint's metadata

        def turn(message: str) -> str:
            os.write(main_fd, message.encode() + b"\n")
            out = _read_until(main_fd, b">>> ").decode("utf-8", errors="replace")
            text = out.replace("\r\n", "\n")
            echoed = message + "\n"
            assert text.startswith(echoed)  # the terminal echoes the typed line
            return text[len(echoed) : -len(">>> ")].rstrip("\n")

        assert turn("Hello there").strip() == want1
        assert turn("Say more").strip() == want2  # the second turn saw the first as history
        assert "forgotten" in turn("/reset")
        os.write(main_fd, b"/exit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
