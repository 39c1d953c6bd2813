"""Suite-wide settings: one torch thread per test process.

`make test` runs two pytest workers on a 2-core machine; with torch's default of one thread per
core each, the workers fight over the cores and slow each other down many times over.
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        # The CLI sets threads before each command (main() in-process and subprocesses too).
        os.environ.setdefault("SCRATCHGPT_THREADS", "1")
    yield
