"""Grade submissions against an assignment's hidden tests.

For every question the grader

1. reads the submission's answer cells for it (and for the questions it
   ``needs``); nothing else of the submission is used;
2. refuses, without running anything, an answer whose code refers to a
   function the question forbids (``ce.softmax`` in the question that asks
   for a softmax): 0 points;
3. runs the assignment's ``setup`` cells (from the source, not from the
   submission), those answer cells and one probe per hidden check in a fresh
   :mod:`sandbox <ce_grader.sandbox>` process;
4. compares the raw values that come back with the values the instructor's
   solution produced for the same probes, here, in the grader's process.

A question earns its points when every one of its checks passes.
"""

from __future__ import annotations

import ast
import csv
import importlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import sandbox
from ._astlock import parse
from .notebook import (
    Assignment,
    AssignmentError,
    Question,
    SubmissionError,
    read_submission,
    uses_ipython_syntax,
)
from .sandbox import Limits
from .spec import compare_values

__all__ = [
    "GradeReport",
    "QuestionResult",
    "Reference",
    "compute_reference",
    "find_forbidden",
    "find_submissions",
    "grade_folder",
    "grade_submission",
    "write_gradebook",
]

Reference = dict[str, list[np.ndarray]]


@dataclass
class QuestionResult:
    """The grade of one question."""

    id: str
    earned: float
    possible: float
    reason: str = ""
    passed: int = 0
    checks: int = 0


@dataclass
class GradeReport:
    """The grade of one submission."""

    assignment: str
    submission: str
    questions: list[QuestionResult] = field(default_factory=list)
    error: str | None = None
    isolated: bool = False
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(q.earned for q in self.questions)

    @property
    def max_score(self) -> float:
        return sum(q.possible for q in self.questions)

    @property
    def status(self) -> str:
        return "error" if self.error else "graded"

    def table(self) -> str:
        """The report as printed by ``python -m ce_grader grade``."""
        rows = [("Question", "Earned", "Possible", "Reason")]
        rows += [(q.id, _num(q.earned), _num(q.possible), q.reason) for q in self.questions]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{self.assignment}: {self.submission}"]
        if self.error:
            lines.append(f"error: {self.error}")
        for r in rows:
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
        lines.append(f"Score: {_num(self.score)}/{_num(self.max_score)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(score=self.score, max_score=self.max_score, status=self.status)
        return data


def _num(x: float) -> str:
    return f"{x:g}"


def _transform(source: str) -> str:
    """IPython syntax (magics, ``!cmd``) to plain Python, when IPython is installed."""
    if not uses_ipython_syntax(source):
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    return TransformerManager().transform_cell(source)


# --------------------------------------------------------------------------
# The static rule: an answer may not name the reference implementation
# --------------------------------------------------------------------------


def _forbidden_targets(forbid: Sequence[str]) -> tuple[set[str], set[str]]:
    import ce_lib

    dotted: set[str] = set()
    attrs: set[str] = set()
    for name in forbid:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        dotted |= {name, f"{obj.__module__}.{obj.__name__}"}
        if getattr(ce_lib, obj.__name__, None) is obj:
            dotted.add(f"ce_lib.{obj.__name__}")
        attrs |= {attr, obj.__name__}
    return dotted, attrs


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
    cells: Sequence[tuple[str, str]], setup: Sequence[str], forbid: Sequence[str]
) -> str | None:
    """Find a reference to a forbidden ``ce_lib`` function in answer cells.

    Parameters
    ----------
    cells : sequence of (label, source)
        The answer cells (untrusted).
    setup : sequence of str
        The setup cells (trusted); their imports define aliases such as ``ce``.
    forbid : sequence of str
        Dotted names, e.g. ``["ce_lib.softmax"]``.

    Returns
    -------
    str or None
        A sentence naming the function and where it is used, or ``None``.
    """
    if not forbid:
        return None
    dotted, attrs = _forbidden_targets(forbid)
    aliases: dict[str, str] = {}
    trees: list[tuple[str, ast.AST]] = []
    for source in setup:
        try:
            _collect_aliases(parse(_transform(source)), aliases)
        except SyntaxError:
            pass
    for label, source in cells:
        try:
            tree = parse(_transform(source))
        except SyntaxError:
            continue  # it will fail in the sandbox and be reported there
        _collect_aliases(tree, aliases)
        trees.append((label, tree))

    def resolve(name: str | None) -> str | None:
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head not in aliases:
            return None
        return aliases[head] + (f".{rest}" if rest else "")

    def hit(label: str, node: ast.AST, what: str) -> str:
        return f"uses the reference implementation {what} ({label}, line {getattr(node, 'lineno', '?')})"

    for label, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    if f"{node.module}.{a.name}" in dotted:
                        return hit(label, node, f"{node.module}.{a.name}")
            if isinstance(node, ast.Attribute | ast.Name):
                full = resolve(_dotted(node))
                if full in dotted:
                    return hit(label, node, full)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in attrs
                and (resolve(_dotted(node.args[0])) or "").startswith("ce_lib")
            ):
                return hit(label, node, f"ce_lib.{node.args[1].value}")
    return None


# --------------------------------------------------------------------------
# Running questions
# --------------------------------------------------------------------------


def _setup_cells(assignment: Assignment) -> list[tuple[str, str]]:
    return [(f"setup cell {i + 1}", _transform(s)) for i, s in enumerate(assignment.setup)]


def _run_question(
    assignment: Assignment, q: Question, answers: dict[str, list[str]], limits: Limits, deadline: float
) -> tuple[sandbox.RunResult | None, str | None]:
    """Run one question's cells and probes; ``(None, reason)`` when the static rule refuses them."""
    cells = [(label, _transform(src)) for label, src in assignment.cells_for(q.id, answers)]
    forbidden = find_forbidden(cells, assignment.setup, q.forbid)
    if forbidden:
        return None, forbidden
    setup = _setup_cells(assignment)
    run = sandbox.run(
        setup + cells, q.checks, forbid=q.forbid, limits=limits, deadline=deadline, setup=len(setup)
    )
    return run, None


def _map(fn, items: list, jobs: int) -> list:
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, items))


def compute_reference(assignment: Assignment, limits: Limits | None = None, jobs: int = 1) -> Reference:
    """Run the instructor's solution through every probe.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    limits : Limits, optional
        Sandbox limits.
    jobs : int, default 1
        Questions run in parallel.

    Returns
    -------
    dict
        Question id to the expected value of each of its checks.

    Raises
    ------
    AssignmentError
        When the solution fails one of its own checks, raises, or uses a
        function its question forbids.
    """
    limits = limits or Limits()
    solutions = {qid: q.solution for qid, q in assignment.questions.items()}
    deadline = time.monotonic() + limits.notebook_seconds

    def one(q: Question) -> list[np.ndarray]:
        res, forbidden = _run_question(assignment, q, solutions, limits, deadline)
        if forbidden:
            raise AssignmentError(f"the solution of {q.id} {forbidden}")
        assert res is not None
        values = []
        for j, chk in enumerate(q.checks):
            out = res.probes.get(j)
            if out is None or out.value is None:
                why = (out.error if out else None) or res.failure or "no result"
                errors = "; ".join(f"{k}: {v}" for k, v in res.cell_errors.items())
                raise AssignmentError(
                    f"the solution of {q.id} fails {chk.name}: {why}" + (f" [{errors}]" if errors else "")
                )
            if chk.expect is not None:
                problem = compare_values(out.value, chk.expect, chk.rtol, chk.atol)
                if problem:
                    raise AssignmentError(
                        f"the solution of {q.id} does not give the expected {chk.name}: {problem}"
                    )
            values.append(out.value)
        return values

    qs = list(assignment.questions.values())
    for q in qs:  # parse and poison the library here, before any grading thread starts
        sandbox._poisoned_library(q.forbid)
    return dict(zip([q.id for q in qs], _map(one, qs, jobs), strict=True))


def _grade_one(
    assignment: Assignment,
    q: Question,
    answers: dict[str, list[str]],
    expected: list[np.ndarray],
    limits: Limits,
    deadline: float,
) -> tuple[QuestionResult, bool]:
    result = QuestionResult(q.id, 0.0, float(q.points), checks=len(q.checks))
    if q.solution and not answers.get(q.id):
        result.reason = f"no answer cell for {q.id} in the submission"
        return result, False
    res, forbidden = _run_question(assignment, q, answers, limits, deadline)
    if forbidden:
        result.reason = forbidden
        return result, False
    assert res is not None
    problems = []
    for j, chk in enumerate(q.checks):
        out = res.probes.get(j)
        if out is None:
            problem = res.failure or "no result came back"
        elif out.error is not None:
            problem = f"raised {out.error}"
        else:
            assert out.value is not None
            problem = compare_values(out.value, expected[j], chk.rtol, chk.atol)
        if problem:
            problems.append(f"{chk.name}: {problem}")
    result.passed = len(q.checks) - len(problems)
    if not problems:
        result.earned = float(q.points)
    else:
        reason = problems[0] + (f" (and {len(problems) - 1} more failed)" if len(problems) > 1 else "")
        own = [f"{k} raised {v}" for k, v in res.cell_errors.items()]
        if own:
            reason += f"; {own[0]}"
        result.reason = reason
    return result, res.isolated


def grade_submission(
    assignment: Assignment,
    submission: str | Path,
    *,
    reference: Reference | None = None,
    limits: Limits | None = None,
    jobs: int = 1,
) -> GradeReport:
    """Grade one submitted notebook.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    submission : str or Path
        The student's notebook.
    reference : dict, optional
        From :func:`compute_reference`; computed here when omitted.
    limits : Limits, optional
        Sandbox limits (the notebook limit applies to this submission).
    jobs : int, default 1
        Questions run in parallel.

    Returns
    -------
    GradeReport

    Raises
    ------
    SubmissionError
        When the submission is missing or not a notebook.
    """
    limits = limits or Limits()
    if reference is None:
        reference = compute_reference(assignment, limits, jobs)
    answers = read_submission(submission)
    start = time.monotonic()
    deadline = start + limits.notebook_seconds
    qs = list(assignment.questions.values())
    for q in qs:  # parse and poison the library here, before any grading thread starts
        sandbox._poisoned_library(q.forbid)
    graded = _map(lambda q: _grade_one(assignment, q, answers, reference[q.id], limits, deadline), qs, jobs)
    report = GradeReport(assignment.name, str(submission), [g[0] for g in graded])
    report.isolated = any(g[1] for g in graded)
    report.seconds = time.monotonic() - start
    return report


def find_submissions(folder: str | Path) -> list[Path]:
    """The ``.ipynb`` files in a folder and its subfolders (checkpoints excluded), sorted."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.relative_to(root).parts)


def grade_folder(
    assignment: Assignment,
    folder: str | Path,
    *,
    reference: Reference | None = None,
    limits: Limits | None = None,
    jobs: int = 1,
    progress=None,
) -> list[GradeReport]:
    """Grade every submission in a folder; an unreadable one gets a report with its error.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    folder : str or Path
        Folder of ``.ipynb`` submissions (searched recursively).
    reference : dict, optional
        From :func:`compute_reference`; computed once here when omitted.
    limits : Limits, optional
        Sandbox limits (the notebook limit applies to each submission).
    jobs : int, default 1
        Questions run in parallel.
    progress : callable, optional
        Called with each :class:`GradeReport` as soon as it is ready.

    Returns
    -------
    list of GradeReport
    """
    limits = limits or Limits()
    if reference is None:
        reference = compute_reference(assignment, limits, jobs)
    root = Path(folder)
    reports = []
    for path in find_submissions(root):
        name = str(path.relative_to(root))
        try:
            report = grade_submission(assignment, path, reference=reference, limits=limits, jobs=jobs)
            report.submission = name
        except SubmissionError as exc:
            report = GradeReport(assignment.name, name, error=str(exc))
            report.questions = [
                QuestionResult(q.id, 0.0, float(q.points), "submission could not be read", 0, len(q.checks))
                for q in assignment.questions.values()
            ]
        reports.append(report)
        if progress is not None:
            progress(report)
    return reports


def write_gradebook(reports: Sequence[GradeReport], assignment: Assignment, path: str | Path) -> Path:
    """Write one CSV row per submission: per-question points, total, max, status, reason.

    Parameters
    ----------
    reports : sequence of GradeReport
        From :func:`grade_folder`.
    assignment : Assignment
        The parsed source (for the question columns).
    path : str or Path
        The CSV file to write.

    Returns
    -------
    Path
    """
    path = Path(path)
    qids = list(assignment.questions)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", *qids, "total", "max", "status", "reason"])
        for r in reports:
            earned = {q.id: q.earned for q in r.questions}
            reason = r.error or "; ".join(f"{q.id}: {q.reason}" for q in r.questions if q.reason)
            writer.writerow(
                [
                    r.submission,
                    *(_num(earned.get(q, 0.0)) for q in qids),
                    _num(r.score),
                    _num(assignment.max_points),
                    r.status,
                    reason[:1000],
                ]
            )
    return path
