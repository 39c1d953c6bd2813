"""The lm-evaluation-harness adapter: harness tasks defined in local YAML over local JSON data,
run through `scratchgpt-lm-eval` on a scratchgpt checkpoint and through the harness's own
Hugging Face backend on the same model exported to a transformers folder; the log-likelihoods
must agree to 1e-4 and the greedy generations exactly. Each harness run is a subprocess with the
Hugging Face libraries offline, so nothing downloads and the rest of the suite keeps its
environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchgpt.assets import asset_path
from scratchgpt.config import GPTConfig
from scratchgpt.evaluation.choice import example_path, load_choice_items

TASKS = {
    "sg_choice": """
task: sg_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/choice.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "sg_rolling": """
task: sg_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/texts.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
""",
    "sg_gen": """
task: sg_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/choice.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny GPT-2 as a scratchgpt checkpoint and as a transformers folder, the task files and
    their data."""
    from scratchgpt.model import GPTModel
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint, save_hf_model

    root = tmp_path_factory.mktemp("harness")
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=48)).eval()
    tok = get_tokenizer("gpt2")
    save_checkpoint(root / "ckpt", model, tok)
    save_hf_model(model, root / "hf")
    # GPT-2's tokenizer files under the names transformers reads.
    shutil.copy(asset_path("gpt2/encoder.json"), root / "hf" / "vocab.json")
    shutil.copy(asset_path("gpt2/vocab.bpe"), root / "hf" / "merges.txt")

    data = root / "data"
    data.mkdir()
    with open(data / "choice.jsonl", "w", encoding="utf-8") as f:
        for item in load_choice_items(example_path())[:8]:
            rec = {"question": item.question, "choices": list(item.choices), "answer": item.answer}
            f.write(json.dumps(rec) + "\n")
    story = asset_path("the-verdict.txt").read_text("utf-8")
    with open(data / "texts.jsonl", "w", encoding="utf-8") as f:
        for start in (0, 700, 1900):  # each longer than the 48-token context: several windows
            f.write(json.dumps({"text": story[start : start + 500]}) + "\n")
    tasks = root / "tasks"
    tasks.mkdir()
    for name, text in TASKS.items():
        (tasks / f"{name}.yaml").write_text(text.format(data=data), encoding="utf-8")
    return root


def _run_harness(root: Path, model: str, model_args: str, out: Path) -> dict[str, list[dict]]:
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(root / "hf-home"),
        "HF_DATASETS_CACHE": str(root / "hf-home" / "datasets"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "scratchgpt.evaluation.harness", "run",
        "--model", model, "--model_args", model_args,
        "--tasks", ",".join(TASKS), "--include_path", str(root / "tasks"),
        "--batch_size", "3", "--device", "cpu", "--output_path", str(out), "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    samples: dict[str, list[dict]] = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        samples[task] = sorted(rows, key=lambda r: r["doc_id"])
    assert set(samples) == set(TASKS), sorted(p.name for p in out.rglob("*"))
    return samples


@pytest.mark.slow
def test_adapter_matches_the_harness_hf_backend(setup):
    ours = _run_harness(setup, "scratchgpt", f"checkpoint={setup / 'ckpt'}", setup / "out-ours")
    theirs = _run_harness(setup, "hf", f"pretrained={setup / 'hf'},dtype=float32", setup / "out-hf")
    # loglikelihood: one (logprob, greedy) per choice of every question
    n_choices = 0
    for a, b in zip(ours["sg_choice"], theirs["sg_choice"], strict=True):
        for (lp_a, greedy_a), (lp_b, greedy_b) in zip(
            [r[0] for r in a["resps"]], [r[0] for r in b["resps"]], strict=True
        ):
            assert float(lp_a) == pytest.approx(float(lp_b), abs=1e-4)
            assert greedy_a == greedy_b  # "True" / "False", as the harness logs them
            n_choices += 1
    assert n_choices == 32
    # loglikelihood_rolling: whole texts of several context windows each
    for a, b in zip(ours["sg_rolling"], theirs["sg_rolling"], strict=True):
        assert float(a["resps"][0][0]) == pytest.approx(float(b["resps"][0][0]), abs=1e-4)
    # generate_until: the same greedy text, stopped at the same place
    gens = [(a["resps"][0][0], b["resps"][0][0]) for a, b in zip(ours["sg_gen"], theirs["sg_gen"])]
    assert len(gens) == 8 and all(a == b for a, b in gens)
