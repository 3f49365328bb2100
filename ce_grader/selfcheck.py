"""``check``: what an instructor runs before handing out an assignment."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .grader import compute_reference, grade_submission
from .notebook import TAG_HIDDEN, Assignment, _tags, load_assignment, release, solution_lines, strip_solutions
from .sandbox import Limits

__all__ = ["execute_source", "self_check"]


def _stated_points(assignment: Assignment) -> list[str]:
    """Questions whose points no Markdown cell states as "(N points)" next to the question id."""
    text = "\n".join(c.source for c in assignment.notebook.cells if c.cell_type == "markdown")
    missing = []
    for q in assignment.questions.values():
        n = f"{q.points:g}"
        if not re.search(rf"\({re.escape(n)} points?\)", text):
            missing.append(f"{q.id}: no Markdown cell says '({n} point{'s' if q.points != 1 else ''})'")
    return missing


def self_check(
    source: str | Path, limits: Limits | None = None, jobs: int = 1
) -> tuple[list[str], list[str]]:
    """Release, grade the solution and the release, and report problems.

    Parameters
    ----------
    source : str or Path
        The assignment source.
    limits : Limits, optional
        Sandbox limits.
    jobs : int, default 1
        Questions run in parallel.

    Returns
    -------
    (list of str, list of str)
        What was verified, and the problems found (empty when all is well).
    """
    assignment = load_assignment(source)
    done: list[str] = [f"{len(assignment.questions)} questions, {assignment.max_points:g} points"]
    problems = _stated_points(assignment)
    reference = compute_reference(assignment, limits, jobs)
    done.append("the solution passes every hidden check")
    with tempfile.TemporaryDirectory() as tmp:
        student = release(source, tmp)
        text = student.read_text(encoding="utf-8")
        outside = "\n".join(  # what the source shows outside solution blocks and hidden tests
            strip_solutions(c.source)[0] for c in assignment.notebook.cells if TAG_HIDDEN not in _tags(c)
        )
        for q in assignment.questions.values():
            for sol in q.solution:
                for line in solution_lines(sol):
                    s = line.strip()
                    if len(s) > 20 and s in text and s not in outside and not s.startswith("#"):
                        problems.append(f"{q.id}: the release still contains solution line {s!r}")
        for cell in assignment.notebook.cells:
            if TAG_HIDDEN in _tags(cell) and cell.source.strip() in text:
                problems.append("the release contains a hidden-tests cell")
        blank = grade_submission(assignment, student, reference=reference, limits=limits, jobs=jobs)
        if blank.score != 0:
            problems.append(f"the untouched release scores {blank.score:g}, not 0")
        else:
            done.append("the untouched release scores 0")
    solved = tempfile.NamedTemporaryFile(suffix=".ipynb", delete=False)
    solved.close()
    try:
        import nbformat

        nbformat.write(assignment.notebook, solved.name)
        full = grade_submission(assignment, solved.name, reference=reference, limits=limits, jobs=jobs)
    finally:
        Path(solved.name).unlink()
    if full.score != assignment.max_points:
        problems.append(f"the solution scores {full.score:g}/{assignment.max_points:g}:\n{full.table()}")
    else:
        done.append("the solution scores full marks")
    return done, problems


def execute_source(source: str | Path, timeout: int = 120) -> None:
    """Execute the source notebook top to bottom in a Jupyter kernel (nbclient).

    Visible tests run as plain asserts and hidden checks run in notebook mode,
    so this fails when the solution does not pass its own tests.

    Parameters
    ----------
    source : str or Path
        The assignment source.
    timeout : int, default 120
        Per-cell timeout in seconds.
    """
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}
        ).execute()
