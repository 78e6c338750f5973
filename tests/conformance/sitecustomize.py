"""Put on ``PYTHONPATH`` by ``tests/test_conformance.py`` for the run through the library:
Python imports it at start-up, before any test module, in the interpreter that runs CPython's
``test.test_sqlite3`` and in the child interpreters its tests start."""

import sqlite3
import sqlite3.dbapi2

import sqlite_resilient

sqlite3.connect = sqlite_resilient.connect  # type: ignore[assignment]
sqlite3.dbapi2.connect = sqlite_resilient.connect  # type: ignore[assignment]
