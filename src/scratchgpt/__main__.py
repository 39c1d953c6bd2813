"""`python -m scratchgpt` runs the CLI (also what torchrun launches)."""

import sys

from scratchgpt.cli import main

sys.exit(main())
