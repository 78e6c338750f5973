"""Drop-in conformance: CPython's own ``sqlite3`` tests, run through the library.

The running interpreter's ``test.test_sqlite3`` runs twice, side by side, in fresh
interpreters: as it is, and with ``sqlite3.connect`` replaced by
``sqlite_resilient.connect`` before any test module is imported (``conformance/
sitecustomize.py``, also in the child interpreters the tests start). Every test that passes
as it is must pass through the library, but for the intended differences of
``conformance/differences.py``, each a decision with its reason, which the README's
section "What changes when you swap the import" lists line for line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conformance.differences import DIFFERENCES

CONFORMANCE = Path(__file__).with_name("conformance")
README = Path(__file__).parent.parent / "README.md"
RUN_TIMEOUT = 600.0
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def has_sqlite3_tests() -> bool:
    """Whether this interpreter was installed with its test suite (pyenv's are; some
    distributions leave it out)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import test.support"], capture_output=True, timeout=RUN_TIMEOUT, check=False
    )
    return probe.returncode == 0


def short_name(test_id: str) -> str:
    """``Class.test_name`` of a test id (3.9's ``CheckName`` methods spelled ``test_name``)."""
    cls, method = test_id.split(".")[-2:]
    if method.startswith("Check"):
        method = "test_" + re.sub(r"(?<!^)(?=[A-Z])", "_", method[len("Check") :]).lower()
    return f"{cls}.{method}"


def intended() -> dict[str, str]:
    """The tests each difference makes fail on this interpreter, with the difference's line."""
    listed: dict[str, str] = {}
    for difference in DIFFERENCES:
        for entry in difference.tests:
            name, _, versions = entry.partition("@")
            if not versions or VERSION in versions.split():
                listed[name.strip()] = difference.readme
    return listed


def run_suites(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The outcomes of the interpreter's sqlite3 tests as they are, and through the library."""
    runs = {}
    for kind in ("stock", "library"):
        cwd = directory / kind  # the tests write files into the current directory
        cwd.mkdir()
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if kind == "library":
            env["PYTHONPATH"] = str(CONFORMANCE)
        runs[kind] = subprocess.Popen(  # side by side: each takes a while
            [sys.executable, str(CONFORMANCE / "collect.py"), str(cwd / "outcomes.json")],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    outcomes = {}
    for kind, process in runs.items():
        _, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, f"{kind} run failed:\n{err[-3000:]}"
        outcomes[kind] = json.loads((directory / kind / "outcomes.json").read_text())["outcomes"]
    return outcomes["stock"], outcomes["library"]


@pytest.mark.skipif(not has_sqlite3_tests(), reason="this interpreter was installed without its test suite")
def test_the_interpreters_own_sqlite3_tests_pass_through_the_library(tmp_path: Path) -> None:
    """Every test of the running interpreter's ``test.test_sqlite3`` that passes with
    :mod:`sqlite3` passes through the library, but for the intended differences; and each
    test listed for a difference still fails (a listed test that passes is to be removed
    from ``conformance/differences.py``)."""
    stock, library = run_suites(tmp_path)
    assert sum(outcome == "pass" for outcome in stock.values()) > 250, "the suite ran too few tests"
    listed = intended()
    unexpected = {}
    fixed = []
    for test_id, outcome in sorted(stock.items()):
        if outcome != "pass":
            continue
        name = short_name(test_id)
        through_library = library.get(test_id, "missing")
        if through_library != "pass" and name not in listed:
            unexpected[test_id] = through_library
        elif through_library == "pass" and name in listed:
            fixed.append(name)
    assert not unexpected, f"tests failing only through the library on {VERSION}: {json.dumps(unexpected, indent=1)}"
    assert not fixed, f"listed as differences but passing on {VERSION}: remove them from differences.py: {fixed}"


def test_readme_lists_every_difference() -> None:
    """The README's section "What changes when you swap the import" is the list of
    differences, line for line and in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## What changes when you swap the import", 1)[1].split("\n## ", 1)[0]
    lines = [line[2:] for line in re.sub(r"\n  +", " ", section).splitlines() if line.startswith("- ")]
    assert lines == [difference.readme for difference in DIFFERENCES]
