"""Sampling is numerically safe for every value the validation accepts (a property test)."""

from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scratchgpt.generation import SamplingConfig
from scratchgpt.generation.sampling import GREEDY_BELOW, sample_next_token

# Every float SamplingConfig accepts: temperature >= 0, top_p in (0, 1], subnormals included.
temperatures = st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False)
top_ps = st.floats(min_value=5e-324, max_value=1.0, allow_nan=False)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    temperature=temperatures,
    top_p=st.none() | top_ps,
    top_k=st.none() | st.integers(min_value=1, max_value=20),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
)
@example(temperature=5e-324, top_p=None, top_k=None, scale=1.0)
@example(temperature=4.7e-81, top_p=None, top_k=None, scale=1.0)
@example(temperature=1e-300, top_p=None, top_k=None, scale=1e4)
@example(temperature=1.0, top_p=5e-324, top_k=None, scale=1.0)
@example(temperature=1e308, top_p=1e-45, top_k=3, scale=1e4)
def test_any_accepted_setting_samples_a_valid_token(temperature, top_p, top_k, scale):
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=0)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, generator=g) * scale
    ids = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator=g)
    assert ids.shape == (3,)
    assert bool(((ids >= 0) & (ids < 20)).all())
    if temperature < GREEDY_BELOW:
        assert torch.equal(ids, logits.argmax(dim=-1))


def test_a_tiny_top_p_keeps_the_most_likely_token():
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert sample_next_token(logits, 1.0, top_p=5e-324, generator=g).item() == 1
