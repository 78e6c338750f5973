"""Tests of the documentation sources (``docs/``): the API reference shows the whole public
surface, and the command-line page every subcommand. ``make docs`` builds them, strictly;
these checks need no MkDocs and run with the suite."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sqlite3
import sys
from pathlib import Path

import pytest

import sqlite_resilient
from sqlite_resilient import cli

DOCS = Path(__file__).parent.parent / "docs"
DIRECTIVE = re.compile(r"^::: (\S+)$", re.MULTILINE)
HELP_MARKER = re.compile(r"^<!-- help: sqlite-resilient ?(?P<args>[^>]*?) -->$", re.MULTILINE)

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="the documentation sources are not in this tree (an sdist)")


def documented_identifiers() -> list[str]:
    """The identifiers of every ``::: identifier`` line of the pages. (Never one of
    ``sqlite_resilient.django.base``: importing it here would import Django's SQLite backend,
    whose adapters and converters then hold for every other test of this process.)"""
    return [name for page in sorted(DOCS.glob("*.md")) for name in DIRECTIVE.findall(page.read_text(encoding="utf-8"))]


def resolve(identifier: str) -> object:
    """The object a dotted identifier of the package names, or ``None`` when its module needs
    an optional dependency that is not installed (``aio`` without aiosqlite)."""
    try:
        return importlib.import_module(identifier)
    except ModuleNotFoundError as error:
        if error.name != identifier:
            if error.name and not error.name.startswith("sqlite_resilient"):
                return None
            raise
    module, _, name = identifier.rpartition(".")
    parent = resolve(module)
    return None if parent is None else getattr(parent, name)


def documented_objects() -> list[object]:
    """The objects the pages show: those of the ``:::`` lines and, for a module, its ``__all__``."""
    shown = []
    for identifier in documented_identifiers():
        obj = resolve(identifier)
        shown.append(obj)
        if isinstance(obj, type(sqlite3)):
            shown.extend(getattr(obj, name) for name in getattr(obj, "__all__", []))
    return shown


def test_every_public_name_is_documented() -> None:
    """Each name of ``sqlite_resilient.__all__`` but those of :mod:`sqlite3` (the same
    objects, documented by Python) is shown on a page, under its own name or as a member of
    a documented module (``LockStats`` under ``instrumentation``)."""
    shown = documented_objects()
    own = sorted(set(sqlite_resilient.__all__) - set(dir(sqlite3)))
    missing = [name for name in own if not any(getattr(sqlite_resilient, name) is obj for obj in shown)]
    assert not missing, f"add '::: sqlite_resilient.NAME' to docs/api.md for: {missing}"


def test_every_identifier_exists() -> None:
    """Each ``:::`` line names an object that exists (``make docs`` fails too, later), and
    none of them imports Django's SQLite backend into this process (see
    :func:`documented_identifiers`)."""
    for identifier in documented_identifiers():
        resolve(identifier)
    assert "django.db.backends.sqlite3.base" not in sys.modules


def test_every_public_submodule_has_a_page() -> None:
    """A public submodule (``exporters``, ``instrumentation``, ...) is shown by a ``:::``
    line; the command line, ``cli``, has its own page of help texts instead."""
    identifiers = set(documented_identifiers())
    public = sorted(
        info.name for info in pkgutil.iter_modules(sqlite_resilient.__path__) if not info.name.startswith("_")
    )
    missing = [name for name in public if name != "cli" and f"sqlite_resilient.{name}" not in identifiers]
    assert not missing, f"show these modules in docs/ (a page listed in mkdocs.yml's nav): {missing}"


def test_the_command_line_page_shows_every_subcommand() -> None:
    """``docs/cli.md`` has a help marker for the program and for each of its subcommands,
    so that a new subcommand cannot be left out of the page."""
    (subcommands,) = [
        action for action in cli.build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    markers = {match["args"] for match in HELP_MARKER.finditer((DOCS / "cli.md").read_text(encoding="utf-8"))}
    assert markers == {"", *subcommands.choices}
