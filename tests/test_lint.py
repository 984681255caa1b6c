"""The style rules of pyproject.toml ([tool.ruff]) hold over the package, the tests, the benchmarks and the scripts:
no unused import, no two statements on a line, no three blank lines, no line over 140 characters, ..."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_would_catch_a_slip(tmp_path):
    """The check is not vacuous: a file with the review's slips fails it under the project's settings."""
    slip = tmp_path / "slip.py"
    slip.write_text("import os\n\n\n\ndef f():\n    a = 1; return a\n")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                             "--output-format", "concise", str(slip)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    for rule in ("unused-import", "too-many-blank-lines", "multiple-statements-on-one-line-semicolon"):
        assert rule in result.stdout, result.stdout
