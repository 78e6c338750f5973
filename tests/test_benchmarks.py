"""The benchmark scripts run and print their table (their numbers are never asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_overhead_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/overhead.py`` completes, prints one row per measured operation and
    writes the same rows to its JSON file."""
    report = tmp_path / "overhead.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "overhead.py"), "--rounds", "1", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:1] == ["operation"]
    operations = ("SELECT 1", "100-row fetch", "insert transaction", "executemany", "connect()", "per-request")
    for operation in operations:
        assert any(operation in line and line.rstrip().endswith("x") for line in lines), operation
    rows = json.loads(report.read_text())["results"]
    assert len(rows) == len(operations)
    assert all(row["raw_us"] > 0 and row["resilient_us"] > 0 for row in rows)


def test_contention_benchmark_runs_prints_and_audits(tmp_path: Path) -> None:
    """``benchmarks/contention.py`` runs every strategy briefly, prints one row for each and
    writes its JSON; no strategy loses a counter update, and none of the BEGIN IMMEDIATE
    strategies processes an item twice (correctness, not timing: never timing is asserted)."""
    report = tmp_path / "contention.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "contention.py"),
            *("--writers", "2", "--readers", "1", "--seconds", "0.2"),
            *("--dir", str(tmp_path), "--json", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    strategies = ["plain", "wal-handrolled", "wal-implicit-immediate", "wal-begin-immediate", "apsw"]
    strategies += ["sqlite_resilient", "sqlite_resilient-dropin", "ceiling"]
    if importlib.util.find_spec("apsw") is None:
        strategies.remove("apsw")
        assert "apsw: skipped" in result.stdout
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("strategy"))
    rows = [line.split()[0] for line in lines[header + 2 : header + 2 + len(strategies)]]
    assert rows == strategies
    runs = {run["strategy"]: run for run in json.loads(report.read_text())["runs"]}
    assert list(runs) == strategies
    for name, run in runs.items():
        assert run["missing_workers"] == [], name
        assert run["lost_updates"] == 0, name
        assert run["processed_log_rows"] == run["items_processed_committed"], name
        if name in ("wal-begin-immediate", "apsw", "sqlite_resilient", "ceiling"):
            assert run["items_processed_twice"] == 0, name


def test_soak_runs_briefly_and_its_audit_passes(tmp_path: Path) -> None:
    """``benchmarks/soak.py`` for two seconds: writers and readers killed and restarted, and
    the audit (every acknowledged transaction whole, counter exact, integrity ok, no stuck
    lock) passes."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "soak.py"), "--seconds", "2", "--writers", "2", "--readers", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit                      ok" in result.stdout
    kills = next(line for line in result.stdout.splitlines() if "kills" in line)
    assert kills.split()[1] != "0" or kills.split()[3] != "0", kills


def test_fairness_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/fairness.py`` runs every strategy briefly and prints one row for each;
    no write fails (what the waits were is its table's business, never asserted)."""
    report = tmp_path / "fairness.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "fairness.py"),
            *("--seconds", "0.5", "--ingestion-ms", "20", "--short-writers", "1", "--json", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("strategy"))
    strategies = ["sqlite_resilient", "sqlite_resilient-no-queue", "wal-begin-immediate"]
    assert [line.split()[0] for line in lines[header + 2 : header + 5]] == strategies
    results = json.loads(report.read_text())["results"]
    assert [row["strategy"] for row in results] == strategies
    assert all(row["short_failures"] == 0 and row["ingestion_commits"] > 0 for row in results)
