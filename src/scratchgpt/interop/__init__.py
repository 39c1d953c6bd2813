"""Deprecated: GPT-2 weights from elsewhere moved to :mod:`scratchgpt.weights`.

``scratchgpt.interop`` (and ``.gpt2_weights``, ``.hub``) keep working for one release with a
DeprecationWarning; use ``scratchgpt.weights``.
"""

from __future__ import annotations

from scratchgpt._moved import moved_names

__getattr__ = moved_names("scratchgpt.interop", {}, rest="scratchgpt.weights")
