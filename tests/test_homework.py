"""The homework tooling: releases, round trips, partial credit and hostile submissions.

Every assignment in ``homework/`` is released and graded here: the release holds no
solution and no hidden test, the instructor's solution earns full marks, the untouched
release earns 0, and a plausibly wrong answer earns exactly the rest. The hostile
submissions of ``tests/homework_fixtures/`` each get the exact score their honest
answers deserve, and the grader always finishes.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from ce_grader import grader
from ce_grader.jail import jail_problem, landlock_problem
from ce_grader.notebook import (
    AssignmentError,
    load_assignment,
    release,
    solution_lines,
    strip_solutions,
)
from ce_grader.sandbox import Limits
from ce_grader.selfcheck import _stated_points, execute_source
from ce_grader.spec import check, compare_values, recording
from ce_grader.static import answers_from_bytes, find_forbidden

ROOT = Path(__file__).resolve().parents[1]
HOMEWORK = ROOT / "homework"
FIXTURES = Path(__file__).parent / "homework_fixtures"
ASSIGNMENTS = sorted(p.name for p in HOMEWORK.glob("hw*.md"))
LIMITS = Limits(cell_seconds=10, notebook_seconds=120)
JOBS = 2
HW1 = "hw1_softmax.md"

_references: dict[str, grader.Reference] = {}


def reference(name: str) -> grader.Reference:
    """The instructor's values of every hidden check, computed once per session."""
    if name not in _references:
        _references[name] = grader.compute_reference(load_assignment(HOMEWORK / name), LIMITS, JOBS)
    return _references[name]


def grade(name: str, submission: Path, limits: Limits = LIMITS) -> grader.GradeReport:
    assignment = load_assignment(HOMEWORK / name)
    return grader.grade_submission(
        assignment, submission, reference=reference(name), limits=limits, jobs=JOBS
    )


def earned(report: grader.GradeReport) -> dict[str, float]:
    return {q.id: q.earned for q in report.questions}


def reasons(report: grader.GradeReport) -> dict[str, str]:
    return {q.id: q.reason for q in report.questions}


def submission_with(name: str, replacements: dict[str, str], path: Path) -> Path:
    """The solution notebook with the answer cells of some questions replaced."""
    nb = copy.deepcopy(load_assignment(HOMEWORK / name).notebook)
    cells, done = [], set()
    for cell in nb.cells:
        meta = cell.metadata
        qid = meta.get("homework", {}).get("question")
        if "hidden-tests" in meta.get("tags", []):
            continue  # students never have them
        if "answer" in meta.get("tags", []) and qid in replacements:
            if qid in done:
                continue
            cell.source = replacements[qid]
            done.add(qid)
        cells.append(cell)
    assert done == set(replacements), f"no answer cell for {set(replacements) - done}"
    nb.cells = cells
    nb.metadata.pop("jupytext", None)
    nbformat.write(nb, path)
    return path


def fixture_cells(fixture: str, **subst: str) -> dict[str, str]:
    """The ``# %% qid`` sections of a hostile fixture."""
    text = (FIXTURES / fixture).read_text(encoding="utf-8")
    for key, value in subst.items():
        text = text.replace(f"@@{key}@@", value)
    parts = re.split(r"^# %% (\S+)\n", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ce_grader", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


# --------------------------------------------------------------------------
# The assignments themselves
# --------------------------------------------------------------------------


def test_five_assignments_tied_to_chapters():
    assert len(ASSIGNMENTS) >= 5
    for name in ASSIGNMENTS:
        text = (HOMEWORK / name).read_text(encoding="utf-8")
        assert text.startswith("---\njupytext:"), name
        links = re.findall(r"\]\((\.\./book/[^)]+\.md)\)", text)
        assert links, f"{name} links no chapter"
        for link in links:
            assert (HOMEWORK / link).resolve().is_file(), f"{name}: broken chapter link {link}"
        assignment = load_assignment(HOMEWORK / name)
        assert len(assignment.questions) >= 4
        assert _stated_points(assignment) == [], f"{name}: points not stated in the text"
        assert f"**{assignment.max_points:g} points**" in text, f"{name}: total not stated"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_has_no_solution_and_no_hidden_test(name, tmp_path):
    assignment = load_assignment(HOMEWORK / name)
    student = release(HOMEWORK / name, tmp_path)
    text = student.read_text(encoding="utf-8")
    nb = nbformat.read(student, as_version=4)
    nbformat.validate(nb)
    assert "SOLUTION" not in text
    outside = "\n".join(strip_solutions(c.source)[0] for c in assignment.notebook.cells)
    for q in assignment.questions.values():
        leaked = [
            line.strip()
            for src in q.solution
            for line in solution_lines(src)
            if len(line.strip()) > 12 and line.strip() in text and line.strip() not in outside
        ]
        assert not leaked, f"{q.id}: solution lines in the release: {leaked}"
    hidden = [c for c in assignment.notebook.cells if "hidden-tests" in c.metadata.get("tags", [])]
    assert hidden
    for cell in hidden:
        for line in cell.source.splitlines():
            if "default_rng(" in line or "check(" in line:
                assert line.strip() not in text, f"hidden test line in the release: {line!r}"
    assert "points" not in json.dumps([c.metadata for c in nb.cells])  # no grading metadata left
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert "hidden-tests" not in tags
    source_tests = sum("tests" in c.metadata.get("tags", []) for c in assignment.notebook.cells)
    assert tags.count("tests") == source_tests > 0, "visible tests must be kept"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        if "answer" in cell.metadata.get("tags", []):
            assert "raise NotImplementedError" in cell.source
            assert cell.metadata["homework"]["question"] in assignment.questions
    answers = answers_from_bytes(student.read_bytes(), ".ipynb")
    assert set(answers) == {q for q, v in assignment.questions.items() if v.solution}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_full_marks_release_zero(name, tmp_path):
    assignment = load_assignment(HOMEWORK / name)
    full = grade(name, submission_with(name, {}, tmp_path / "solution.ipynb"))
    assert full.score == full.max_score == assignment.max_points, full.table()
    assert all(q.reason == "" for q in full.questions)
    blank = grade(name, release(HOMEWORK / name, tmp_path / "release"))
    assert blank.score == 0, blank.table()
    assert blank.max_score == assignment.max_points
    for q in blank.questions:
        assert "NotImplementedError" in q.reason or "not defined" in q.reason, q


# A plausible wrong answer per assignment, that the visible tests do not catch.
WRONG = {
    "hw1_softmax.md": (
        {
            "q1": "def softmax(z):\n    e = np.exp(np.asarray(z, dtype=float))\n"
            "    return e / e.sum(axis=-1, keepdims=True)\n"
        },
        {"q1"},
        "large logits do not overflow",
    ),
    "hw2_cross_entropy.md": (
        {
            "q1": "def cross_entropy(z, y):\n"
            "    return -np.mean(np.log(ce.softmax(z)[np.arange(len(y)), y]))\n"
        },
        {"q1"},
        "large logits",
    ),
    "hw3_mse_vs_ce.md": (
        {"q2": "def grad_z_bce(z, y):\n    return ce.sigmoid(np.asarray(z, dtype=float)) - y\n"},
        {"q2"},
        "values differ",
    ),
    "hw4_hinge_to_softmax.md": (
        {"q3": "def softplus(x):\n    return np.log(1 + np.exp(np.asarray(x, dtype=float)))\n"},
        {"q3"},
        "huge inputs",
    ),
    "hw5_stability_label_smoothing.md": (
        {
            "q5": "def ls_loss_floor(C, eps):\n    q = np.full(C, eps / C)\n    q[0] += 1 - eps\n"
            "    return float(-np.sum(q * np.log(q)))\n"
        },
        {"q5"},
        "eps = 0",
    ),
}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_partially_wrong_submission_gets_partial_score(name, tmp_path):
    replacements, wrong, reason = WRONG[name]
    assignment = load_assignment(HOMEWORK / name)
    report = grade(name, submission_with(name, replacements, tmp_path / "partial.ipynb"))
    lost = sum(assignment.questions[q].points for q in wrong)
    assert report.score == assignment.max_points - lost, report.table()
    assert {q for q, v in earned(report).items() if v == 0} == wrong
    assert reason in " ".join(reasons(report)[q] for q in wrong)


def test_needs_runs_the_answers_a_question_builds_on(tmp_path):
    # hw3's q5 runs the answer cells of q3 and q4 first: a stub in q3 costs both.
    name = "hw3_mse_vs_ce.md"
    sub = submission_with(
        name,
        {"q3": "def train(loss, w, b, lr, steps, X, y):\n    raise NotImplementedError\n"},
        tmp_path / "s.ipynb",
    )
    report = grade(name, sub)
    assert earned(report) == {"q1": 2, "q2": 2, "q3": 0, "q4": 2, "q5": 0}, report.table()


def test_missing_answer_cell_scores_zero_for_that_question(tmp_path):
    sub = submission_with(HW1, {}, tmp_path / "full.ipynb")
    nb = nbformat.read(sub, as_version=4)
    nb.cells = [c for c in nb.cells if c.metadata.get("homework", {}).get("question") != "q2"]
    nbformat.write(nb, sub)
    report = grade(HW1, sub)
    assert earned(report) == {"q1": 3, "q2": 0, "q3": 2, "q4": 2}
    assert "no answer cell for q2" in reasons(report)["q2"]


# --------------------------------------------------------------------------
# Hostile submissions (hw1: q1 3, q2 3, q3 2, q4 2 points)
# --------------------------------------------------------------------------

JAILED = jail_problem() is None
ISOLATION = [*(["jail"] if JAILED else []), *(["landlock"] if landlock_problem() is None else []), "unsafe"]

HOSTILE = {
    # fixture: (points per question, substrings expected in the reasons)
    "loop_forever.cells": (
        {"q1": 0, "q2": 3, "q3": 2, "q4": 0},
        {"q1": "time limit", "q4": "the time limit of this question was reached"},
    ),
    "exit_kernel.cells": (
        {"q1": 3, "q2": 0, "q3": 0, "q4": 0},
        # no signal leaves the process (seccomp): killing itself or its group is refused
        {"q2": "exited with status 0", "q3": "PermissionError", "q4": "PermissionError"},
    ),
    "memory_bomb.cells": ({"q1": 3, "q2": 0, "q3": 2, "q4": 0}, {"q2": "MemoryError", "q4": "MemoryError"}),
    "huge_print.cells": ({"q1": 3, "q2": 3, "q3": 2, "q4": 2}, {}),
    "monkeypatch.cells": (
        {"q1": 0, "q2": 3, "q3": 0, "q4": 0},
        {"q1": "values differ", "q3": "values differ"},
    ),
    "uses_reference.cells": (
        {"q1": 0, "q2": 0, "q3": 0, "q4": 2},
        {
            "q1": "uses the reference implementation ce_lib.softmax",
            "q2": "has no attribute 'softmax_jacobian'",
            "q3": "No module named 'ce_lib.functional'",
        },
    ),
}


@pytest.mark.parametrize("isolate", ISOLATION)
@pytest.mark.parametrize("fixture", sorted(HOSTILE))
def test_hostile_submission_gets_exactly_its_honest_score(fixture, isolate, tmp_path):
    points, why = HOSTILE[fixture]
    sub = submission_with(HW1, fixture_cells(fixture, OUTDIR=str(tmp_path)), tmp_path / "hostile.ipynb")
    limits = Limits(
        cell_seconds=1.0, notebook_seconds=60, jail=isolate == "jail", landlock=isolate == "landlock"
    )
    report = grade(HW1, sub, limits)
    assert report.jailed == (isolate == "jail")
    assert earned(report) == points, report.table()
    assert report.score == sum(points.values())
    for qid, text in why.items():
        assert text in reasons(report)[qid], report.table()
    assert report.seconds < 40


def test_forged_results_and_edited_tests_change_nothing(tmp_path):
    """Through the command line, against a copy of the source that the submission rewrites."""
    source = tmp_path / HW1
    source.write_text((HOMEWORK / HW1).read_text(encoding="utf-8"), encoding="utf-8")
    cells = fixture_cells("forged_results.cells", OUTDIR=str(tmp_path), SOURCE=str(source))
    sub = submission_with(HW1, cells, tmp_path / "forged.ipynb")
    out = tmp_path / "report.json"
    done = cli("grade", str(source), str(sub), "--json", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {q["id"]: q["earned"] for q in report["questions"]} == {"q1": 0, "q2": 3, "q3": 0, "q4": 2}
    assert done.stdout.strip().splitlines()[-1] == "Score: 5/10"
    # In the jail the attacks could not even happen: nothing outside its scratch space was written.
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "edited").exists()
    assert source.read_text() == (HOMEWORK / HW1).read_text(encoding="utf-8")


@pytest.mark.skipif(not JAILED, reason="needs the bubblewrap jail")
def test_killing_the_parent_does_not_reach_the_grader(tmp_path):
    sub = submission_with(HW1, fixture_cells("kill_parent.cells"), tmp_path / "kill.ipynb")
    done = cli("grade", str(HOMEWORK / HW1), str(sub), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Score: 10/10"


def test_malformed_and_missing_submissions(tmp_path):
    malformed = tmp_path / "malformed.ipynb"
    malformed.write_bytes((FIXTURES / "malformed.ipynb.txt").read_bytes())
    with pytest.raises(ValueError, match="it is not JSON"):
        answers_from_bytes(malformed.read_bytes(), ".ipynb")
    done = cli("grade", str(HOMEWORK / HW1), str(malformed))
    assert done.returncode == 2
    assert "not a readable notebook" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    done = cli("grade", str(HOMEWORK / HW1), str(tmp_path / "nothing.ipynb"))
    assert done.returncode == 2
    assert "does not exist" in done.stdout + done.stderr
    binary = tmp_path / "binary.ipynb"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ValueError, match="not UTF-8"):
        answers_from_bytes(binary.read_bytes(), ".ipynb")


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def test_cli_release_then_grade_single(tmp_path):
    done = cli("release", str(HOMEWORK / HW1), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    student = tmp_path / "out" / "hw1_softmax.ipynb"
    assert student.is_file()
    out = tmp_path / "r.json"
    done = cli("grade", str(HOMEWORK / HW1), str(student), "--json", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[1].split() == ["Question", "Earned", "Possible", "Reason"]
    assert re.match(r"q1\s+0\s+3\s+random batch: raised NotImplementedError", lines[2])
    assert lines[-1] == "Score: 0/10"
    data = json.loads(out.read_text())
    assert data["score"] == 0 and data["max_score"] == 10 and len(data["questions"]) == 4


def test_cli_grades_a_class_folder(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    submission_with(HW1, {}, folder / "ada.ipynb")
    release(HOMEWORK / HW1, folder / "bob")  # bob/hw1_softmax.ipynb, untouched
    submission_with(HW1, WRONG[HW1][0], folder / "cy.ipynb")
    (folder / "dee.ipynb").write_bytes((FIXTURES / "malformed.ipynb.txt").read_bytes())
    submission_with(HW1, fixture_cells("exit_kernel.cells"), folder / "eve.ipynb")
    book = tmp_path / "gradebook.csv"
    done = cli("grade", str(HOMEWORK / HW1), str(folder), "--jobs", "2", "--csv", str(book))
    assert done.returncode == 0, done.stderr
    with book.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["submission", "q1", "q2", "q3", "q4", "total", "max", "status", "reason"]
    table = {r["submission"]: r for r in rows}
    assert set(table) == {"ada.ipynb", "bob/hw1_softmax.ipynb", "cy.ipynb", "dee.ipynb", "eve.ipynb"}
    assert [table[s]["total"] for s in sorted(table)] == ["10", "0", "7", "0", "3"]
    assert (
        table["dee.ipynb"]["status"] == "error" and "not a readable notebook" in table["dee.ipynb"]["reason"]
    )
    assert table["cy.ipynb"]["q1"] == "0" and "q1:" in table["cy.ipynb"]["reason"]
    assert all(r["max"] == "10" for r in rows)
    assert "5 submissions graded" in done.stdout


def test_cli_check_and_assignment_errors(tmp_path):
    done = cli("check", str(HOMEWORK / HW1), "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: the solution scores full marks" in done.stdout
    bad = tmp_path / "bad.md"
    bad.write_text(
        (HOMEWORK / HW1)
        .read_text(encoding="utf-8")
        .replace("    return e / e.sum(axis=-1, keepdims=True)\n", "    return undefined_name\n", 1),
        encoding="utf-8",
    )
    done = cli("grade", str(bad), str(submission_with(HW1, {}, tmp_path / "s.ipynb")))
    assert done.returncode == 3
    assert "the solution of q1 fails random batch: NameError" in done.stderr


# --------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------

SETUP = ["import numpy as np\nimport ce_lib as ce\nfrom ce_lib import functional as F\n"]


@pytest.mark.parametrize(
    "answer",
    [
        "def softmax(z):\n    return ce.softmax(z)",
        "import ce_lib\nf = ce_lib.softmax",
        "import ce_lib.functional\nf = ce_lib.functional.softmax",
        "from ce_lib import softmax as s",
        "from ce_lib.functional import softmax",
        "g = F.softmax",
        "import ce_lib as lib\nh = getattr(lib, 'softmax')",
        "%matplotlib inline\ndef softmax(z):\n    return ce.softmax(z)",
    ],
)
def test_static_rule_finds_the_reference(answer):
    from ce_grader.static import transform

    dotted, attrs = grader.forbidden_targets(["ce_lib.softmax"])
    found = find_forbidden([("answer cell 1 of q1", transform(answer))], SETUP, dotted, attrs)
    assert found is not None and "ce_lib" in found and "softmax" in found


@pytest.mark.parametrize(
    "answer",
    [
        "def softmax(z):\n    e = np.exp(z - z.max())\n    return e / e.sum()\ny = softmax(np.ones(3))",
        "x = ce.log_softmax(np.ones(3))",
        "def f(m):\n    return m.softmax",
        "x = 'ce.softmax is not allowed'",
    ],
)
def test_static_rule_lets_honest_code_through(answer):
    dotted, attrs = grader.forbidden_targets(["ce_lib.softmax"])
    assert find_forbidden([("cell", answer)], SETUP, dotted, attrs) is None


def test_strip_solutions_keeps_indentation_and_rejects_bad_markers():
    src = "def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\ny = 1"
    out, n = strip_solutions(src)
    assert n == 1
    assert out == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError\ny = 1"
    assert strip_solutions("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")[0].endswith(
        "raise NotImplementedError"
    )
    for bad in [
        "# BEGIN SOLUTION\nx",
        "x\n# END SOLUTION",
        "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION",
    ]:
        with pytest.raises(AssignmentError):
            strip_solutions(bad)


def test_source_markup_errors(tmp_path):
    text = (HOMEWORK / HW1).read_text(encoding="utf-8")
    cases = {
        "  points: 3\n": ("  points: 0\n", "points must be a positive number"),
        "  forbid: [ce_lib.softmax_jacobian]": ("  forbid: [numpy.exp]", "not a public ce_lib function"),
        "    # END SOLUTION\n": ("\n", "BEGIN SOLUTION without END SOLUTION"),
        'check("smooth_max(z, tau)", z=np.zeros((1, 1000))': (
            'check("smooth_max(z,", z=np.zeros((1, 1000))',
            "SyntaxError",
        ),
    }
    for old, (new, message) in cases.items():
        assert old in text, old
        path = tmp_path / "a.md"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(AssignmentError, match=message):
            load_assignment(path)


def test_compare_values():
    assert compare_values(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-12]), 1e-7, 0) is None
    assert "shape" in compare_values(np.ones(3), np.ones((1, 3)), 1e-7, 0)
    assert "differ" in compare_values(np.array([np.nan]), np.array([1.0]), 1e-7, 0)
    assert compare_values(np.array([np.nan, np.inf]), np.array([np.nan, np.inf]), 1e-7, 0) is None
    assert "wrong value" in compare_values(np.array(3), np.array(2), 0, 0)
    assert compare_values(np.array(2, dtype=np.int32), np.array(2), 0, 0) is None
    # a right-looking value of the wrong kind or precision is wrong (threat model, class 10)
    assert "dtype" in compare_values(np.array(2.0), np.array(2), 0, 0)
    assert "less precise" in compare_values(np.float32([1.0, 2.0]), np.array([1.0, 2.0]), 1e-3, 0)
    assert "dtype" in compare_values(np.array([1.0 + 0j]), np.array([1.0]), 1e-7, 0)
    assert "dtype" in compare_values(np.array([True]), np.array([1]), 0, 0)
    assert "not a number" in compare_values(np.array(["a"]), np.array([1.0]), 0, 0)


def test_check_records_in_grader_and_runs_in_notebooks():
    with recording() as checks:
        assert check("f(x)", x=np.arange(3), rtol=1e-3, name="n") is None
    assert len(checks) == 1 and checks[0].name == "n" and checks[0].inputs["x"].tolist() == [0, 1, 2]

    def f(x):
        return x * 2

    globals()["f"] = f
    try:
        assert check("f(x)", x=np.arange(3)).tolist() == [0, 2, 4]
        with pytest.raises(AssertionError):
            check("f(x)", x=np.arange(3), expect=[0, 1, 2])
    finally:
        del globals()["f"]
    with pytest.raises(TypeError):
        check("f(x)", x=np.array(["a"]))


def test_import_ce_lib_stays_numpy_only():
    code = (
        "import sys, ce_lib; print(sorted(m for m in sys.modules if m.startswith('ce_grader')"
        " or m.split('.')[0] in ('nbformat', 'jupytext', 'nbclient')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_sources_run_top_to_bottom_in_a_kernel():
    """nbclient: every visible test passes on the solution, and every hidden check in notebook mode."""
    for name in ASSIGNMENTS:
        execute_source(HOMEWORK / name, timeout=120)


MINI = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Mini

```{code-cell} ipython3
:tags: [setup]

import numpy as np
```

Question a (1 point). Explain, then code.

<!-- BEGIN SOLUTION -->
Because the secret reason.
<!-- END SOLUTION -->

```{code-cell} ipython3
---
tags: [answer, solution]
homework:
  question: a
---
def double(x):
    return 2 * x
```

```{code-cell} ipython3
---
tags: [hidden-tests]
homework:
  question: a
  points: 1
NEEDS
---
from ce_grader import check
check("double(x)", x=np.arange(4), name="doubles")
check("double(1.5)", expect=3.0)
```
"""


def test_markdown_solutions_solution_cells_and_needs(tmp_path):
    src = tmp_path / "mini.md"
    src.write_text(MINI.replace("NEEDS\n", ""), encoding="utf-8")
    student = release(src, tmp_path / "out")
    nb = nbformat.read(student, as_version=4)
    text = student.read_text(encoding="utf-8")
    assert "secret reason" not in text and "2 * x" not in text
    assert "_Type your answer here._" in text
    answer = next(c for c in nb.cells if "answer" in c.metadata.get("tags", []))
    assert answer.source.endswith("raise NotImplementedError")
    assignment = load_assignment(src)
    ref = grader.compute_reference(assignment, LIMITS)
    assert [v.tolist() for v in ref["a"]] == [[0, 2, 4, 6], 3.0]
    assert grader.grade_submission(assignment, student, reference=ref, limits=LIMITS).score == 0
    for needs, message in [("  needs: [zz]\n", "unknown question"), ("  needs: [a]\n", "cycle")]:
        src.write_text(MINI.replace("NEEDS\n", needs), encoding="utf-8")
        with pytest.raises(AssignmentError, match=message):
            load_assignment(src)
