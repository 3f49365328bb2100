"""The copy of ``ce_lib`` that the jail of one question gets: only what the question allows.

Replacing the bodies of the forbidden functions is not enough: the answer can
also be computed from other public functions, from private helpers, or by
loading the library's files by path. So the jail gets an *allow-list*: the
public functions a question allows, plus the private code they need, and
nothing else. :func:`library_for` finds that code by static analysis of
``ce_lib``'s source (no library code runs): starting from each allowed
function, it follows every name a top-level definition mentions to the
top-level definition, constant or ``from .module import name`` it refers to.
Each needed module is then written with only its needed top-level statements,
and modules with none are left out.

Names computed at run time (``getattr(module, "name")``, ``globals()``) are not
followed; ``ce_lib`` has none, and a library layout this analysis cannot prune
safely (top-level ``if``, ``from . import module``, ...) is refused with a
``RuntimeError`` rather than guessed at.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._astlock import AST_LOCK

PACKAGE = "ce_lib"

Node = tuple[str, str]
"""A top-level name of the library: (module, name), e.g. ``("functional", "softmax")``."""


@dataclass
class _Module:
    """One file of ``ce_lib``: its text and what its top-level statements bind."""

    name: str
    source: str
    tree: ast.Module
    future_annotations: bool = False
    defines: dict[str, list[ast.stmt]] = field(default_factory=dict)
    """Name -> the top-level ``def``, ``class`` or assignments that bind it."""
    imports: dict[str, Node] = field(default_factory=dict)
    """Local name -> (module, name) for each ``from .module import name [as local]``."""


def library_for(allow: Sequence[str] | None, forbid: Sequence[str]) -> dict[str, str]:
    """Files (name -> source text) of the ce_lib package the jail of one question gets.

    Parameters
    ----------
    allow : sequence of str or None
        Public names such as ``"ce_lib.softmax"`` the question allows, or None for
        the whole public library. With None and an empty ``forbid``, the real files
        are returned unchanged; with None and a non-empty ``forbid``, every public
        name is kept except the forbidden ones and those that need one of them.
    forbid : sequence of str
        Public names that must not be in the jail, not even as a dependency.

    Returns
    -------
    dict of str to str
        File name (``"__init__.py"``, ``"functional.py"``, ...) -> source text, sorted.

    Raises
    ------
    ValueError
        If an entry is not a public function or class of ce_lib, if a name is both
        allowed and forbidden, or if an allowed name needs a forbidden one.

    Notes
    -----
    The result is computed once per set of names (in any order, repeats ignored)
    under :data:`ce_grader._astlock.AST_LOCK`, so threads may call this freely;
    each call returns a new dict.
    """
    key = None if allow is None else tuple(sorted(set(allow)))
    with AST_LOCK:  # one computation at a time; parses hold the lock anyway
        return dict(_library_files(key, tuple(sorted(set(forbid)))))


@functools.cache
def _library_files(allow: tuple[str, ...] | None, forbid: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """:func:`library_for` on sorted tuples, as sorted (file name, text) pairs."""
    modules, texts = _read_library()
    public = _public_names(modules)
    banned = {_check_entry(name, public, "forbid"): name for name in forbid}
    if allow is None:
        if not forbid:
            return tuple(sorted(texts.items()))
        allowed = [name for name, node in sorted(public.items()) if not banned.keys() & _paths(modules, node)]
    else:
        for entry in allow:
            if _check_entry(entry, public, "allow") in banned:
                raise ValueError(f"{entry} is both allowed and forbidden in this question; remove one")
        allowed = [entry.removeprefix(PACKAGE + ".") for entry in allow]
        for name in allowed:
            _refuse_forbidden(modules, name, public[name], banned)
    needed: set[Node] = set()
    for name in allowed:
        needed |= _paths(modules, public[name]).keys()
    files = {}
    for module in sorted({module for module, _ in needed}):
        files[module + ".py"] = _write_module(modules[module], {n for m, n in needed if m == module})
    init = _write_init(modules["__init__"], {name: public[name] for name in allowed}, sorted(files))
    files["__init__.py"] = init
    return tuple(sorted(files.items()))


@functools.cache
def _read_library() -> tuple[dict[str, _Module], dict[str, str]]:
    """Parse every ``.py`` file of the installed ce_lib, once (later edits on disk do not count)."""
    root = Path(importlib.import_module(PACKAGE).__file__).parent
    texts = {path.name: path.read_text(encoding="utf-8") for path in sorted(root.glob("*.py"))}
    modules = {}
    for filename, source in texts.items():
        with AST_LOCK:
            tree = ast.parse(source, filename=f"{PACKAGE}/{filename}")
        modules[filename.removesuffix(".py")] = _index(_Module(filename.removesuffix(".py"), source, tree))
    return modules, texts


def _index(module: _Module) -> _Module:
    """Record what each top-level statement binds; refuse statements that cannot be pruned safely."""
    where = f"{PACKAGE}/{module.name}.py"
    for i, stmt in enumerate(module.tree.body):
        line = f"{where} line {stmt.lineno}"
        if i + 1 < len(module.tree.body) and module.tree.body[i + 1].lineno <= stmt.end_lineno:
            raise RuntimeError(f"{line}: two statements on one line; jail_library cannot separate them")
        if isinstance(stmt, ast.ImportFrom) and stmt.level:
            if stmt.level != 1 or stmt.module is None:
                raise RuntimeError(
                    f"{line}: jail_library only follows imports of the form 'from .module import'"
                )
            for alias in stmt.names:
                module.imports[alias.asname or alias.name] = (stmt.module, alias.name)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            imported = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module]
            if any(name.split(".")[0] == PACKAGE for name in imported):
                raise RuntimeError(f"{line}: an absolute import of {PACKAGE}; use 'from .module import'")
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                module.future_annotations |= any(alias.name == "annotations" for alias in stmt.names)
        elif isinstance(
            stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign
        ):
            try:
                names = _bound_names(stmt)
            except RuntimeError as exc:
                raise RuntimeError(f"{where} {exc}; jail_library cannot prune it") from None
            for name in names:
                if name in module.imports:
                    raise RuntimeError(
                        f"{line}: {name} is both imported and defined; jail_library cannot follow it"
                    )
                module.defines.setdefault(name, []).append(stmt)
        elif not (i == 0 and ast.get_docstring(module.tree) is not None):
            raise RuntimeError(
                f"{line}: a top-level {type(stmt).__name__} statement; jail_library cannot prune it"
            )
    return module


def _bound_names(stmt: ast.stmt) -> list[str]:
    """The names a top-level ``def``, ``class`` or assignment binds."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    targets = list(stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
    names = []
    while targets:
        target = targets.pop(0)
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            targets += target.elts
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        else:  # x.attr = ... or x[k] = ... changes another statement's object
            raise RuntimeError(f"line {stmt.lineno}: a top-level assignment to {ast.unparse(target)}")
    return names


def _public_names(modules: dict[str, _Module]) -> dict[str, Node]:
    """Each name ``ce_lib/__init__.py`` imports -> the top-level definition it is, re-exports followed."""
    names = [name for name in modules["__init__"].imports if not name.startswith("_")]
    return {name: _resolve(modules, ("__init__", name)) for name in names}


def _resolve(modules: dict[str, _Module], node: Node) -> Node:
    """Follow ``from .module import name`` until the module that defines the name."""
    seen = [node]
    while node[1] in modules[node[0]].imports:
        node = modules[node[0]].imports[node[1]]
        if node in seen or node[0] not in modules:
            raise RuntimeError(f"{PACKAGE}: cannot resolve {' -> '.join(map(_dotted, [*seen, node]))}")
        seen.append(node)
    if node[1] not in modules[node[0]].defines:
        raise RuntimeError(f"{PACKAGE}.{node[0]} does not define {node[1]}")
    return node


def _check_entry(entry: str, public: dict[str, Node], role: str) -> Node:
    """The definition of an ``allow``/``forbid`` entry, after checking it is a public function or class."""
    prefix, _, name = entry.rpartition(".")
    obj = getattr(importlib.import_module(PACKAGE), name, None) if prefix == PACKAGE else None
    if name not in public or not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise ValueError(
            f"{role} entry {entry!r} is not a public function or class of {PACKAGE} "
            f"(write it as {PACKAGE}.<name>, e.g. {PACKAGE}.softmax)"
        )
    return public[name]


def _references(module: _Module, stmt: ast.stmt) -> set[str]:
    """Every name a top-level statement mentions (annotations are skipped when they are never evaluated)."""
    skip: set[int] = set()
    if module.future_annotations:
        for node in ast.walk(stmt):
            if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
                skip.add(id(node.annotation))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
                skip.add(id(node.returns))
    names, stack = set(), [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
        stack += [child for child in ast.iter_child_nodes(node) if id(child) not in skip]
    return names


def _edges(modules: dict[str, _Module], node: Node) -> Iterator[Node]:
    """The top-level names one name needs directly: same-module names, or the source of an import."""
    module = modules[node[0]]
    if node[1] in module.imports:
        yield module.imports[node[1]]
        return
    for stmt in module.defines[node[1]]:
        for name in sorted(_references(module, stmt)):
            if name in module.defines or name in module.imports:
                yield (module.name, name)


def _paths(modules: dict[str, _Module], start: Node) -> dict[Node, Node | None]:
    """Breadth-first search from ``start``: each reachable name -> the name it was reached from."""
    parent: dict[Node, Node | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in _edges(modules, node):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return parent


def _refuse_forbidden(modules: dict[str, _Module], name: str, start: Node, banned: dict[Node, str]) -> None:
    """Raise the assignment error if the allowed ``name`` (defined at ``start``) needs a banned name."""
    parent = _paths(modules, start)
    for target in sorted(banned.keys() & parent.keys()):
        chain, node = [], target
        while node is not None:
            if node[1] in modules[node[0]].defines:  # the import steps only repeat the name
                chain.append(node)
            node = parent[node]
        raise ValueError(
            f"{PACKAGE}.{name} is allowed in this question but needs the forbidden {banned[target]} "
            f"(through {' -> '.join(map(_dotted, reversed(chain)))}); remove it from allow or from forbid"
        )


def _dotted(node: Node) -> str:
    """``ce_lib.module.name``, the way an instructor would look the name up."""
    return f"{PACKAGE}.{node[1]}" if node[0] == "__init__" else f"{PACKAGE}.{node[0]}.{node[1]}"


def _segment(module: _Module, stmt: ast.stmt) -> str:
    """The source lines of a statement with its decorators and the comment lines right above it."""
    lines = module.source.splitlines()
    start = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])]) - 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return "\n".join(lines[start : stmt.end_lineno])


def _write_module(module: _Module, keep: set[str]) -> str:
    """The module with only the top-level statements that bind a name in ``keep``.

    The docstring and the imports stay (relative imports only with the needed
    names), with the blank lines they had; ``__all__`` lists the kept public names.
    """
    head, body, last = [], [], None
    exported = {e.value for stmt in module.defines.get("__all__", []) for e in ast.walk(stmt) if _is_str(e)}
    for i, stmt in enumerate(module.tree.body):
        text = None
        if i == 0 and ast.get_docstring(module.tree) is not None:
            text = _segment(module, stmt)
        elif isinstance(stmt, ast.ImportFrom) and stmt.level:
            aliases = [a for a in stmt.names if (a.asname or a.name) in keep]
            if aliases:
                text = _listing(f"from .{stmt.module} import ", [ast.unparse(a) for a in aliases], "()")
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            text = _segment(module, stmt)
        elif "__all__" in _bound_names(stmt):
            if exported & keep:
                body.append(_listing("__all__ = ", [f'"{name}"' for name in sorted(exported & keep)], "[]"))
        elif keep & set(_bound_names(stmt)):
            body.append(_segment(module, stmt))
        if text is not None:
            gap = last is not None and stmt.lineno > last.end_lineno + 1
            head.append("\n" + text if gap else text)
            last = stmt
    return "\n\n\n".join(["\n".join(head), *body]) + "\n"


def _write_init(init: _Module, allowed: dict[str, Node], files: list[str]) -> str:
    """A package ``__init__`` that imports exactly the allowed names, and shows nothing else.

    Importing a submodule binds it as an attribute of the package, so the modules
    among ``files`` that are not also an allowed name are deleted from it again.
    """
    parts = [_segment(init, init.tree.body[0])] if ast.get_docstring(init.tree) is not None else []
    by_module: dict[str, list[str]] = {}
    for public, (module, name) in sorted(allowed.items(), key=lambda item: item[1]):
        by_module.setdefault(module, []).append(name if name == public else f"{name} as {public}")
    if by_module:
        parts.append("\n".join(_listing(f"from .{m} import ", n, "()") for m, n in sorted(by_module.items())))
    for name, stmts in sorted(init.defines.items()):
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            parts += [_segment(init, stmt) for stmt in stmts]
    parts.append(_listing("__all__ = ", [f'"{name}"' for name in sorted(allowed)], "[]"))
    hidden = sorted({name.removesuffix(".py") for name in files} - {"__init__"} - set(allowed))
    if hidden:
        parts.append(
            "# Importing the names above bound their modules as attributes of the package; they stay\n"
            "# importable, but dir(ce_lib) lists only the names this question allows.\n"
            + _listing("del ", hidden, "()")
        )
    return "\n\n".join(parts) + "\n"


def _listing(prefix: str, items: list[str], brackets: str) -> str:
    """``prefix`` and the items on one line, or one item a line inside ``brackets`` if too long."""
    line = prefix + (", ".join(items) if brackets == "()" else f"[{', '.join(items)}]")
    if len(line) <= 100:
        return line
    return prefix + brackets[0] + "".join(f"\n    {item}," for item in items) + "\n" + brackets[1]


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)
