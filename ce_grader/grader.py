"""Grade submissions against an assignment's hidden tests.

For a folder, the grader first reads every submission into memory
(:mod:`ce_grader.collect`: links and special files are not graded as a
student's work). Then, for each submission,

1. a jailed process reads the notebook (:mod:`ce_grader.static`): its answer
   cells per question and, per question, whether an answer names a function
   the question forbids (0 points, with the line);
2. for each question, a fresh jail (:mod:`ce_grader.sandbox`) runs the
   assignment's ``setup`` cells (from the source, not from the submission),
   the question's answer cells, then one probe per hidden check, with a copy
   of ``ce_lib`` that holds only what the question allows;
3. the grader compares the raw values that come back with the values the
   instructor's solution produced for the same probes, here, in its own
   process, with its own list of questions, checks and labels.

A question earns its points when every one of its checks passes. Anything
that goes wrong with one submission, whatever it is, costs that submission its
row, with the reason.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import sandbox
from .collect import Entry, collect, read_one
from .notebook import Assignment, AssignmentError, Question
from .output import safe_text, write_gradebook_csv
from .sandbox import Limits
from .spec import compare_values
from .static import find_forbidden, transform

__all__ = [
    "GradeReport",
    "QuestionResult",
    "Reference",
    "compute_reference",
    "grade_bytes",
    "grade_folder",
    "grade_submission",
    "write_gradebook",
]

Reference = dict[str, list[np.ndarray]]


@dataclass
class QuestionResult:
    """The grade of one question.

    ``reason`` is for the instructor (exception messages included);
    ``feedback`` is for the student: for a hidden check it says only which
    check failed and one of a few fixed words (wrong values, wrong shape, wrong
    type, raised an exception, did not finish in time), never anything the
    student's code returned or raised after the hidden inputs reached it.
    """

    id: str
    earned: float
    possible: float
    reason: str = ""
    passed: int = 0
    checks: int = 0
    feedback: list[str] = field(default_factory=list)


@dataclass
class GradeReport:
    """The grade of one submission."""

    assignment: str
    submission: str
    questions: list[QuestionResult] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None
    isolation: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(q.earned for q in self.questions)

    @property
    def max_score(self) -> float:
        return sum(q.possible for q in self.questions)

    @property
    def jailed(self) -> bool:
        """Whether the submission's code ran in the bubblewrap jail."""
        return self.isolation == "bwrap"

    @property
    def status(self) -> str:
        return "error" if self.error else "check" if self.warning else "graded"

    def table(self) -> str:
        """The report as printed by ``python -m ce_grader grade`` (every string made safe)."""
        rows = [("Question", "Earned", "Possible", "Reason")]
        rows += [(q.id, _num(q.earned), _num(q.possible), safe_text(q.reason, 300)) for q in self.questions]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{self.assignment}: {safe_text(self.submission, 200)}"]
        if self.error:
            lines.append(f"error: {safe_text(self.error, 300)}")
        if self.warning:
            lines.append(f"check: {safe_text(self.warning, 300)}")
        for r in rows:
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
        lines.append(f"Score: {_num(self.score)}/{_num(self.max_score)}")
        return "\n".join(lines)

    def feedback_text(self) -> str:
        """What the student may read: per question, points, what passed and what failed."""
        lines = [f"{self.assignment}: {safe_text(self.submission, 200)}", ""]
        if self.error:
            lines += [f"Not graded: {safe_text(self.error, 300)}", ""]
        for q in self.questions:
            lines.append(
                f"{q.id}: {_num(q.earned)}/{_num(q.possible)} ({q.passed} of {q.checks} checks passed)"
            )
            lines += [f"  - {safe_text(line, 300)}" for line in q.feedback]
        lines += ["", f"Score: {_num(self.score)}/{_num(self.max_score)}", ""]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(score=self.score, max_score=self.max_score, status=self.status)
        return data


def _num(x: float) -> str:
    return f"{x:g}"


def forbidden_targets(forbid: Sequence[str]) -> tuple[set[str], set[str]]:
    """Every dotted name and bare name of the forbidden functions (from the trusted assignment)."""
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


def _order(assignment: Assignment, qid: str) -> list[str]:
    """The questions whose answer cells ``qid`` runs, dependencies first."""
    order: list[str] = []

    def visit(q: str) -> None:
        for dep in assignment.questions[q].needs:
            visit(dep)
        if q not in order:
            order.append(q)

    visit(qid)
    return order


def _run_question(
    assignment: Assignment, q: Question, answers: dict[str, list[str]], limits: Limits, deadline: float
) -> tuple[sandbox.RunResult, list[str]]:
    """Run one question's setup and answer cells and its probes; the result and the cells' labels."""
    cells = [(f"setup cell {i + 1}", transform(s)) for i, s in enumerate(assignment.setup)]
    setup = len(cells)
    for dep in _order(assignment, q.id):
        cells += [(f"answer cell {i + 1} of {dep}", src) for i, src in enumerate(answers.get(dep, []))]
    res = sandbox.run(
        cells, q.checks, allow=q.allow, forbid=q.forbid, limits=limits, deadline=deadline, setup=setup
    )
    return res, [label for label, _ in cells]


def _map(fn: Callable, items: list, jobs: int) -> list:
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
    solutions = {qid: [transform(s) for s in q.solution] for qid, q in assignment.questions.items()}
    deadline = time.monotonic() + limits.notebook_seconds

    def one(q: Question) -> list[np.ndarray]:
        dotted, attrs = forbidden_targets(q.forbid)
        cells = [(f"answer cell of {d}", s) for d in _order(assignment, q.id) for s in solutions.get(d, [])]
        forbidden = find_forbidden(cells, assignment.setup, dotted, attrs)
        if forbidden:
            raise AssignmentError(f"the solution of {q.id} {forbidden}")
        res, labels = _run_question(assignment, q, solutions, limits, deadline)
        values = []
        for j, chk in enumerate(q.checks):
            out = res.probes.get(j)
            if out is None or out.value is None:
                why = (out.error if out else None) or res.failure or "no result"
                errors = "; ".join(f"{labels[k]}: {v}" for k, v in sorted(res.cell_errors.items()))
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
    for q in qs:  # build every library copy before any thread starts
        sandbox.library_dir(q.allow, q.forbid)
    return dict(zip([q.id for q in qs], _map(one, qs, jobs), strict=True))


def _student_failure(failure: str) -> str:
    """Why a run ended early, in fixed words (an exit status is the student's to choose)."""
    if "time limit" in failure:
        return "did not finish within the time limit"
    if "more than" in failure:
        return "the run wrote or sent more than its limit"
    return "the run ended before this check"


def _student_problem(problem: str) -> str:
    """A comparison problem in a few fixed words: nothing the result or the hidden inputs decide.

    The student's code saw the hidden inputs before it returned; whatever of its
    result the feedback quoted (a shape, a dtype, a message) could carry them out.
    """
    if problem.startswith("the result has shape"):
        return "wrong shape"
    if problem.startswith("the result has dtype"):
        return "wrong type"
    return "wrong values"


def _grade_question(
    q: Question,
    res: sandbox.RunResult | None,
    labels: list[str],
    verdict: str | None,
    expected: list[np.ndarray],
    answered: bool,
) -> QuestionResult:
    result = QuestionResult(q.id, 0.0, float(q.points), checks=len(q.checks))
    if q.solution and not answered:
        result.reason = f"no answer cell for {q.id} in the submission"
        result.feedback = [result.reason]
        return result
    if verdict:
        result.reason = verdict
        result.feedback = [verdict]
        return result
    assert res is not None
    problems, feedback = [], []
    for j, chk in enumerate(q.checks):
        out = res.probes.get(j)
        if out is None:
            problem = res.failure or "no result came back"
            said = _student_failure(problem)
        elif out.error is not None:
            problem = f"raised {out.error}"
            timed_out = out.error_type == "CellTimeout"
            said = "did not finish within the time limit" if timed_out else "raised an exception"
        else:
            assert out.value is not None
            problem = compare_values(out.value, expected[j], chk.rtol, chk.atol)
            said = _student_problem(problem) if problem else ""
        if problem:
            problems.append(f"{chk.name}: {problem}")
            feedback.append(f"check {chk.name}: {said}")
    result.passed = len(q.checks) - len(problems)
    own = [f"{labels[k]} raised {v}" for k, v in sorted(res.cell_errors.items()) if k < len(labels)]
    if not problems:
        result.earned = float(q.points)
        result.feedback = ["every check passed"]
    else:
        reason = problems[0] + (f" (and {len(problems) - 1} more failed)" if len(problems) > 1 else "")
        if own:
            reason += f"; {own[0]}"
        result.reason = reason
        result.feedback = feedback + own
    return result


def _static_job(assignment: Assignment, suffix: str) -> dict:
    questions = {}
    for q in assignment.questions.values():
        dotted, attrs = forbidden_targets(q.forbid)
        questions[q.id] = {
            "order": _order(assignment, q.id),
            "dotted": sorted(dotted),
            "attrs": sorted(attrs),
        }
    return {"suffix": suffix, "setup": list(assignment.setup), "questions": questions}


def _checked_reply(reply: dict, assignment: Assignment) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """The inspector's reply, with every type checked (it parsed hostile bytes)."""
    answers_in, verdicts_in = reply.get("answers"), reply.get("forbidden")
    if not isinstance(answers_in, dict) or not isinstance(verdicts_in, dict):
        raise ValueError("malformed reply")
    answers: dict[str, list[str]] = {}
    for qid in assignment.questions:
        srcs = answers_in.get(qid, [])
        if not isinstance(srcs, list) or not all(isinstance(s, str) for s in srcs):
            raise ValueError("malformed reply")
        if srcs:
            answers[qid] = srcs
    verdicts = {}
    for qid in assignment.questions:
        v = verdicts_in.get(qid)
        verdicts[qid] = safe_text(v, 300) if isinstance(v, str) else None
    return answers, verdicts


def grade_bytes(
    assignment: Assignment,
    name: str,
    data: bytes,
    suffix: str,
    *,
    reference: Reference,
    limits: Limits | None = None,
    jobs: int = 1,
) -> GradeReport:
    """Grade one submission from its bytes; never raises for anything in them.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    name : str
        What the report calls the submission.
    data : bytes
        The notebook, as read before grading began.
    suffix : str
        ``.ipynb`` (or a jupytext text format such as ``.md``).
    reference : dict
        From :func:`compute_reference`.
    limits : Limits, optional
        Sandbox limits (the notebook limit applies to this submission).
    jobs : int, default 1
        Questions run in parallel. The command line keeps 1: with more, several
        runs of the same submission exist at once, each with its own limits.

    Returns
    -------
    GradeReport
    """
    limits = limits or Limits()
    start = time.monotonic()
    report = GradeReport(assignment.name, safe_text(name, 1000), isolation=limits.mode)
    try:
        reply = sandbox.inspect(_static_job(assignment, suffix), data, limits)
        if "error" in reply:
            why = reply["error"] if isinstance(reply["error"], str) else "it could not be read"
            return _error_report(report, assignment, f"not graded: {safe_text(why, 200)}", start)
        answers, verdicts = _checked_reply(reply, assignment)
        deadline = start + limits.notebook_seconds

        def one(q: Question) -> QuestionResult:
            answered = bool(answers.get(q.id))
            if verdicts[q.id] or (q.solution and not answered):
                return _grade_question(q, None, [], verdicts[q.id], reference[q.id], answered)
            try:
                res, labels = _run_question(assignment, q, answers, limits, deadline)
                return _grade_question(q, res, labels, None, reference[q.id], answered)
            except Exception as exc:  # anything unforeseen costs this question, not the others
                why = f"the grader could not grade this question ({type(exc).__name__})"
                return QuestionResult(q.id, 0.0, float(q.points), why, 0, len(q.checks), [why])

        report.questions = _map(one, list(assignment.questions.values()), jobs)
    except Exception as exc:  # one submission costs at most its own row
        return _error_report(report, assignment, f"the grader failed on it ({type(exc).__name__})", start)
    report.seconds = time.monotonic() - start
    return report


def _error_report(report: GradeReport, assignment: Assignment, error: str, start: float) -> GradeReport:
    report.error = error
    report.questions = [
        QuestionResult(q.id, 0.0, float(q.points), "not graded", 0, len(q.checks), ["not graded"])
        for q in assignment.questions.values()
    ]
    report.seconds = time.monotonic() - start
    return report


def grade_submission(
    assignment: Assignment,
    submission: str | Path,
    *,
    reference: Reference | None = None,
    limits: Limits | None = None,
    jobs: int = 1,
) -> GradeReport:
    """Grade one submitted notebook file.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    submission : str or Path
        The student's notebook.
    reference : dict, optional
        From :func:`compute_reference`; computed here when omitted.
    limits : Limits, optional
        Sandbox limits.
    jobs : int, default 1
        Questions run in parallel.

    Returns
    -------
    GradeReport
    """
    limits = limits or Limits()
    if reference is None:
        reference = compute_reference(assignment, limits, jobs)
    path = Path(submission)
    entry = read_one(path)
    if entry.problem is not None:
        name = safe_text(str(path), 200)
        report = GradeReport(assignment.name, name, isolation=limits.mode)
        return _error_report(report, assignment, entry.problem, time.monotonic())
    assert entry.data is not None
    report = grade_bytes(
        assignment, str(path), entry.data, path.suffix, reference=reference, limits=limits, jobs=jobs
    )
    return report


def grade_folder(
    assignment: Assignment,
    folder: str | Path,
    *,
    reference: Reference | None = None,
    limits: Limits | None = None,
    jobs: int = 1,
    progress: Callable[[GradeReport], None] | None = None,
) -> list[GradeReport]:
    """Grade every submission in a folder, ``jobs`` at a time.

    Every submission is read into memory before the first one is graded;
    an entry that is not the student's own file (a link, a special file)
    gets a row with the reason and is not graded.

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
        Submissions graded in parallel.
    progress : callable, optional
        Called with each :class:`GradeReport` as soon as it is ready (from the
        calling thread, in the order of the submissions).

    Returns
    -------
    list of GradeReport
        In the order of the submissions' names.
    """
    limits = limits or Limits()
    if reference is None:
        reference = compute_reference(assignment, limits, jobs)
    entries = collect(Path(folder))
    names = _distinct([e.name for e in entries])

    def one(item: tuple[Entry, str]) -> GradeReport:
        entry, name = item
        if entry.data is None:
            report = GradeReport(assignment.name, name, isolation=limits.mode)
            return _error_report(report, assignment, entry.problem or "not graded", time.monotonic())
        report = grade_bytes(
            assignment, name, entry.data, Path(entry.name).suffix, reference=reference, limits=limits
        )
        report.warning = getattr(entry, "note", None)  # graded, but the instructor must look at it
        return report

    reports: list[GradeReport] = []
    items = list(zip(entries, names, strict=True))
    if jobs <= 1:
        iterator = map(one, items)
        pool = None
    else:
        pool = ThreadPoolExecutor(max_workers=jobs)
        iterator = pool.map(one, items)
    try:
        for report in iterator:
            reports.append(report)
            if progress is not None:
                progress(report)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return reports


def _distinct(names: list[str]) -> list[str]:
    """The names, with `` [2]``, `` [3]`` ... added where shortened names came out the same."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} [{seen[name]}]")
    return out


def write_gradebook(reports: Sequence[GradeReport], assignment: Assignment, path: str | Path) -> Path:
    """Write one CSV row per submission, atomically, to a file the grader creates.

    Parameters
    ----------
    reports : sequence of GradeReport
        From :func:`grade_folder`.
    assignment : Assignment
        The parsed source (for the question columns).
    path : str or Path
        The CSV file; refused if it is a link or not a regular file.

    Returns
    -------
    Path
    """
    qids = list(assignment.questions)
    header = ["submission", *qids, "total", "max", "status", "reason"]
    rows = []
    for r in reports:
        earned = {q.id: q.earned for q in r.questions}
        reason = r.error or "; ".join(f"{q.id}: {q.reason}" for q in r.questions if q.reason)
        if r.warning:
            reason = f"{r.warning}; {reason}" if reason else r.warning
        rows.append(
            [
                r.submission,
                *(float(earned.get(q, 0.0)) for q in qids),
                float(r.score),
                float(assignment.max_points),
                r.status,
                safe_text(reason, 1000),
            ]
        )
    return write_gradebook_csv(rows, header, Path(path))
