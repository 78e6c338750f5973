"""The ``sqlite-resilient`` command line (also ``python -m sqlite_resilient``).

Subcommands:

- ``demo``: the same application code with plain :mod:`sqlite3`, hand-rolled WAL and
  ``sqlite_resilient``, side by side under real contention (see :mod:`sqlite_resilient._demo`).
- ``doctor DB``: what a database file and its place need, read-only (see
  :mod:`sqlite_resilient._doctor`).
- ``checkpoint DB``: copy the WAL back into the database, as
  :func:`~sqlite_resilient.maintain_wal` does or in one mode.

Each subcommand is one ``_add_<name>`` function that declares its arguments and sets its
handler, a function from the parsed arguments to an exit status, listed in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
from typing import Callable

import sqlite_resilient

from . import _demo, _doctor
from ._wal import CHECKPOINT_MODES

__all__ = ["main"]

PROG = "sqlite-resilient"
MAX_WRITERS = 32
"""More writer processes than this would measure the machine, not SQLite."""
MAX_SECONDS = 3600.0

Handler = Callable[[argparse.Namespace], int]


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 and at most ``MAX_SECONDS``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"must be > 0 and <= {MAX_SECONDS:g} seconds, not {text}")
    return value


def _writer_count(text: str) -> int:
    """argparse type: a whole number of writer processes from 1 to ``MAX_WRITERS``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_WRITERS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_WRITERS}, not {value}")
    return value


def _existing_directory(text: str) -> str:
    """argparse type: a directory that exists."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not an existing directory: {text!r}")
    return text


# -- demo ------------------------------------------------------------------------------------


def _png_path(text: str) -> str:
    """argparse type: a file path whose directory exists (the file itself is overwritten)."""
    directory = os.path.dirname(text) or os.curdir
    if not text or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a file path: {text!r}")
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"no such directory: {directory!r}")
    return text


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``demo`` and its options."""
    parser = subparsers.add_parser(
        "demo",
        help="the same app code with plain sqlite3, hand-rolled WAL and sqlite_resilient, side by side",
        description=(
            "Run the same application code four ways, each on a fresh database: an ingestion job importing "
            "files in long transactions, enrichment workers that read items then write them, and a dashboard "
            "reading the same file; (1) plain sqlite3.connect() with its defaults, (2) the usual hand-rolled "
            "WAL setup, (3) sqlite_resilient with only the import changed, (4) and with db_transaction around "
            "the read-then-write. Print a table of the work done (items ingested, enriched, processed twice), "
            "the job runs that failed, and the dashboard requests served and failed and the slowest, each "
            "column saying which way is better, then what went wrong in each scenario and why."
        ),
    )
    parser.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=_demo.DEFAULT_SECONDS,
        metavar="S",
        help="how long each scenario runs (default: %(default)g)",
    )
    parser.add_argument(
        "--writers",
        type=_writer_count,
        default=_demo.DEFAULT_WRITERS,
        metavar="N",
        help="enrichment worker processes per scenario, beside the one ingestion job (default: %(default)d)",
    )
    parser.add_argument(
        "--dir",
        type=_existing_directory,
        default=None,
        metavar="DIR",
        help="where the temporary databases are made (default: the system's temporary directory)",
    )
    parser.add_argument(
        "--plot",
        type=_png_path,
        default=None,
        metavar="PATH",
        help=f"also write a PNG chart comparing the scenarios to PATH (needs matplotlib: {_demo.PLOT_EXTRA})",
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    """Run the demo; the report goes to stdout, progress to stderr.

    Returns 2, before running anything, when ``--plot`` is given but matplotlib cannot be
    imported; 1 when the demo could not run.
    """
    try:
        _demo.run_demo(args.seconds, args.writers, args.dir, plot=args.plot)
    except _demo.PlotUnavailableError as exc:
        print(f"{PROG} demo: {exc}", file=sys.stderr)
        return 2
    except _demo.DemoError as exc:
        print(f"{PROG} demo: {exc}", file=sys.stderr)
        return 1
    return 0


# -- doctor ----------------------------------------------------------------------------------


def _add_doctor(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``doctor`` and its options."""
    parser = subparsers.add_parser(
        "doctor",
        help="check a database file and its filesystem, read-only",
        description=(
            "Look at a SQLite database without changing it or creating any file (on Linux; a -wal that "
            "holds frames without its -shm gets the -shm SQLite needs to read it): the file and its header "
            "(or, when it is missing, whether connect() would create it), the filesystem and whether WAL "
            "works there, permissions, the journal mode and what connect() would use, the "
            "-wal/-shm/-journal/-writers files and their sizes, which locks other processes hold now "
            "(information: a lock is let go when its transaction ends), whether a read-only connection "
            "opens, the pragmas in the file, and PRAGMA quick_check. Exit status 1 when a check finds a "
            "problem."
        ),
    )
    parser.add_argument("database", metavar="DB", help="the database file")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    parser.set_defaults(handler=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> int:
    """Diagnose the database; 1 if a check found a problem, else 0."""
    diagnosis = _doctor.diagnose(args.database)
    if args.json:
        print(json.dumps(diagnosis.as_dict(), indent=2))
    else:
        print(_doctor.format_diagnosis(diagnosis), end="")
    return 1 if diagnosis.problems else 0


# -- checkpoint ------------------------------------------------------------------------------


def _add_checkpoint(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``checkpoint`` and its options."""
    parser = subparsers.add_parser(
        "checkpoint",
        help="copy the WAL back into the database (maintain_wal, or one checkpoint mode)",
        description=(
            "Checkpoint a WAL database: copy the frames of its -wal file back into the database file. "
            "Without --mode, as sqlite_resilient.maintain_wal(conn) does: passive, then restart and "
            "truncate while the checkpoint is not complete. Prints each checkpoint's frames and the -wal "
            "file's size before and after. The database is never created and its journal mode never "
            "changed. Exit status 1 when the checkpoint could not complete (another connection kept a "
            "read transaction open, or held the write lock, past --timeout) or the database could not be "
            "opened, with the reason on stderr."
        ),
    )
    parser.add_argument("database", metavar="DB", help="the database file")
    parser.add_argument(
        "--mode",
        choices=CHECKPOINT_MODES,
        default=None,
        help="run one checkpoint in this mode (default: passive, escalating to restart and truncate)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=_doctor.CHECKPOINT_TIMEOUT,
        metavar="S",
        help="how long a checkpoint waits for other connections (default: %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")
    parser.set_defaults(handler=_run_checkpoint)


def _run_checkpoint(args: argparse.Namespace) -> int:
    """Checkpoint the database; 1 if it could not complete or the database could not be
    opened (the reason on stderr), else 0."""
    try:
        report = _doctor.checkpoint_database(args.database, args.mode, args.timeout)
    except (OSError, sqlite3.Error) as exc:
        print(f"{PROG} checkpoint: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(_doctor.format_checkpoint(report), end="")
    if not report.complete:
        print(f"{PROG} checkpoint: {report.incomplete_reason()}", file=sys.stderr)
        return 1
    return 0


# -- the parser ------------------------------------------------------------------------------

_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_demo,
    _add_doctor,
    _add_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SQLite that survives real concurrency: WAL, validated pragmas, safe lock retries.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {sqlite_resilient.__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _exit_status(code: object) -> int:
    """The exit status :class:`SystemExit` *code* stands for."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``) and return its exit status.

    ``--help`` and ``--version`` return 0 after printing; usage errors print a message and
    return 2, as argparse does, but without leaving the interpreter, so ``main`` can be
    called from code and tests.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_status(exc.code)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
