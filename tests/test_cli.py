"""Tests of the ``sqlite-resilient`` command line: ``python -m sqlite_resilient`` and ``cli.main``
(the demo's own tests are in ``test_demo.py``)."""

from __future__ import annotations

import pytest
from conftest import run_module

import sqlite_resilient
from sqlite_resilient.cli import main


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
    assert "enrichment worker processes" in " ".join(out.split())
    assert "--plot" in out
    assert "pip install 'sqlite_resilient[bench]'" in " ".join(out.split())
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"sqlite-resilient {sqlite_resilient.__version__}\n"
