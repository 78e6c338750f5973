"""The test suite on every CPython this machine has (missing interpreters are skipped)."""

from __future__ import annotations

import nox

nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["tests"]

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the project with its test extra and run pytest (the packaging test and the
    tests marked ``once``, which do not depend on the interpreter, run in ``make test``)."""
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not packaging and not once",
        *session.posargs,
        success_codes=[0],
    )
