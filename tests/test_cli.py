"""Tests of the ``sqlite-resilient`` command line: ``python -m sqlite_resilient`` and ``cli.main``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sqlite_resilient
from sqlite_resilient import _demo
from sqlite_resilient.cli import main

SUBPROCESS_TIMEOUT = 60


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -W error -m sqlite_resilient *args`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "sqlite_resilient", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The cells of the demo table's scenario rows, keyed by scenario name."""
    rows = {}
    for line in stdout.splitlines():
        for scenario in _demo.SCENARIOS:
            if line.startswith(f"{scenario} ") and not line.startswith(f"{scenario}:"):
                rows[scenario] = line[len(scenario) :].split()
    return rows


@pytest.mark.timeout(30)
def test_help_in_a_subprocess() -> None:
    """``python -m sqlite_resilient --help`` exits 0 and lists the ``demo`` subcommand under
    the program name ``sqlite-resilient``."""
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sqlite-resilient ")
    assert "demo" in result.stdout
    assert result.stderr == ""


@pytest.mark.timeout(30)
def test_version_in_a_subprocess() -> None:
    """``python -m sqlite_resilient --version`` prints the package's version and exits 0."""
    result = run_module("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sqlite-resilient {sqlite_resilient.__version__}\n"


@pytest.mark.timeout(40)
def test_short_demo_prints_the_table(tmp_path: Path) -> None:
    """A short demo in a real subprocess (real writer processes, started with spawn) exits 0,
    prints the table with a row per scenario and its footer, announces each scenario on a
    non-terminal stderr, removes its databases, and sqlite_resilient's writers lose nothing."""
    result = run_module("demo", "--seconds", "0.5", "--writers", "1", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert set(rows) == set(_demo.SCENARIOS), result.stdout
    for cells in rows.values():
        assert len(cells) == len(_demo._COLUMNS)
        reads_ok = int(cells[0])
        assert reads_ok > 0
    writes_failed = int(rows[_demo.RESILIENT][3])
    assert writes_failed == 0, result.stdout
    assert "plain sqlite3 with a 0.1 s timeout, as a web request would use" in " ".join(result.stdout.split())
    for scenario in _demo.SCENARIOS:
        assert f"demo: running {scenario} for 0.5 s with 1 writer process\n" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--seconds", "0"], "argument --seconds: must be > 0"),
        (["demo", "--seconds", "nan"], "argument --seconds: must be > 0"),
        (["demo", "--seconds", "soon"], "argument --seconds: not a number of seconds: 'soon'"),
        (["demo", "--writers", "0"], "argument --writers: must be from 1 to 32, not 0"),
        (["demo", "--writers", "1.5"], "argument --writers: not a whole number: '1.5'"),
        (["demo", "--dir", "/nonexistent/sqlite-resilient-demo"], "argument --dir: not an existing directory"),
    ],
)
def test_main_returns_2_on_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``main()`` called in-process returns 2 for a usage error, as argparse's exit status,
    without leaving the interpreter, and says what is wrong on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sqlite-resilient")
    assert message in err


def test_main_returns_0_for_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``main(["--help"])`` and ``main(["demo", "--help"])`` and ``main(["--version"])`` print
    to stdout and return 0 rather than raising ``SystemExit``."""
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--seconds" in out
    assert "--writers" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"sqlite-resilient {sqlite_resilient.__version__}\n"


def test_report_has_a_row_per_scenario_and_says_how_it_measured() -> None:
    """The report of given results has the header, one aligned row per scenario with its
    numbers (percentiles by nearest rank) and the footer lines naming the timeouts."""
    reader = _demo.ReaderStats(ok=3, failed=1, latencies_ms=[1.0, 2.0, 3.0, 100.0])
    writers = _demo.WriterStats(committed=7, failed=2, longest_ms=12.5)
    results = [
        _demo.ScenarioResult(_demo.PLAIN, reader, writers),
        _demo.ScenarioResult(_demo.RESILIENT, _demo.ReaderStats(), _demo.WriterStats()),
    ]
    report = _demo.format_report(results, seconds=3.0, writers=2)
    rows = table_rows(report)
    assert rows[_demo.PLAIN] == ["3", "1", "7", "2", "2.0", "100.0", "100.0", "12.5"]
    assert rows[_demo.RESILIENT] == ["0", "0", "0", "0", "0.0", "0.0", "0.0", "0.0"]
    lines = report.splitlines()
    assert len({len(line) for line in lines[1:5]}) == 1  # labels, rule and rows line up
    flat = " ".join(report.split())
    assert "plain sqlite3 with a 0.1 s timeout, as a web request would use" in flat
    assert "the same 0.1 s budget as plain" in flat
