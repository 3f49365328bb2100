"""Reading a submission: notebook JSON or text, IPython syntax, the static rule.

Everything here parses untrusted bytes: notebook JSON, the YAML header of a
text notebook, IPython's input transformation, Python syntax trees. None of it
runs in the grader's own process. :func:`inspect_submission` starts
``python -I -S -B`` in a jail (with the same seccomp filter and limits as a
student's run; nothing of the student's code is executed there), sends it the
submission's bytes and gets back plain JSON: the answer cells per question and,
per question, whether its answer names a forbidden function. A crash, a
timeout or a malformed reply costs that submission its row, with a reason.

The static rule itself (:func:`find_forbidden`) is a convenience for students
(it names the forbidden function and the line); what enforces the rule is the
jail's copy of ``ce_lib``, which does not contain the forbidden functions.
"""

from __future__ import annotations

import ast
import json
import struct
from collections.abc import Iterable, Sequence

from ._astlock import parse

__all__ = ["answers_from_bytes", "find_forbidden", "transform", "uses_ipython_syntax"]

TAG_ANSWER = "answer"


def uses_ipython_syntax(source: str) -> bool:
    """Whether a cell needs IPython's input transformation (magics, shell escapes)."""
    try:
        parse(source)
        return False
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return any(line.lstrip().startswith(("%", "!")) for line in source.splitlines())


#: IPython's transformation re-reads a cell once per magic: cells beyond these sizes are left as
#: they are (and fail in the jail, as they would in Jupyter, which gives up after 500 passes).
_TRANSFORM_MAX_LINES = 2_000
_TRANSFORM_MAX_CHARS = 200_000


def transform(source: str) -> str:
    """IPython syntax (magics, ``!cmd``) to plain Python, when IPython is installed."""
    if len(source) > _TRANSFORM_MAX_CHARS or source.count("\n") > _TRANSFORM_MAX_LINES:
        return source
    if not uses_ipython_syntax(source):
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    return TransformerManager().transform_cell(source)


def _tags(cell: dict) -> set[str]:
    meta = cell.get("metadata")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


def answers_from_bytes(data: bytes, suffix: str) -> dict[str, list[str]]:
    """The answer cells of a submission, by question, from its bytes.

    Raises
    ------
    ValueError
        When the bytes are not a notebook (the message says why).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text, so it is not a notebook") from None
    if suffix == ".ipynb":  # plain JSON: only the cells are read, no schema validation to exhaust
        try:
            nb = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"it is not JSON ({exc})") from None
        if not isinstance(nb, dict) or nb.get("nbformat") != 4:
            raise ValueError("it is not a version 4 notebook")
    else:
        import jupytext

        nb = jupytext.reads(text, fmt=suffix.lstrip(".") or "md")
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise ValueError("it has no list of cells")
    answers: dict[str, list[str]] = {}
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code" or TAG_ANSWER not in _tags(cell):
            continue
        hw = cell["metadata"].get("homework")
        qid = hw.get("question") if isinstance(hw, dict) else None
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if isinstance(qid, str) and isinstance(source, str):
            answers.setdefault(qid, []).append(source)
    return answers


# --------------------------------------------------------------------------
# The static rule: an answer may not name the reference implementation
# --------------------------------------------------------------------------


def _collect_aliases(tree: ast.AST, aliases: dict[str, str]) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "ce_lib":
                    aliases[a.asname or "ce_lib"] = a.name if a.asname else "ce_lib"
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "ce_lib"
        ):
            for a in node.names:
                if a.name != "*":
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def find_forbidden(
    cells: Sequence[tuple[str, str]], setup: Iterable[str], dotted: set[str], attrs: set[str]
) -> str | None:
    """Find a reference to a forbidden ``ce_lib`` function in answer cells.

    Parameters
    ----------
    cells : sequence of (label, source)
        The answer cells (untrusted), IPython syntax already transformed.
    setup : iterable of str
        The setup cells (trusted); their imports define aliases such as ``ce``.
    dotted : set of str
        Every dotted name of the forbidden functions (``ce_lib.softmax``,
        ``ce_lib.functional.softmax``).
    attrs : set of str
        Their bare names (for ``getattr(ce, "softmax")``).

    Returns
    -------
    str or None
        A sentence naming the function and where it is used, or ``None``.
    """
    if not dotted:
        return None
    aliases: dict[str, str] = {}
    for source in setup:
        try:
            _collect_aliases(parse(transform(source)), aliases)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    trees = []
    for label, source in cells:
        try:
            tree = parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # it will fail in the jail and be reported there
        _collect_aliases(tree, aliases)
        trees.append((label, tree))

    def resolve(name: str | None) -> str | None:
        head, _, rest = (name or "").partition(".")
        if head not in aliases:
            return None
        return aliases[head] + (f".{rest}" if rest else "")

    for label, tree in trees:
        for node in ast.walk(tree):
            what = None
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                what = next(
                    (f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in dotted),
                    None,
                )
            elif isinstance(node, ast.Attribute | ast.Name) and resolve(_dotted(node)) in dotted:
                what = resolve(_dotted(node))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in attrs
                and (resolve(_dotted(node.args[0])) or "").startswith("ce_lib")
            ):
                what = f"ce_lib.{node.args[1].value}"
            if what:
                return (
                    f"uses the reference implementation {what} ({label}, line {getattr(node, 'lineno', '?')})"
                )
    return None


# --------------------------------------------------------------------------
# The worker: runs in the jail, reads a job on stdin, answers on stdout
# --------------------------------------------------------------------------


def _read_block(read) -> bytes:
    (n,) = struct.unpack("<Q", read(8))
    return read(n)


def worker(job: dict, data: bytes) -> dict:
    """What the jailed process computes: answer cells (transformed) and static verdicts per question."""
    try:
        answers = answers_from_bytes(data, job["suffix"])
    except Exception as exc:  # a hostile notebook may raise anything from any parser
        text = " ".join((str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}").split())
        return {"error": f"it is not a readable notebook: {text[:160]}"}
    answers = {q: srcs for q, srcs in answers.items() if q in job["questions"]}
    transformed = {}
    for q, srcs in answers.items():
        out = []
        for src in srcs:
            try:
                out.append(transform(src))
            except Exception:  # IPython could not transform it: the jail reports the syntax error
                out.append(src)
        transformed[q] = out
    verdicts = {}
    for q, spec in job["questions"].items():
        cells = [
            (f"answer cell {i + 1} of {dep}", src)
            for dep in spec["order"]
            for i, src in enumerate(transformed.get(dep, []))
        ]
        verdicts[q] = find_forbidden(cells, job["setup"], set(spec["dotted"]), set(spec["attrs"]))
    return {"answers": transformed, "forbidden": verdicts}


def main() -> None:
    """Entry point inside the jail (see :func:`ce_grader.inspect.inspect_submission`)."""
    import os
    import sys

    def read(n: int) -> bytes:
        parts, left = [], n
        while left:
            chunk = os.read(0, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    job = json.loads(_read_block(read))
    data = _read_block(read)
    sys.setrecursionlimit(2000)
    try:
        reply = worker(job, data)
    except RecursionError:
        reply = {"error": "it is nested too deeply to be read"}
    except MemoryError:
        reply = {"error": "it needs too much memory to be read"}
    out = json.dumps(reply).encode("utf-8")
    os.write(1, struct.pack("<Q", len(out)))
    view = memoryview(out)
    while view:
        view = view[os.write(1, view) :]
    os._exit(0)
