"""Tests of the ``sqlite-resilient`` command line: ``python -m sqlite_resilient`` and ``cli.main``."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from conftest import StartLockHolder

import sqlite_resilient
from sqlite_resilient import _demo
from sqlite_resilient.cli import main

SUBPROCESS_TIMEOUT = 60
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["polls", "failed reads", "empty", "twice", "p99 ms", "wait ms", "committed", "failed writes"]
"""The demo table's columns after the scenario name, as the tests name them."""

MATPLOTLIB_MISSING = "matplotlib is not importable (pip install 'sqlite_resilient[bench]')"


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -W error -m sqlite_resilient *args`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "sqlite_resilient", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The cells of the demo table's scenario rows by column (see ``COLUMNS``), keyed by
    scenario name."""
    rows = {}
    for line in stdout.splitlines():
        for scenario in _demo.SCENARIOS:
            if line.startswith(f"{scenario} ") and not line.startswith(f"{scenario}:"):
                cells = line[len(scenario) :].split()
                assert len(cells) == len(COLUMNS), line
                rows[scenario] = dict(zip(COLUMNS, cells))
    return rows


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of the PNG at *path* (from its IHDR chunk); fails if it is no PNG."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


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
    prints the table with its columns, a row per scenario and the footer, announces each
    scenario on a non-terminal stderr and removes its databases; sqlite_resilient's row
    shows no failed read, no failed write and no row processed twice."""
    result = run_module("demo", "--seconds", "0.5", "--writers", "2", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    header = result.stdout.splitlines()[:2]
    for title in ("dashboard", "rows processed", "read p99", "longest write", "writes"):
        assert title in header[0]
    for label in ("polls", "failed reads", "empty", "twice", "ms", "wait ms", "committed", "failed"):
        assert label in header[1]
    rows = table_rows(result.stdout)
    assert set(rows) == set(_demo.SCENARIOS), result.stdout
    for cells in rows.values():
        assert int(cells["polls"]) > 0
        assert int(cells["committed"]) > 0
    resilient = rows[_demo.RESILIENT]
    assert resilient["failed reads"] == "0", result.stdout
    assert resilient["empty"] == "0", result.stdout
    assert resilient["twice"] == "0", result.stdout
    assert resilient["failed writes"] == "0", result.stdout
    flat = " ".join(result.stdout.split())
    assert "plain sqlite3 with a 0.1 s timeout, as a web request would use" in flat
    assert "0 lock errors surfaced" in flat
    for scenario in _demo.SCENARIOS:
        assert f"demo: running {scenario} for 0.5 s with 2 writer processes\n" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(40)
def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --plot PATH`` prints the table and writes a PNG chart to PATH, whatever its
    suffix, and says so on stderr."""
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_MISSING)
    plot = tmp_path / "demo-chart"
    databases = tmp_path / "databases"
    databases.mkdir()
    argv = ["demo", "--seconds", "0.2", "--writers", "1", "--dir", str(databases), "--plot", str(plot)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert set(table_rows(captured.out)) == set(_demo.SCENARIOS)
    assert f"demo: plot written to {plot}\n" in captured.err
    assert png_size(plot) == (1400, 450)


def test_plot_of_empty_dashboards(tmp_path: Path) -> None:
    """The chart of given results, empty dashboards among them, is a PNG."""
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_MISSING)
    polls = [_demo.Poll(0.0, 1.0, 0, 5), _demo.Poll(0.1, 100.0, 2, 0)]
    results = [
        _demo.ScenarioResult(_demo.PLAIN, _demo.ReaderStats(polls), _demo.WriterStats(failed=1)),
        _demo.ScenarioResult(_demo.RESILIENT, _demo.ReaderStats(), _demo.WriterStats()),
    ]
    plot = tmp_path / "empty.png"
    _demo.write_plot(results, str(plot))
    assert png_size(plot) == (1400, 450)


@pytest.mark.timeout(30)
def test_plot_without_matplotlib_exits_2_before_running(tmp_path: Path) -> None:
    """With matplotlib not importable, ``demo --plot`` exits 2 at once, naming the extra to
    install, without running a scenario or writing anything."""
    plot = tmp_path / "demo.png"
    script = textwrap.dedent(
        f"""
        import sys

        class NoMatplotlib:
            def find_spec(self, name, path=None, target=None):
                if name == "matplotlib" or name.startswith("matplotlib."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NoMatplotlib())
        from sqlite_resilient.cli import main
        sys.exit(main(["demo", "--dir", {str(tmp_path)!r}, "--plot", {str(plot)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("sqlite-resilient demo: --plot needs matplotlib")
    assert "pip install 'sqlite_resilient[bench]'" in result.stderr
    assert "demo: running" not in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_poll_of_a_locked_or_empty_database_is_an_empty_dashboard(
    tmp_path: Path, lock_holder: StartLockHolder
) -> None:
    """A dashboard poll counts a failed read per panel query that raised, and is empty when
    no panel had a row to show: all panels failed (another process holds an exclusive lock
    on a plain database) or the table has no row."""
    path = tmp_path / "items.db"
    _demo.create_database(_demo.PLAIN, str(path))
    errors: Counter[str] = Counter()
    conn = _demo.open_dashboard(_demo.PLAIN, str(path))
    try:
        holder = lock_holder(path, "EXCLUSIVE")
        locked = _demo.poll_dashboard(conn, 0.0, errors)
        holder.release()
        unlocked = _demo.poll_dashboard(conn, 0.0, errors)
        conn.execute("DELETE FROM items")
        conn.commit()
        empty = _demo.poll_dashboard(conn, 0.0, errors)
    finally:
        conn.close()
    panels = len(_demo.DASHBOARD_PANELS)
    assert (locked.failed_reads, locked.rows, locked.empty) == (panels, 0, True)
    assert errors == Counter({"OperationalError: database is locked": panels})
    assert unlocked.failed_reads == 0
    assert unlocked.rows > 0
    assert not unlocked.empty
    assert (empty.failed_reads, empty.rows, empty.empty) == (0, 0, True)
    stats = _demo.ReaderStats([locked, unlocked, empty], errors)
    assert (stats.failed_reads, stats.empty) == (panels, 2)


def test_audit_counts_rows_processed_more_than_once(tmp_path: Path) -> None:
    """The audit counts exactly the rows whose enrichment ran more than once, from
    ``enrich_count``, which every enrichment increments (the UPDATE has no guard)."""
    path = tmp_path / "items.db"
    _demo.create_database(_demo.RESILIENT, str(path))
    conn = sqlite3.connect(path)
    try:
        for item_id in (1, 2, 2, 3, 3, 3):
            conn.execute(_demo._UPDATE_ENRICHED, (1.0, item_id))
        conn.commit()
    finally:
        conn.close()
    assert _demo.audit(str(path)) == _demo.Audit(rows=_demo.SEED_ROWS, enriched=3, enrichments=6, processed_twice=2)


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
        (["demo", "--plot", "/nonexistent/sqlite-resilient-demo/demo.png"], "argument --plot: no such directory"),
        (["demo", "--plot", "."], "argument --plot: not a file path: '.'"),
        (["demo", "--plot"], "argument --plot: expected one argument"),
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
    assert "--plot" in out
    assert "pip install 'sqlite_resilient[bench]'" in " ".join(out.split())
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"sqlite-resilient {sqlite_resilient.__version__}\n"


def test_report_has_a_row_per_scenario_and_says_how_it_measured() -> None:
    """The report of given results has the two-line header, one aligned row per scenario
    with its numbers (p99 by nearest rank over whole polls) and the footer lines that
    define them."""
    polls = [_demo.Poll(0.0, ms, 1 if ms > 50 else 0, 0 if ms > 90 else 3) for ms in (1.0, 2.0, 3.0, 60.0, 100.0)]
    reader = _demo.ReaderStats(polls)
    writers = _demo.WriterStats(committed=7, failed=2, longest_wait_ms=12.5)
    resilient = _demo.WriterStats(committed=9, longest_wait_ms=3.4, lock_waits=4, total_wait_ms=8.0)
    results = [
        _demo.ScenarioResult(_demo.PLAIN, reader, writers, _demo.Audit(150, 40, 45, 5)),
        _demo.ScenarioResult(_demo.RESILIENT, _demo.ReaderStats(), resilient, _demo.Audit(150, 40, 40, 0)),
    ]
    report = _demo.format_report(results, seconds=3.0, writers=2)
    rows = table_rows(report)
    assert list(rows[_demo.PLAIN].values()) == ["5", "2", "1", "5", "100.0", "12.5", "7", "2"]
    assert list(rows[_demo.RESILIENT].values()) == ["0", "0", "0", "0", "0.0", "3.4", "9", "0"]
    lines = report.splitlines()
    assert len({len(line) for line in lines[1:5]}) == 1  # labels, rule and rows line up
    flat = " ".join(report.split())
    assert "plain sqlite3 with a 0.1 s timeout, as a web request would use" in flat
    assert "the same 0.1 s budget as plain" in flat
    assert "empty counts polls with nothing to show, every panel failed or returned no row" in flat
    assert "rows whose enrich_count (incremented by every enrichment) is above 1" in flat
    assert "plain sqlite3: 100 rows ingested, 40 enriched by 45 enrichments" in flat
    assert "lock_stats: 4 waits (0.01 s in all), 0 retries, 0 lock errors surfaced" in flat
