"""The type checker over the product: hub/, adapters/ and benchmarks/ (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_mypy_finds_no_error() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(REPO / ".mypy_cache")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
