"""Deprecated: moved to :mod:`scratchgpt.weights.hub`."""

from __future__ import annotations

from scratchgpt._moved import moved_names

__getattr__ = moved_names("scratchgpt.interop.hub", {}, rest="scratchgpt.weights.hub")
