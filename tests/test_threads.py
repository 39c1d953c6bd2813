"""--threads on every command, SCRATCHGPT_THREADS, and the default thread count (no timing)."""

from __future__ import annotations

import argparse
import functools
import io

import pytest
import torch

from scratchgpt import threads as th
from scratchgpt.cli import build_parser, main


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in (th.ENV_VAR, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def _leaf_parsers(parser: argparse.ArgumentParser, name: str = "scratchgpt"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
        return
    for sub in subs:
        for child_name, child in sub.choices.items():
            yield from _leaf_parsers(child, f"{name} {child_name}")


def test_every_command_has_threads_and_applies_it_first():
    leaves = list(_leaf_parsers(build_parser()))
    assert len(leaves) > 15
    for name, p in leaves:
        if name == "scratchgpt":
            continue
        options = {s for a in p._actions for s in a.option_strings}
        assert "--threads" in options, name
        func = p.get_default("func")
        assert isinstance(func, functools.partial) and func.args[0] is not None, name


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "--preset", "tiny"],
        ["data", "list"],
        ["generate", "--preset", "tiny", "--prompt", "Hi", "--max-new-tokens", "1"],
    ],
)
def test_threads_option_is_applied(argv, capsys):
    torch.set_num_threads(1)
    assert main([*argv, "--threads", "3"]) == 0
    assert torch.get_num_threads() == 3


def test_threads_applied_before_a_command_fails(tmp_path, capsys):
    torch.set_num_threads(1)
    missing = str(tmp_path / "nope")
    assert main(["generate", "--checkpoint", missing, "--prompt", "x", "--threads", "3"]) == 2
    assert torch.get_num_threads() == 3


def test_environment_variable(monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.setenv(th.ENV_VAR, "3")
    assert main(["info", "--preset", "tiny"]) == 0
    assert torch.get_num_threads() == 3
    assert main(["info", "--preset", "tiny", "--threads", "2"]) == 0  # the flag wins
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_invalid_threads_flag(value, capsys):
    assert main(["info", "--preset", "tiny", "--threads", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --threads: "), err
    assert "whole number of threads >= 1" in err


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_invalid_environment_variable(value, monkeypatch, capsys):
    monkeypatch.setenv(th.ENV_VAR, value)
    assert main(["info", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {th.ENV_VAR}: "), err


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 7.5, 1), (16, 3.4, 13), (1, 0, 1)],
)
def test_default_threads_counts_idle_cores(cores, load, expected):
    assert th.default_threads(cores=cores, load=load) == expected


def test_default_threads_shares_cores_between_local_processes():
    assert th.default_threads(cores=16, load=0.0, processes=4) == 4
    assert th.default_threads(cores=2, load=0.0, processes=2) == 1
    assert th.default_threads(cores=2, load=0.0, processes=4) == 1


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # torchrun sets 1 per process
    assert th.resolve_threads() == 3
    monkeypatch.setenv(th.ENV_VAR, "2")
    assert th.resolve_threads() == 2
    monkeypatch.delenv(th.ENV_VAR)
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested form: not ours to judge
    monkeypatch.setattr(th, "default_threads", lambda: 7)
    assert th.resolve_threads() == 7


def test_default_threads_reads_this_machine(monkeypatch):
    monkeypatch.setattr(th, "usable_cores", lambda: 8)
    monkeypatch.setattr(th, "busy_cores", lambda: 2.6)
    assert th.default_threads() == 5
    assert th.resolve_threads() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert th.default_threads() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")


def test_busy_cores_samples_proc_stat_now_not_the_load_average(monkeypatch):
    # Two samples of /proc/stat for cpus 0 and 1, 0.2 s apart: cpu0 fully busy, cpu1 idle.
    samples = iter(
        [
            "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\n",
            "cpu  0 0 0 0 0 0 0 0\ncpu0 120 0 0 0 0 0 0 0\ncpu1 0 0 0 120 0 0 0 0\n",
        ]
    )
    real_open = open

    def fake_open(path, *a, **k):
        if path == "/proc/stat":
            return io.StringIO(next(samples))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(th.time, "sleep", lambda s: None)
    # A lagging load average (work that just ended) must not count.
    monkeypatch.setattr(th.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert th.busy_cores() == pytest.approx(1.0)


def test_busy_cores_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(th, "_cpu_times", lambda cpus: None)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (1.4, 1.0, 0.5))
    assert th.busy_cores() == 1.4

    def no_loadavg():
        raise OSError("no load average")

    monkeypatch.setattr(th.os, "getloadavg", no_loadavg)
    assert th.busy_cores() == 0.0


def test_busy_cores_on_this_machine_is_a_share_of_its_cores():
    assert 0.0 <= th.busy_cores(0.05) <= th.usable_cores()


def test_python_api(monkeypatch):
    import scratchgpt

    assert scratchgpt.set_threads(3) == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv(th.ENV_VAR, "2")
    assert scratchgpt.set_threads() == 2 and torch.get_num_threads() == 2
    with pytest.raises(scratchgpt.errors.ConfigError, match="threads: 0 is not a thread count"):
        scratchgpt.set_threads(0)
