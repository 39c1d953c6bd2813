"""Data files bundled with scratchgpt (see NOTICE.md for origin and licenses).

Only `scratchgpt.data.sources` and the GPT-2 tokenizer look here; everything else asks them.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def asset_path(name: str) -> Path:
    """Path of a bundled file, e.g. ``asset_path("gpt2/vocab.bpe")``."""
    p = ASSETS_DIR / name
    if not p.is_file():
        raise FileNotFoundError(
            f"bundled asset {name!r} not found in {ASSETS_DIR}; reinstall scratchgpt"
        )
    return p
