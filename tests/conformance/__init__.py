"""CPython's own sqlite3 tests run through the library (see ``tests/test_conformance.py``)."""
