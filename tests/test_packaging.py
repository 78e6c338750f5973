"""The distribution: an sdist and a wheel build, and the wheel installed into a fresh
virtual environment runs: ``python -m sqlite_resilient --help``, ``--version`` from the
installed metadata, a short ``demo`` and a ``doctor``.

Slow (a build and an install from the package index), so marked ``packaging`` and run
once, by ``make test``, not on every interpreter of ``nox``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import sqlite_resilient

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs the build package (extra dev)"),
    pytest.mark.timeout(600),
]

ROOT = Path(__file__).parent.parent


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    """``python -m build`` makes an sdist and, from it, a wheel holding every module,
    ``py.typed`` and the LICENSE (both do); installed into a new venv, the command line answers ``--help`` and
    ``--version`` (the metadata's version), and runs a short demo and a doctor."""
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"sqlite_resilient/{path.name}" for path in (ROOT / "sqlite_resilient").glob("*.py")}
    assert modules | {"sqlite_resilient/py.typed"} <= names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), sorted(names)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/LICENSE") for name in archive.getnames())

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    assert "doctor" in run(python, "-m", "sqlite_resilient", "--help")
    version = run(venv / "bin" / "sqlite-resilient", "--version")
    assert version.split() == ["sqlite-resilient", sqlite_resilient.__version__]
    report = run(venv / "bin" / "sqlite-resilient", "demo", "--seconds", "0.5", "--writers", "1", cwd=tmp_path)
    assert "sqlite_resilient" in report
    database = tmp_path / "app.db"
    run(python, "-c", f"import sqlite_resilient; sqlite_resilient.connect({str(database)!r}).close()")
    assert "quick_check" in run(venv / "bin" / "sqlite-resilient", "doctor", database)
