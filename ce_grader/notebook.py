"""Reading an assignment's source, writing the student release, reading submissions.

An assignment is a MyST Markdown notebook (the format of the book's chapters,
read with jupytext). Code cells play roles given by their tags:

``setup``
    Run by the grader, from the *source*, before a question's answer cells.
``answer``
    The student's answer to the question named in the cell's
    ``homework: {question: ...}`` metadata. Code between ``# BEGIN SOLUTION``
    and ``# END SOLUTION`` is the instructor's solution; the release replaces
    it with a stub that raises :class:`NotImplementedError`.
``tests``
    Visible tests: plain asserts that students may run. Kept in the release,
    never used for the score.
``hidden-tests``
    Calls of :func:`ce_grader.check`. Their metadata declares the
    question, its ``points``, and optionally ``forbid`` (reference functions
    the answer must not use; an answer that names one scores 0), ``allow``
    (the only ``ce_lib`` functions the answer's copy of the library has; a
    question that forbids anything must list what it allows, ``[]`` included)
    and ``needs`` (other questions whose answer cells must run first).
    Removed from the release.
``solution``
    A whole cell that is solution (code or Markdown); replaced by a stub.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .spec import Check, recording

__all__ = [
    "MAX_SUBMISSION_BYTES",
    "Assignment",
    "AssignmentError",
    "Question",
    "SubmissionError",
    "load_assignment",
    "release",
    "solution_lines",
    "strip_solutions",
]

TAG_SETUP = "setup"
TAG_ANSWER = "answer"
TAG_TESTS = "tests"
TAG_HIDDEN = "hidden-tests"
TAG_SOLUTION = "solution"
MAX_SUBMISSION_BYTES = 20_000_000

_BEGIN = re.compile(r"^(\s*)(?:#+|<!--)\s*BEGIN SOLUTION\b.*$")
_END = re.compile(r"^\s*(?:#+|<!--)\s*END SOLUTION\b.*$")
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError"
MARKDOWN_STUB = "_Type your answer here._"
_QUESTION_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,40}$")


class AssignmentError(Exception):
    """The assignment's source is inconsistent (an instructor's mistake)."""


class SubmissionError(Exception):
    """A submission is missing, unreadable or not a notebook."""


@dataclass
class Question:
    """One graded question.

    Attributes
    ----------
    id : str
        The ``question`` value in the cells' ``homework`` metadata.
    points : float
        Points for passing every hidden check (all or nothing).
    forbid : tuple of str
        Dotted names of ``ce_lib`` functions the answer must not use.
    allow : tuple of str or None
        The only ``ce_lib`` functions the jail's copy of the library has while
        this question is graded; ``None`` (no ``allow`` key, and nothing
        forbidden): the whole library.
    needs : tuple of str
        Questions whose answer cells run before this question's own.
    checks : list of Check
        The hidden tests.
    solution : list of str
        The source's answer cells, solutions included.
    """

    id: str
    points: float
    forbid: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    checks: list[Check] = field(default_factory=list)
    solution: list[str] = field(default_factory=list)
    allow: tuple[str, ...] | None = None


@dataclass
class Assignment:
    """A parsed assignment source."""

    path: Path
    notebook: Any
    setup: list[str]
    questions: dict[str, Question]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def max_points(self) -> float:
        return sum(q.points for q in self.questions.values())

    def cells_for(self, qid: str, answers: dict[str, list[str]]) -> list[tuple[str, str]]:
        """``(label, source)`` of the answer cells question ``qid`` runs, dependencies first."""
        order: list[str] = []

        def visit(q: str) -> None:
            for dep in self.questions[q].needs:
                visit(dep)
            if q not in order:
                order.append(q)

        visit(qid)
        return [
            (f"answer cell {i + 1} of {q}", src) for q in order for i, src in enumerate(answers.get(q, []))
        ]


def _tags(cell: Any) -> set[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


def _hw_meta(cell: Any) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("homework", {})
    return meta if isinstance(meta, dict) else {}


def strip_solutions(source: str, stub: str = CODE_STUB) -> tuple[str, int]:
    """Replace every ``BEGIN SOLUTION`` ... ``END SOLUTION`` block by ``stub``.

    Parameters
    ----------
    source : str
        Cell source.
    stub : str, default ``CODE_STUB``
        What replaces each block, indented like the ``BEGIN`` line.

    Returns
    -------
    (str, int)
        The new source and the number of blocks replaced.

    Raises
    ------
    AssignmentError
        For unbalanced or nested markers.
    """
    out: list[str] = []
    inside = False
    blocks = 0
    for line in source.splitlines():
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if inside:
                raise AssignmentError("nested BEGIN SOLUTION")
            inside = True
            blocks += 1
            out.extend(begin.group(1) + s for s in stub.splitlines())
        elif end:
            if not inside:
                raise AssignmentError("END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise AssignmentError("BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out), blocks


def solution_lines(source: str) -> list[str]:
    """The lines strictly between ``BEGIN SOLUTION`` and ``END SOLUTION`` markers."""
    lines, inside = [], False
    for line in source.splitlines():
        if _BEGIN.match(line):
            inside = True
        elif _END.match(line):
            inside = False
        elif inside:
            lines.append(line)
    return lines


def _read_notebook(path: Path) -> Any:
    import jupytext

    return jupytext.read(path)


def _resolve_forbidden(name: str, key: str = "forbid") -> None:
    module, _, attr = name.rpartition(".")
    if module != "ce_lib" or not attr:
        raise AssignmentError(f"{key}: {name!r} is not a public ce_lib function (write e.g. ce_lib.softmax)")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise AssignmentError(f"{key}: cannot find {name}: {exc}") from None
    if not callable(obj) or not getattr(obj, "__module__", "").startswith("ce_lib"):
        raise AssignmentError(f"{key}: {name} is not a function of ce_lib")


def load_assignment(path: str | Path) -> Assignment:
    """Parse an assignment source and its hidden tests.

    Parameters
    ----------
    path : str or Path
        The MyST Markdown (or ``.ipynb``) source with solutions.

    Returns
    -------
    Assignment

    Raises
    ------
    AssignmentError
        When the source is unreadable or its markup is inconsistent.
    """
    path = Path(path)
    try:
        nb = _read_notebook(path)
    except Exception as exc:
        raise AssignmentError(f"cannot read the assignment {path}: {exc}") from None
    setup: list[str] = []
    solutions: dict[str, list[str]] = {}
    decl: dict[str, dict[str, Any]] = {}
    checks: dict[str, list[Check]] = {}
    for index, cell in enumerate(nb.cells):
        tags = _tags(cell)
        where = f"cell {index + 1} of {path.name}"
        if cell.cell_type != "code":
            if cell.cell_type == "markdown" and (tags & {TAG_ANSWER, TAG_HIDDEN, TAG_SETUP}):
                raise AssignmentError(f"{where}: only code cells can be tagged {sorted(tags)}")
            strip_solutions(cell.source, MARKDOWN_STUB)  # balanced markers
            continue
        _, blocks = strip_solutions(cell.source)
        roles = tags & {TAG_SETUP, TAG_ANSWER, TAG_TESTS, TAG_HIDDEN}
        if len(roles) > 1:
            raise AssignmentError(f"{where}: a cell has one role; it is tagged {sorted(roles)}")
        meta = _hw_meta(cell)
        qid = meta.get("question")
        if roles & {TAG_ANSWER, TAG_HIDDEN} and not (isinstance(qid, str) and _QUESTION_ID.match(qid)):
            raise AssignmentError(f"{where}: needs metadata homework: {{question: <id>}}; got {qid!r}")
        if TAG_SETUP in roles:
            setup.append(cell.source)
        elif TAG_ANSWER in roles:
            if blocks == 0 and TAG_SOLUTION not in tags:
                raise AssignmentError(f"{where}: answer cell of {qid} has no BEGIN/END SOLUTION block")
            solutions.setdefault(qid, []).append(cell.source)
        elif TAG_HIDDEN in roles:
            if "points" in meta:
                if qid in decl:
                    raise AssignmentError(f"{where}: points of {qid} declared twice")
                decl[qid] = meta
            namespace: dict[str, Any] = {"np": np, "__name__": "__hidden_tests__"}
            with recording() as recorded:
                try:
                    exec(compile(cell.source, f"<hidden tests, {where}>", "exec"), namespace)
                except Exception as exc:
                    raise AssignmentError(
                        f"{where}: hidden tests raised {type(exc).__name__}: {exc}"
                    ) from None
            checks.setdefault(qid, []).extend(recorded)
        elif blocks:
            raise AssignmentError(f"{where}: solution markers outside an answer cell")
    questions: dict[str, Question] = {}
    for qid in list(dict.fromkeys([*solutions, *checks, *decl])):
        meta = decl.get(qid)
        if meta is None:
            raise AssignmentError(f"question {qid}: no hidden-tests cell declares its points")
        points = meta["points"]
        if isinstance(points, bool) or not isinstance(points, int | float) or not points > 0:
            raise AssignmentError(f"question {qid}: points must be a positive number; got {points!r}")
        forbid = meta.get("forbid", []) or []
        needs = meta.get("needs", []) or []
        if not isinstance(forbid, list) or not all(isinstance(f, str) for f in forbid):
            raise AssignmentError(f"question {qid}: forbid must be a list of names")
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise AssignmentError(f"question {qid}: needs must be a list of question ids")
        for name in forbid:
            _resolve_forbidden(name)
        allow = meta.get("allow")
        if forbid and allow is None:
            raise AssignmentError(
                f"question {qid}: forbids {', '.join(forbid)} but has no allow list; a list of what is "
                "forbidden cannot stop other routes to the same result (allow: [] gives the answer an "
                "empty ce_lib)"
            )
        if allow is not None:
            if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
                raise AssignmentError(f"question {qid}: allow must be a list of names")
            for name in allow:
                _resolve_forbidden(name, "allow")
            both = sorted(set(allow) & set(forbid))
            if both:
                raise AssignmentError(f"question {qid}: {', '.join(both)} both allowed and forbidden")
            allow = tuple(allow)
        try:
            from .jail_library import library_for

            library_for(allow, tuple(forbid))
        except ValueError as exc:
            raise AssignmentError(f"question {qid}: {exc}") from None
        if not checks.get(qid):
            raise AssignmentError(f"question {qid}: no hidden check")
        if qid not in solutions and not needs:
            raise AssignmentError(f"question {qid}: no answer cell and no needs")
        questions[qid] = Question(
            qid, points, tuple(forbid), tuple(needs), checks[qid], solutions.get(qid, []), allow
        )
    for q in questions.values():
        for dep in q.needs:
            if dep not in questions:
                raise AssignmentError(f"question {q.id}: needs unknown question {dep!r}")
    _check_acyclic(questions)
    if not questions:
        raise AssignmentError(f"{path.name}: no questions")
    return Assignment(path, nb, setup, questions)


def _check_acyclic(questions: dict[str, Question]) -> None:
    state: dict[str, int] = {}

    def visit(q: str) -> None:
        if state.get(q) == 1:
            raise AssignmentError(f"questions depend on each other in a cycle through {q}")
        if state.get(q) == 2:
            return
        state[q] = 1
        for dep in questions[q].needs:
            visit(dep)
        state[q] = 2

    for q in questions:
        visit(q)


_KEEP_CELL_METADATA = ("tags", "homework", "editable", "deletable")


def release(source: str | Path, out_dir: str | Path) -> Path:
    """Write the student version of an assignment.

    Solution blocks become stubs that raise :class:`NotImplementedError`,
    ``solution`` cells become stubs, ``hidden-tests`` cells are removed,
    outputs are cleared, and visible tests stay.

    Parameters
    ----------
    source : str or Path
        The assignment source.
    out_dir : str or Path
        Directory to write ``<name>.ipynb`` into (created if needed).

    Returns
    -------
    Path
        The student notebook.
    """
    import nbformat

    assignment = load_assignment(source)  # validates the markup first
    nb = copy.deepcopy(assignment.notebook)
    cells = []
    for cell in nb.cells:
        tags = _tags(cell)
        if TAG_HIDDEN in tags:
            continue
        if cell.cell_type == "code":
            if TAG_SOLUTION in tags:
                cell.source = CODE_STUB
            else:
                cell.source, _ = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = (
                MARKDOWN_STUB if TAG_SOLUTION in tags else strip_solutions(cell.source, MARKDOWN_STUB)[0]
            )
        meta = {k: cell.metadata[k] for k in _KEEP_CELL_METADATA if k in cell.metadata}
        if "homework" in meta:
            meta["homework"] = {"question": _hw_meta(cell).get("question")}
        cell.metadata = meta
        cell.pop("attachments", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    nb.metadata["homework"] = {"assignment": assignment.name}
    _assert_clean(nb)
    nbformat.validate(nb)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{assignment.name}.ipynb"
    nbformat.write(nb, target)
    return target


def _assert_clean(nb: Any) -> None:
    """Refuse to write a release that still contains a solution marker or a hidden test."""
    if any(TAG_HIDDEN in _tags(c) for c in nb.cells):
        raise AssignmentError("release still contains a hidden-tests cell")
    text = json.dumps(nb, ensure_ascii=False)
    if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
        raise AssignmentError("release still contains solution markers")
