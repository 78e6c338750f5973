"""Run the interpreter's own ``sqlite3`` tests and write each test's outcome as JSON.

    python tests/conformance/collect.py OUTPUT.json

The tests are ``test.test_sqlite3`` (Python 3.11+) or ``test.test_sqlite`` (3.9, 3.10, whose
tests live in ``sqlite3.test``). Outcomes: ``pass``, ``skip``, ``xfail``, ``xpass``, or
``fail: ...``/``error: ...`` with the last line of the traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
import unittest
from types import TracebackType
from typing import Union

ExcInfo = Union[tuple[type[BaseException], BaseException, TracebackType], tuple[None, None, None]]


def suite_module() -> str:
    """The name of the interpreter's sqlite3 test package or module."""
    for name in ("test.test_sqlite3", "test.test_sqlite"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    raise SystemExit("this interpreter has no sqlite3 tests (test.test_sqlite3)")


class Outcomes(unittest.TestResult):
    """Each test's outcome, by test id."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, str] = {}

    def _last_line(self, err: ExcInfo, test: unittest.TestCase) -> str:
        text: str = self._exc_info_to_string(err, test)  # type: ignore[attr-defined]  # unittest's own
        return text.strip().splitlines()[-1][:300]

    def addSuccess(self, test: unittest.TestCase) -> None:
        self.outcomes.setdefault(test.id(), "pass")

    def addFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        self.outcomes[test.id()] = "fail: " + self._last_line(err, test)

    def addError(self, test: unittest.TestCase, err: ExcInfo) -> None:
        self.outcomes[test.id()] = "error: " + self._last_line(err, test)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        self.outcomes[test.id()] = "xfail"

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self.outcomes[test.id()] = "xpass"

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None) -> None:
        if err is not None and err[0] is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self.outcomes[test.id()] = f"{kind} (subtest): {self._last_line(err, test)}"


def main() -> int:
    name = suite_module()
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = Outcomes()
    suite.run(result)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump({"module": name, "outcomes": result.outcomes}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
