"""``python -m sqlite_resilient``: the ``sqlite-resilient`` command line."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
