"""`python -m scratchgpt` runs the CLI (also what torchrun launches)."""

from scratchgpt.cli import entry

entry()
