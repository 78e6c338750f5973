"""The benchmark scripts run and print their table (their numbers are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_overhead_benchmark_runs_and_prints_its_table() -> None:
    """``benchmarks/overhead.py`` completes and prints one row per measured operation."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "overhead.py"), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:1] == ["operation"]
    for operation in ("SELECT 1", "100-row fetch", "insert transaction", "executemany", "connect()"):
        assert any(operation in line and line.rstrip().endswith("x") for line in lines), operation
