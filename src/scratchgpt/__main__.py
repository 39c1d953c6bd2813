"""`python -m scratchgpt` runs the CLI (also what torchrun launches)."""

from scratchgpt.cli import main
from scratchgpt.training.distributed import exit_process

exit_process(main())
