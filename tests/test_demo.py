"""Tests of ``sqlite-resilient demo`` (:mod:`sqlite_resilient._demo`): a short run in a real
subprocess with real job processes, the mechanism behind the plain scenario's failures, the
audit, the report, the progress display and the plot."""

from __future__ import annotations

import io
import sqlite3
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_module

from sqlite_resilient import _demo
from sqlite_resilient.cli import main

SUBPROCESS_TIMEOUT = 90
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["ingested", "enriched", "twice", "runs failed", "served", "requests failed", "slowest ms"]
"""The demo table's columns after the scenario name, as the tests name them."""
LOCKED = "OperationalError: database is locked"
MATPLOTLIB_MISSING = "matplotlib is not importable (pip install 'sqlite_resilient[bench]')"


def row_name(number: int, scenario: str) -> str:
    """How the table names *scenario*, the *number*-th (from 1)."""
    return f"{number} {scenario}"


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The cells of the demo table's scenario rows by column (see ``COLUMNS``), keyed by
    scenario name."""
    rows = {}
    for line in report.splitlines():
        for number, scenario in enumerate(_demo.SCENARIOS, 1):
            name = row_name(number, scenario)
            cells = line[len(name) :].split()
            if line.startswith(f"{name} ") and cells and all(cell.isdigit() for cell in cells):
                assert len(cells) == len(COLUMNS), line
                rows[scenario] = dict(zip(COLUMNS, cells))
    return rows


def verdict(report: str, number: int, scenario: str) -> str:
    """The lines that say what went wrong in *scenario*, joined into one."""
    lines, name = report.splitlines(), row_name(number, scenario)
    first = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(f"{name}  ") and not all(cell.isdigit() for cell in line[len(name) :].split())
    )
    verdict_lines: list[str] = []
    for line in lines[first + 1 :]:
        if verdict_lines and not line.startswith("     "):
            break
        if line.startswith("  -> ") or verdict_lines:
            verdict_lines.append(line.strip())
    return " ".join(verdict_lines).removeprefix("-> ")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of the PNG at *path* (from its IHDR chunk); fails if it is no PNG."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.timeout(120)
def test_short_demo_prints_the_table(tmp_path: Path) -> None:
    """A short demo in a real subprocess (real job processes, started with spawn; the
    dashboard's clients as threads) exits 0, prints the table with its header (group titles,
    labels, which way is better), a row per scenario and what went wrong in each, announces
    the run and each scenario on a non-terminal stderr and removes its databases. The
    library's guarantees hold: with sqlite_resilient no dashboard request and no job run
    fails, no lock error reaches the app, and with db_transaction no item is processed twice."""
    result = run_module("demo", "--seconds", "1", "--writers", "2", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    group, first, second, better = result.stdout.splitlines()[:4]
    assert "jobs: 1 ingestion, 2 enrichment workers" in group
    assert "dashboard: 3 clients" in group
    assert first.split() == ["items", "items", "processed", "runs", "requests", "requests", "slowest"]
    assert second.split() == ["scenario", "ingested", "enriched", "twice", "failed", "served", "failed", "ms"]
    assert better.split() == ["better", "if", "more", "more", "fewer", "fewer", "more", "fewer", "lower"]
    rows = table_rows(result.stdout)
    assert list(rows) == list(_demo.SCENARIOS), result.stdout
    for number, scenario in ((3, _demo.RESILIENT), (4, _demo.RESILIENT_TRANSACTION)):
        cells = rows[scenario]
        assert int(cells["served"]) > 0, result.stdout
        assert int(cells["enriched"]) > 0, result.stdout
        assert cells["requests failed"] == "0", result.stdout
        assert cells["runs failed"] == "0", result.stdout
        assert "lock errors that reached the app: 0 (" in verdict(result.stdout, number, scenario), result.stdout
    assert rows[_demo.RESILIENT_TRANSACTION]["twice"] == "0", result.stdout
    assert verdict(result.stdout, 4, _demo.RESILIENT_TRANSACTION).startswith(
        "nothing failed, and no item was processed twice"
    )
    flat = " ".join(result.stdout.split())
    assert "1 plain sqlite3 sqlite3.connect(path): the defaults, rollback journal and 5 s timeout" in flat
    assert "3 sqlite_resilient import sqlite_resilient as sqlite3, nothing else changed" in flat
    assert result.stderr.startswith("demo: the same app code (1 ingestion job, 2 enrichment workers")
    for number, scenario in enumerate(_demo.SCENARIOS, 1):
        assert f"demo: [{number}/4] {scenario}: running for 1 s\n" in result.stderr
        assert f"demo: [{number}/4] {scenario}: done, dashboard: " in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
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
    assert list(table_rows(captured.out)) == list(_demo.SCENARIOS)
    assert f"demo: plot written to {plot}\n" in captured.err
    assert png_size(plot) == (1600, 750)


def given_results() -> list[_demo.ScenarioResult]:
    """Results of every scenario, with failed requests, failed runs, items processed twice
    and lock waits, as a run could give."""
    locked = _demo.Request(0.1, 5012.0, LOCKED)
    plain = _demo.ScenarioResult(
        _demo.PLAIN,
        _demo.DashboardStats([_demo.Request(0.0, 2.0), locked, locked, _demo.Request(5.2, 1100.0)]),
        _demo.JobStats(runs=1),
        _demo.JobStats(runs=20, failed=2, errors=Counter({LOCKED: 2})),
        _demo.Audit(ingested=400, enriched=240, enrichments=380, processed_twice=140, files=1),
    )
    wal = _demo.ScenarioResult(
        _demo.HANDROLLED_WAL,
        _demo.DashboardStats([_demo.Request(0.0, 4.0)] * 5),
        _demo.JobStats(runs=1),
        _demo.JobStats(runs=40),
        _demo.Audit(ingested=400, enriched=240, enrichments=420, processed_twice=180, files=1),
    )
    resilient = _demo.ScenarioResult(
        _demo.RESILIENT,
        _demo.DashboardStats([_demo.Request(0.0, 3.0)] * 5),
        _demo.JobStats(runs=1, lock_waits=1, longest_wait_ms=20.0),
        _demo.JobStats(runs=40, lock_waits=4, longest_wait_ms=6150.0),
        _demo.Audit(ingested=400, enriched=250, enrichments=430, processed_twice=180, files=1),
    )
    transaction = _demo.ScenarioResult(
        _demo.RESILIENT_TRANSACTION,
        _demo.DashboardStats([_demo.Request(0.0, 6.4)] * 4),
        _demo.JobStats(runs=1),
        _demo.JobStats(runs=23, lock_waits=31, longest_wait_ms=6200.0, retries=2),
        _demo.Audit(ingested=400, enriched=230, enrichments=230, processed_twice=0, files=1),
    )
    return [plain, wal, resilient, transaction]


def test_report_shows_the_work_done_and_what_went_wrong() -> None:
    """The report of given results has one aligned row per scenario with its numbers, says
    what each scenario changes in the code and what went wrong in it, refers to the reasons
    it explains once, and says so when the library's scenario did less of some work."""
    report = _demo.format_report(given_results(), seconds=7.5, writers=2)
    rows = table_rows(report)
    assert list(rows[_demo.PLAIN].values()) == ["400", "240", "140", "2", "2", "2", "5012"]
    assert list(rows[_demo.HANDROLLED_WAL].values()) == ["400", "240", "180", "0", "5", "0", "4"]
    assert list(rows[_demo.RESILIENT].values()) == ["400", "250", "180", "0", "5", "0", "3"]
    assert list(rows[_demo.RESILIENT_TRANSACTION].values()) == ["400", "230", "0", "0", "4", "0", "6"]
    lines = report.splitlines()
    assert len({len(line) for line in lines[2:9]}) == 1  # labels, direction, rule and rows line up
    assert verdict(report, 1, _demo.PLAIN) == (
        f"the dashboard failed 2 times ({LOCKED} x2, after waiting up to 5.0 s) [a]; 2 job runs failed "
        f"({LOCKED} x2) [a]; 140 items were processed twice [b]."
    )
    assert verdict(report, 2, _demo.HANDROLLED_WAL) == "180 items were processed twice [b]."
    assert verdict(report, 3, _demo.RESILIENT) == (
        "180 items were processed twice [b]; lock errors that reached the app: 0 (lock_stats: 5 waits, the longest "
        "6.2 s, behind a file import; 0 retries)."
    )
    assert verdict(report, 4, _demo.RESILIENT_TRANSACTION).startswith(
        "nothing failed, and no item was processed twice; fewer items enriched than the best (250): a worker keeps "
        "the write lock during its work"
    )
    flat = " ".join(report.split())
    assert "[a] A file (2.5 MB) is larger than SQLite's default page cache (2 MB)" in flat
    assert "[b] Python begins the transaction at the enrichment's first UPDATE, not at its SELECT" in flat
    assert "How: the same app code in every scenario, 7.5 s each" in flat


def test_report_without_problems_explains_nothing() -> None:
    """When no scenario had a problem, the report says so and refers to no reason."""
    results = [
        _demo.ScenarioResult(name, _demo.DashboardStats([_demo.Request(0.0, 1.0)]), audit=_demo.Audit(enriched=10))
        for name in _demo.SCENARIOS
    ]
    report = _demo.format_report(results, seconds=1.0, writers=1)
    assert "[a]" not in report
    assert "[b]" not in report
    assert "jobs: 1 ingestion, 1 enrichment worker " in report.splitlines()[0] + " "
    for number, scenario in enumerate(_demo.SCENARIOS, 1):
        assert verdict(report, number, scenario).startswith("nothing failed, and no item was processed twice")


def test_a_file_import_locks_plain_readers_out_until_commit(tmp_path: Path) -> None:
    """The mechanism behind the plain scenario's failures, deterministic: one file written in
    the import's transaction is larger than SQLite's default page cache, so with the rollback
    journal a reader is locked out until the transaction ends; with WAL (hand-rolled or the
    library's) it reads meanwhile."""
    for number, scenario in enumerate(_demo.SCENARIOS[:3]):
        path = str(tmp_path / f"{number}.db")
        _demo.create_database(scenario, path)
        writer = _demo._CONNECT[scenario](path)
        reader = sqlite3.connect(path, timeout=0)
        try:
            (cache_size,) = writer.execute("PRAGMA cache_size").fetchone()
            (page_size,) = writer.execute("PRAGMA page_size").fetchone()
            cache_bytes = -cache_size * 1024 if cache_size < 0 else cache_size * page_size
            if scenario == _demo.PLAIN and cache_bytes >= _demo.FILE_BYTES:
                pytest.skip(f"this SQLite's default page cache ({cache_bytes} bytes) holds a whole file")
            writer.execute(_demo._INSERT_FILE, ("file", bytes(_demo.FILE_BYTES)))
            assert writer.in_transaction
            if scenario == _demo.PLAIN:
                with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                    _demo.dashboard_request(reader)
            else:
                assert _demo.dashboard_request(reader) > 0
            writer.rollback()
            assert _demo.dashboard_request(reader) > 0
        finally:
            reader.close()
            writer.close()


def test_audit_counts_items_processed_more_than_once(tmp_path: Path) -> None:
    """The audit counts exactly the items whose enrichment ran more than once, from
    ``enrich_count``, which every enrichment increments (the UPDATE has no guard), and the
    items and files ingested apart from the backlog."""
    path = tmp_path / "items.db"
    _demo.create_database(_demo.RESILIENT, str(path))
    conn = sqlite3.connect(path)
    try:
        rows = ["records", "of", "a", "file"]
        _demo.import_file(conn, "file-1", b"raw", iter([("file-1", 1.0, row) for row in rows]))
        for item_id in (1, 2, 2, 3, 3, 3):
            conn.execute(_demo._UPDATE_ENRICHED, (1.0, item_id))
        conn.commit()
    finally:
        conn.close()
    assert _demo.audit(str(path)) == _demo.Audit(ingested=4, enriched=3, enrichments=6, processed_twice=2, files=1)


def test_dashboard_stats_count_requests() -> None:
    """Served and failed requests, the slowest (failed ones included) and the errors."""
    stats = _demo.DashboardStats([_demo.Request(0.0, 3.0), _demo.Request(0.1, 5001.0, LOCKED), _demo.Request(5.2, 9.0)])
    assert (stats.served, stats.failed, stats.slowest_ms) == (2, 1, 5001.0)
    assert stats.errors == Counter({LOCKED: 1})
    assert _demo.DashboardStats().slowest_ms == 0.0


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_per_scenario() -> None:
    """On a terminal the progress bar is one line per scenario, redrawn in place with the
    dashboard's requests served, failed and waiting; elsewhere one line at the start and the
    end of each scenario."""
    terminal = Terminal()
    progress = _demo.Progress(terminal, scenarios=4)
    progress.begin(1, _demo.PLAIN, 2.0)
    progress.update(1.0, _demo.DashboardStats([_demo.Request(0.0, 1.0), _demo.Request(0.0, 1.0, LOCKED)]))
    progress.end(_demo.DashboardStats())
    text = terminal.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert "\r[1/4] plain sqlite3" in text
    assert "1.0/2 s  dashboard: 1 served, 1 failed, 0 waiting" in text
    assert "2.0/2 s" in text
    log = io.StringIO()
    progress = _demo.Progress(log, scenarios=4)
    progress.begin(2, _demo.HANDROLLED_WAL, 2.0)
    progress.update(1.0, _demo.DashboardStats())
    progress.end(_demo.DashboardStats([_demo.Request(0.0, 1.0)]))
    assert log.getvalue() == (
        "demo: [2/4] hand-rolled WAL: running for 2 s\n"
        "demo: [2/4] hand-rolled WAL: done, dashboard: 1 served, 0 failed\n"
    )


def test_plot_of_given_results(tmp_path: Path) -> None:
    """The chart of given results, failed requests and bars of 0 among them, is a PNG."""
    pytest.importorskip("matplotlib", reason=MATPLOTLIB_MISSING)
    plot = tmp_path / "given.png"
    _demo.write_plot(given_results(), str(plot))
    assert png_size(plot) == (1600, 750)


@pytest.mark.timeout(60)
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
    assert "demo: the same app code" not in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_error_key_drops_the_numbers() -> None:
    """Errors that differ only in their numbers have one key."""
    error = sqlite3.OperationalError("database is locked: execute gave up after 3 attempts over 5.0 s")
    assert _demo.error_key(error) == LOCKED
