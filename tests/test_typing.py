"""The package type-checks: `mypy python/fastmlp` (configured in pyproject.toml's
[tool.mypy]) reports no errors. Skipped when mypy is not installed (it is in the
`test` extra)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "fastmlp"


def test_mypy_reports_no_errors():
    pytest.importorskip("mypy")
    if not PACKAGE.is_dir():
        pytest.skip("no source checkout (python/fastmlp) to check")
    # run from the repository root so that mypy reads pyproject.toml's [tool.mypy]
    proc = subprocess.run([sys.executable, "-m", "mypy", "python/fastmlp"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"mypy exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
