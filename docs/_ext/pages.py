"""MkDocs hooks: pages whose text comes from the project itself, so that it cannot go stale.

- ``guide.md`` is the README, read at build time (its links into the source tree, which the
  site does not contain, keep their text only; those to ``benchmarks/README.md`` lead to
  the benchmarks page).
- ``benchmarks.md`` is ``benchmarks/README.md``, with its plots.
- A line ``<!-- help: sqlite-resilient ARGS -->`` in a page becomes the output of
  ``sqlite-resilient ARGS --help``, produced by the installed command line at 80 columns.
- A line ``<!-- pragmas -->`` becomes the table of the pragmas the library can set, from
  ``sqlite_resilient.PRAGMAS`` and ``DEFAULT_PRAGMAS``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

import sqlite_resilient
from sqlite_resilient import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUIDE = "guide.md"
BENCHMARKS = ROOT / "benchmarks"
BENCHMARKS_PAGE = "benchmarks.md"
BENCHMARKS_LINK = re.compile(r"\]\(benchmarks/README\.md(?P<anchor>#[^)]*)?\)")
HELP_MARKER = re.compile(r"^<!-- help: (?P<command>[^>]*?) -->$", re.MULTILINE)
RELATIVE_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?!https?:|mailto:|#|plots/)[^)]+\)")
HELP_COLUMNS = "80"
PRAGMAS_MARKER = re.compile(r"^<!-- pragmas -->$", re.MULTILINE)
INT64 = (-(2**63), 2**63 - 1)


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Add the README to the site as the guide, and the benchmarks' README with its plots."""
    files.append(File.generated(config, GUIDE, abs_src_path=str(README)))
    files.append(File.generated(config, BENCHMARKS_PAGE, abs_src_path=str(BENCHMARKS / "README.md")))
    for plot in sorted((BENCHMARKS / "plots").glob("*.png")):
        files.append(File.generated(config, f"plots/{plot.name}", abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Fill in the help markers of a page; unlink the links of the pages made from the
    project's READMEs into the source tree, but those from one to the other."""
    if page.file.src_uri in (GUIDE, BENCHMARKS_PAGE):
        markdown = BENCHMARKS_LINK.sub(lambda match: f"]({BENCHMARKS_PAGE}{match['anchor'] or ''})", markdown)
        markdown = RELATIVE_LINK.sub(lambda match: match[0] if BENCHMARKS_PAGE in match[0] else match["text"], markdown)
    markdown = PRAGMAS_MARKER.sub(lambda _: _pragma_table(), markdown)
    return HELP_MARKER.sub(lambda match: _help(match["command"]), markdown)


def _help(command: str) -> str:
    """The ``--help`` output of *command* (``sqlite-resilient ...``) as a fenced text block."""
    program, *args = shlex.split(command)
    if program != cli.PROG:
        raise PluginError(f"help marker for {command!r}: only {cli.PROG} commands can be shown")
    output = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal's width
    try:
        with contextlib.redirect_stdout(output):
            status = cli.main([*args, "--help"])
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    if status != 0:
        raise PluginError(f"{command} --help exited {status}")
    return f"```text\n$ {command} --help\n{output.getvalue().rstrip()}\n```"


def _pragma_table() -> str:
    """The pragmas ``connect(pragmas=...)`` accepts, as a Markdown table."""
    rows = [
        "| Pragma | Values | Default | |",
        "| --- | --- | --- | --- |",
    ]
    for name, pragma in sorted(sqlite_resilient.PRAGMAS.items()):
        summary, _, link = pragma.doc.rpartition(" ")
        if pragma.kind == "bool":
            values = "`True`, `False`"
        elif pragma.kind == "int":
            low, high = pragma.bounds
            values = "integer" if pragma.bounds == INT64 else f"integer, {low} to {high}"
        else:
            values = ", ".join(f"`{choice}`" for choice in pragma.choices)
        if name == "busy_timeout":
            default = "from `timeout`"
        elif name in sqlite_resilient.DEFAULT_PRAGMAS:
            default = f"`{sqlite_resilient.DEFAULT_PRAGMAS[name]!r}`"
        else:
            default = "SQLite's"
        if not pragma.per_connection:
            summary += " Not set on read-only connections."
        rows.append(f"| [`{name}`]({link}) | {values} | {default} | {summary} |")
    return "\n".join(rows)
