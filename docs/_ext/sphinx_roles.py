"""Griffe extension: the library's docstrings, written with Sphinx roles, as mkdocstrings Markdown
(and a dataclass field's ``default_factory=lambda: VALUE`` shown as the default ``VALUE``).

The docstrings name other objects the way Sphinx does (``:func:`connect```,
``:class:`~sqlite_resilient.ResilientConnection```, ``:meth:`cursor```) and introduce literal
blocks with ``::``. Before mkdocstrings renders them, this extension rewrites each role:

- a name of the package, resolved in the scope of the documented object as Python would (its
  members, then its parents', then its module's imports), becomes a cross-reference
  ``[`connect()`][sqlite_resilient._connection.connect]``; mkdocs-autorefs resolves it to
  where the object is documented, and ``mkdocs build --strict`` fails when it cannot;
- a name of the package that no page shows (a private helper) becomes plain code;
- a name of the standard library becomes a link to its entry in the Python documentation,
  and any other outside name (``wrapt.BaseObjectProxy``) plain code.

A name that resolves nowhere is kept as a cross-reference to itself, so that a misspelt
role fails the build instead of vanishing.
"""

from __future__ import annotations

import builtins
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?P<role>mod|func|class|meth|attr|data|exc|obj):`(?P<target>[^`\n]+)`")
LITERAL_BLOCK_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)  # "catches::" -> "catches:"
CALLABLE_ROLES = frozenset({"func", "meth"})
PYTHON_DOCS = "https://docs.python.org/3/library/"
STDLIB_MODULES = frozenset(getattr(sys, "stdlib_module_names", ()))
PAGES = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^::: (\S+)$", re.MULTILINE)
EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")


def _is_external_module(name: str) -> bool:
    """Whether *name* is an importable top-level module outside the package."""
    if name in STDLIB_MODULES:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _lookup(package: griffe.Module, path: str) -> griffe.Object | griffe.Alias | None:
    """The object of the package at dotted *path* (``sqlite_resilient.x.y``), or ``None``."""
    if path == package.path:
        return package
    try:
        return package[path[len(package.path) + 1 :]]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _documented(package: griffe.Module) -> frozenset[str]:
    """The canonical paths of what the pages show: each object of a ``::: identifier`` line of
    the package, the ``__all__`` names of a module shown so, and their public members that
    have a docstring."""
    paths: set[str] = set()

    def visit(obj: griffe.Object | griffe.Alias, *, root: bool = False) -> None:
        try:
            path = obj.canonical_path
            if not root and obj.docstring is None:  # not shown: show_if_no_docstring is off
                return
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return
        if path in paths or not path.startswith(f"{package.path}."):
            return
        paths.add(path)
        if obj.is_module:
            for name in obj.exports or ():
                visit(obj[str(name)])
        elif obj.is_class:
            for member in obj.members.values():
                if member.is_public:
                    visit(member)

    for page in PAGES.glob("*.md"):
        for identifier in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found = _lookup(package, identifier)
            if found is not None:
                visit(found, root=True)
    return frozenset(paths)


def _show_factory_values(function: griffe.Function) -> None:
    """A parameter whose default is made by ``lambda: VALUE`` (a dataclass field's
    ``default_factory``) shows ``VALUE`` as its default, not ``(lambda: VALUE)()``."""
    for parameter in function.parameters:
        default = parameter.default
        if (
            isinstance(default, griffe.ExprCall)
            and not default.arguments
            and isinstance(default.function, griffe.ExprLambda)
            and not default.function.parameters
        ):
            parameter.default = default.function.body


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles and ``::`` markers of every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Run once the whole package is loaded, so that every name can be resolved."""
        self._rewrite(pkg, pkg, _documented(pkg))

    def _rewrite(self, obj: griffe.Object, package: griffe.Module, documented: frozenset[str]) -> None:
        if isinstance(obj, griffe.Function):
            _show_factory_values(obj)
        if obj.docstring is not None:
            text = ROLE.sub(lambda match: self._markdown(match, obj, package, documented), obj.docstring.value)
            obj.docstring.value = LITERAL_BLOCK_MARKER.sub(":", text)
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member, package, documented)  # type: ignore[arg-type]

    def _markdown(
        self, match: re.Match[str], obj: griffe.Object, package: griffe.Module, documented: frozenset[str]
    ) -> str:
        role, written = match["role"], match["target"]
        explicit = EXPLICIT_TITLE.match(written)
        if explicit:  # :class:`title <target>`
            title, target = explicit["title"], explicit["target"].lstrip("~.")
        else:
            target = written.lstrip("~.")
            title = target.rsplit(".", 1)[-1] if written.startswith("~") else target
            if role in CALLABLE_ROLES:
                title += "()"
        code = f"`{title}`"
        head, _, rest = target.partition(".")
        try:
            base, imported = obj.resolve(head), True
        except griffe.NameResolutionError:
            base, imported = head, False
        path = f"{base}.{rest}" if rest else base
        if path == package.path or path.startswith(f"{package.path}."):
            found = _lookup(package, path)
            if found is None:
                return f"[{code}][{path}]"  # unresolved: let autorefs report it
            if found.canonical_path not in documented:
                return code  # an internal helper: it has no entry to link to
            return f"[{code}][{found.canonical_path}]"
        return _outside(path, role, code, imported=imported)


def _outside(path: str, role: str, code: str, *, imported: bool) -> str:
    """The Markdown for *path*, a name outside the package, shown as *code*; *imported*: the
    documented module imports it (so it exists, installed here or not)."""
    top = path.split(".", 1)[0]
    value = getattr(builtins, path, None)
    if isinstance(value, type) and issubclass(value, BaseException):
        return f"[{code}]({PYTHON_DOCS}exceptions.html#{path})"
    if top in STDLIB_MODULES:
        page, anchor = (path, "") if role == "mod" else (top, f"#{path}")
        return f"[{code}]({PYTHON_DOCS}{page}.html{anchor})"
    if imported or value is not None or _is_external_module(top):
        return code
    return f"[{code}][{path}]"  # resolved nowhere: let autorefs report it
