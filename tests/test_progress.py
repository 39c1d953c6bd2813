"""Progress off a terminal: plain lines every few seconds, on every long phase (no timing: a fake
clock for the helper, an interval of 0 for the phases)."""

from __future__ import annotations

import io
import types
import warnings

import pytest
import torch

from scratchgpt.config import GPTConfig
from scratchgpt.model import GPTModel
from scratchgpt.progress import INTERVAL_ENV, LineProgress, progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_interval_with_time_left():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(
        total=5000, desc="evaluating accuracy", unit="batches", interval=5, file=out, clock=clock
    )
    for _ in range(1199):
        clock.t += 0.001
        bar.update(1)
    assert out.getvalue() == ""  # under 5 s: nothing yet
    clock.t = 110.0
    bar.update(1)
    assert out.getvalue() == "evaluating accuracy: 1,200/5,000 batches, 24%, 32s left\n"
    bar.update(1000)  # within the interval: no line
    assert out.getvalue().count("\n") == 1
    clock.t = 200.0
    bar.set_postfix(mean="7.5")
    bar.update(2800)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "evaluating accuracy: 5,000/5,000 batches, 100%, 1m40s elapsed, mean 7.5"
    assert "\r" not in out.getvalue()


def test_quick_work_stays_quiet_and_iteration_counts():
    clock, out = Clock(), io.StringIO()
    items = list(LineProgress(range(7), desc="x", interval=5, file=out, clock=clock))
    assert items == list(range(7)) and out.getvalue() == ""


def test_bytes_and_unknown_totals():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(
        total=10 * 2**20, desc="tokenizing", unit="B", interval=0, file=out, clock=clock
    )
    clock.t += 4
    bar.update(3 * 2**20)
    assert out.getvalue() == "tokenizing: 3.0 MiB/10.0 MiB, 30%, 9s left\n"
    out2 = io.StringIO()
    bar = LineProgress(desc="reading", unit="files", interval=0, file=out2, clock=clock)
    bar.update(3)
    assert out2.getvalue() == "reading: 3 files, 0s elapsed\n"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_picks_a_bar_on_a_terminal_and_lines_elsewhere():
    from tqdm import tqdm

    bar = progress(total=3, desc="d", file=Tty())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    assert isinstance(progress(total=3, desc="d", file=io.StringIO()), LineProgress)
    off = progress(range(3), desc="d", enabled=False)
    assert list(off) == [0, 1, 2]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "60")
    assert progress(total=1, file=io.StringIO()).interval == 60
    monkeypatch.setenv(INTERVAL_ENV, "nonsense")
    assert progress(total=1, file=io.StringIO()).interval == 5


# ---- the long phases ---------------------------------------------------------------------------


@pytest.fixture
def every_update(monkeypatch):
    """A progress line at every update; standard error (captured) is not a terminal."""
    monkeypatch.setenv(INTERVAL_ENV, "0")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig.from_preset("tiny", vocab_size=64, context_length=16)).eval()


def _lines(err: str, prefix: str) -> list[str]:
    assert "\r" not in err
    return [line for line in err.splitlines() if line.startswith(prefix)]


def test_classifier_accuracy_pass(every_update, tiny_model, capsys):
    from scratchgpt.tasks.classify import predict_dataset

    class Data:  # what predict_dataset reads of a ClassificationDataset
        input_ids = torch.randint(0, 64, (10, 8))
        attention_mask = torch.ones(10, 8, dtype=torch.long)
        labels = torch.randint(0, 2, (10,))

        def __len__(self) -> int:
            return 10

    data = Data()
    predict_dataset(tiny_model, data, batch_size=4, desc="accuracy on test")
    lines = _lines(capsys.readouterr().err, "accuracy on test: ")
    assert lines[0].startswith("accuracy on test: 1/3 batches, 33%")
    assert lines[-1].startswith("accuracy on test: 3/3 batches, 100%")


def test_evaluate_loss(every_update, tiny_model, capsys):
    from scratchgpt.evaluation import evaluate_loss

    data = [(torch.randint(0, 64, (8,)), torch.randint(0, 64, (8,))) for _ in range(6)]
    evaluate_loss(tiny_model, data, batch_size=2)
    lines = _lines(capsys.readouterr().err, "evaluating loss: ")
    assert lines[-1].startswith("evaluating loss: 3/3 batches, 100%")


def test_judge(every_update, capsys):
    from scratchgpt.evaluation import judge_responses

    client = types.SimpleNamespace(
        ask=lambda prompt: "80", endpoint="e", api="openai", model="m", seed=1, temperature=0.0
    )
    recs = [{"instruction": "i", "input": "", "output": "o", "model_response": "r"}] * 3
    judge_responses(recs, client)
    lines = _lines(capsys.readouterr().err, "judging: ")
    assert lines[-1].startswith("judging: 3/3 responses, 100%")


def test_responses(every_update, tiny_model, capsys):
    from scratchgpt.tasks.instruct import generate_responses
    from scratchgpt.tokenizers import get_tokenizer

    tok = get_tokenizer("gpt2")
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=64))
    recs = [{"instruction": f"say {i}", "input": "", "output": "x"} for i in range(3)]
    generate_responses(model, tok, recs, max_new_tokens=1, batch_size=2)
    lines = _lines(capsys.readouterr().err, "responses: ")
    assert lines[0].startswith("responses: 2/3 records") and "3/3" in lines[-1]


def test_classify_texts(every_update, capsys):
    from scratchgpt.tasks.classify import Classifier, classify
    from scratchgpt.tokenizers import get_tokenizer

    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=32))
    model.out_head = torch.nn.Linear(model.cfg.emb_dim, 2)
    clf = Classifier(model=model, tokenizer=get_tokenizer("gpt2"), label_names=["a", "b"],
                     max_length=32, pad_token_id=50256)  # fmt: skip
    classify(clf, ["one", "two", "three"], batch_size=1)
    lines = _lines(capsys.readouterr().err, "classifying: ")
    assert lines[-1].startswith("classifying: 3/3 batches, 100%")


def test_training_evaluation(every_update, tmp_path, capsys):
    from scratchgpt.data.pretraining import SlidingWindowDataset
    from scratchgpt.tasks.pretrain import PretrainTask
    from scratchgpt.training.config import TrainConfig
    from scratchgpt.training.loop import train
    from scratchgpt.training.run_dir import prepare_run_dir

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=64, context_length=8))
    ids = torch.randint(0, 64, (8 * 12 + 1,))
    data = SlidingWindowDataset(ids, max_length=8, stride=8)
    cfg = TrainConfig(batch_size=2, max_steps=1, eval_interval=1, eval_batches=3,
                      sample_tokens=0, plot=False, device="cpu")  # fmt: skip
    train(model, PretrainTask(), data, data, cfg, prepare_run_dir(tmp_path / "run"))
    err = capsys.readouterr().err
    assert _lines(err, "evaluating on train data: 3/3 batches")
    assert _lines(err, "evaluating on val data: 3/3 batches")


def test_prepare_and_bpe(every_update, tmp_path, capsys):
    from scratchgpt.data.corpus import prepare
    from scratchgpt.tokenizers.bpe import train_bpe

    src = tmp_path / "a.txt"
    src.write_text("hello world, " * 200, encoding="utf-8")
    prepare(src, tmp_path / "out", "gpt2", num_workers=1)
    assert _lines(capsys.readouterr().err, "tokenizing: ")
    train_bpe("hello world hello there " * 50, 256 + 1 + 5, progress=True)
    assert _lines(capsys.readouterr().err, "learning merges: 5/5 tokens")


# ---- the warning before generation slides the context window -----------------------------------


def _gen_warnings(fn) -> list[warnings.WarningMessage]:
    from scratchgpt.generation import ContextSlideWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, ContextSlideWarning)]


def test_context_slide_warning_once_per_call(tiny_model):
    from scratchgpt.generation import generate

    # Context 16: the 7th new token is sampled from 10 + 6 = 16 tokens, the 8th would slide.
    prompt = torch.randint(0, 64, (1, 10))
    caught = _gen_warnings(lambda: generate(tiny_model, prompt, max_new_tokens=12))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "10 prompt tokens + up to 12 new tokens go past the context size of 16" in message
    assert "after 7 new tokens" in message and "ask for at most 7 new tokens" in message
    assert caught[0].filename == __file__  # points at the caller's line
    assert not _gen_warnings(lambda: generate(tiny_model, prompt, max_new_tokens=7))
    assert _gen_warnings(lambda: generate(tiny_model, prompt, max_new_tokens=8))
    full = torch.randint(0, 64, (1, 16))  # the prompt fills the context
    (caught,) = _gen_warnings(lambda: generate(tiny_model, full, max_new_tokens=2))
    (one,) = _gen_warnings(lambda: generate(tiny_model, full[:, :1], max_new_tokens=20))
    assert str(one.message).startswith("1 prompt token + up to 20 new tokens")
    assert "ask for at most 1 new token (or a shorter prompt)" in str(caught.message)
    # Without the KV cache every step re-runs the window anyway: nothing gets slower.
    assert not _gen_warnings(lambda: generate(tiny_model, prompt, 12, use_cache=False))


def test_context_slide_warning_text_api_and_silencing():
    from scratchgpt.generation import ContextSlideWarning, generate_text, stream_generate
    from scratchgpt.tokenizers import get_tokenizer

    tok = get_tokenizer("char", corpus="abcdefgh ")
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=tok.vocab_size, context_length=8))
    assert len(_gen_warnings(lambda: generate_text(model, tok, "abcd", max_new_tokens=8))) == 1
    assert (
        len(_gen_warnings(lambda: list(stream_generate(model, tok, "abcd", max_new_tokens=8)))) == 1
    )
    assert issubclass(ContextSlideWarning, UserWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ContextSlideWarning)
        generate_text(model, tok, "abcd", max_new_tokens=8)
    assert not caught
