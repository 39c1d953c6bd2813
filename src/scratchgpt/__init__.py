"""scratchgpt: a GPT-style LLM built from scratch in PyTorch."""

__version__ = "0.1.0"
