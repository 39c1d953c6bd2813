"""The architecture, enforced: the layer order and the size of readable units.

docs/architecture.md describes the layers and why; these tests keep the code honest about it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "scratchgpt"

# Files that may be longer because they hold one algorithm, read top to bottom.
LONG_FILES_ALLOWED = {"tokenizers/bpe.py"}
# Functions that may be longer: the training loop reads top to bottom, as nanoGPT's train.py.
LONG_FUNCTIONS_ALLOWED = {"training/loop.py:train"}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80  # statements of the body, signature and docstring not counted


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_layers_import_only_downwards() -> None:
    """import-linter checks the contract in pyproject.toml, function-level imports included."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
        and len(body) > 1
    ):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def test_files_stay_readable() -> None:
    too_long = []
    for path in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        n = path.read_text(encoding="utf-8").count("\n")
        if n > MAX_FILE_LINES and rel not in LONG_FILES_ALLOWED:
            too_long.append(f"{rel}: {n} lines")
    assert not too_long, f"split these files (over {MAX_FILE_LINES} lines): {too_long}"


def test_functions_stay_readable() -> None:
    too_long = []
    for path in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _body_lines(node)
                if n > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONG_FUNCTIONS_ALLOWED:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, f"split these functions (over {MAX_FUNCTION_LINES} lines): {too_long}"
