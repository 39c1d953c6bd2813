"""Text generation: the book's ``generate`` loop (chapter 5), made complete and fast.

- :mod:`~scratchgpt.generation.sampling`: :class:`SamplingConfig` and ``sample_next_token``
  (top-k -> temperature -> softmax -> top-p -> sample; ``temperature == 0`` is greedy).
- :mod:`~scratchgpt.generation.decode`: ``generate`` on token ids and the cached decoding loop
  (prefill into a KV cache, one token per step, left-padded batches, per-row stops).
- :mod:`~scratchgpt.generation.text`: ``generate_text`` and ``stream_generate`` with a tokenizer.
- :mod:`~scratchgpt.generation.stops`: the stop-string matcher both use.
- :mod:`~scratchgpt.generation.slots`: ``SlotDecoder``, continuous batching (the server's
  engine): many sequences decoded together, each token for token as if alone.
"""

from __future__ import annotations

from scratchgpt.generation.decode import ContextSlideWarning, generate, optimize_for_decoding
from scratchgpt.generation.sampling import SamplingConfig, sample_next_token
from scratchgpt.generation.text import (
    AUTO,
    EOT,
    TextStream,
    TokenizerLike,
    encode_prompt,
    generate_text,
    stop_ids,
    stream_generate,
)

__all__ = [
    "AUTO",
    "EOT",
    "ContextSlideWarning",
    "SamplingConfig",
    "TextStream",
    "TokenizerLike",
    "encode_prompt",
    "generate",
    "generate_text",
    "optimize_for_decoding",
    "sample_next_token",
    "stop_ids",
    "stream_generate",
]
