"""Grade a generated class with the real command line: submissions per minute and the grader's memory.

    python benchmarks/grade_class.py                        # 100 students of hw1, --jobs 2
    python benchmarks/grade_class.py --students 20 --jobs 1 --out /tmp/class --json result.json
    python benchmarks/grade_class.py --assignment homework/hw3_mse_vs_ce.md --students 30

The benchmark writes ``--students`` submissions of one assignment into a folder,
deterministically (``--seed``): a mix of the instructor's solution, the blank
release, plausible wrong answers, questions left unanswered, answers that raise
and one answer that never returns (it runs into the cell time limit). Each kind
has a known score, question by question. Then it runs, once,

    python -m ce_grader grade SOURCE.md FOLDER --csv FILE --json FILE --jobs N

and measures

* the wall time of that one command (start of Python to exit: the reference
  run of the solution and the whole class), and submissions per minute;
* the grader's own peak memory, the larger of two readings: ``VmHWM`` (and
  ``VmRSS``) of the grader's process, read from ``/proc/<pid>/status`` every
  50 ms by a thread until the process exits (the command line restarts itself
  with ``python -I`` in the same process, so the pid does not change), and
  ``ru_maxrss`` from ``wait4`` when it exits (the kernel's count, which misses
  no peak between samples; it also covers the outer ``bwrap`` processes, a few
  MiB, but not the jailed ones: their usage is not passed on past ``bwrap``'s
  PID namespace);
* the largest jailed Python process seen by the same thread (its ``VmHWM`` at
  the last sample, so a peak in the last 50 ms of a run can be missed);
* how long start-up and the reference run took: when the first submission's
  line was printed, less that submission's own seconds from the grader's report.

Then it reads the gradebook and stops with an error unless every submission got
exactly its expected points in every question: a benchmark that grades wrongly
measures nothing. Times are printed (and compared with the goal of issue 14: a
class of 100 in 5 minutes with ``--jobs 2``, the grader under 500 MiB) as
ratios, never asserted.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from ce_grader.notebook import Assignment, load_assignment

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS_PER_100 = 300.0
GOAL_MIB = 500.0
POLL_SECONDS = 0.05

#: Share of the class per kind (``loops`` is always exactly one student, ``full`` takes the rest).
SHARES = {"wrong": 0.20, "unanswered": 0.15, "blank": 0.10, "raises": 0.06}

KIND_TEXT = {
    "full": "the instructor's solution",
    "wrong": "plausible wrong answers (a known variant per assignment)",
    "unanswered": "one question left as the release's stub (NotImplementedError)",
    "blank": "the untouched release",
    "raises": "one answer raises (inside the function, or an import that fails before the def)",
    "loops": "one answer never returns (runs into the cell time limit)",
}

#: Plausible wrong answers, per assignment: (what it is, answer cells, the questions that lose their points).
WRONG: dict[str, list[tuple[str, dict[str, str], set[str]]]] = {
    "hw1_softmax.md": [
        (
            "softmax without the max shift",
            {
                "q1": "def softmax(z):\n    e = np.exp(np.asarray(z, dtype=float))\n"
                "    return e / e.sum(axis=-1, keepdims=True)\n"
            },
            {"q1"},
        ),
        (
            "smooth max without the max shift",
            {
                "q3": "def smooth_max(z, tau):\n    z = np.asarray(z, dtype=float)\n"
                "    return tau * np.log(np.sum(np.exp(z / tau), axis=-1))\n"
            },
            {"q3"},
        ),
        (
            "JVP through the explicit Jacobians (MemoryError at 20 000 classes)",
            {
                "q4": "def softmax_jvp(z, v):\n    p = ce.softmax(np.asarray(z, dtype=float), axis=-1)\n"
                "    J = p[:, :, None] * (np.eye(p.shape[-1]) - p[:, None, :])\n"
                '    return np.einsum("nij,nj->ni", J, v)\n'
            },
            {"q4"},
        ),
        (
            "Jacobian from the forbidden reference",
            {"q2": "def softmax_jacobian(z):\n    return ce.softmax_jacobian(z)\n"},
            {"q2"},
        ),
    ],
    "hw2_cross_entropy.md": [
        (
            "cross-entropy through log(softmax)",
            {
                "q1": "def cross_entropy(z, y):\n"
                "    return -np.mean(np.log(ce.softmax(z)[np.arange(len(y)), y]))\n"
            },
            {"q1"},
        )
    ],
    "hw3_mse_vs_ce.md": [
        (
            "BCE gradient without the mean",
            {"q2": "def grad_z_bce(z, y):\n    return ce.sigmoid(np.asarray(z, dtype=float)) - y\n"},
            {"q2"},
        )
    ],
    "hw4_hinge_to_softmax.md": [
        (
            "softplus that overflows",
            {"q3": "def softplus(x):\n    return np.log(1 + np.exp(np.asarray(x, dtype=float)))\n"},
            {"q3"},
        )
    ],
    "hw5_stability_label_smoothing.md": [
        (
            "loss floor with log(0) at eps = 0",
            {
                "q5": "def ls_loss_floor(C, eps):\n    q = np.full(C, eps / C)\n    q[0] += 1 - eps\n"
                "    return float(-np.sum(q * np.log(q)))\n"
            },
            {"q5"},
        )
    ],
}


@dataclass
class Student:
    """One generated submission and the points it must earn."""

    name: str
    kind: str
    detail: str
    replacements: dict[str, str] | None  # None: the blank release as written by the command line
    expected: dict[str, float]


@dataclass
class Measurement:
    """What one run of the command line cost."""

    returncode: int
    wall_seconds: float
    first_line_seconds: float | None  # when the first submission's line was printed
    first_line_name: str = ""  # and which submission it was
    grader_hwm_kib: int = 0
    grader_rss_kib: int = 0
    child_hwm_kib: int = 0
    child_runs_seen: int = 0
    wait4_maxrss_kib: int = 0
    samples: int = 0


# --------------------------------------------------------------------------
# The class
# --------------------------------------------------------------------------


def answer_sources(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The first answer cell of each question in a notebook."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        qid = cell.metadata.get("homework", {}).get("question")
        if "answer" in cell.metadata.get("tags", []) and qid is not None:
            found.setdefault(qid, cell.source)
    return found


def build_submission(
    assignment: Assignment, replacements: dict[str, str], header: str
) -> nbformat.NotebookNode:
    """The solution notebook without hidden tests, some answer cells replaced, a first Markdown cell added.

    Parameters
    ----------
    assignment : Assignment
        The parsed source (its notebook holds the solutions).
    replacements : dict of str to str
        Question id to the source of its (first) answer cell; later answer cells of that question go.
    header : str
        Text of a Markdown cell put first, so that no two submissions are the same file.

    Returns
    -------
    nbformat.NotebookNode
    """
    nb = copy.deepcopy(assignment.notebook)
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
    if done != set(replacements):
        raise ValueError(f"{assignment.path.name} has no answer cell for {sorted(set(replacements) - done)}")
    nb.cells = [nbformat.v4.new_markdown_cell(header), *cells]
    nb.metadata.pop("jupytext", None)
    return nb


def affected(assignment: Assignment, qids: set[str]) -> set[str]:
    """The questions that lose their points when the answers of ``qids`` fail.

    They, and every question that runs their answer cells first (``needs``, transitively).
    """
    lost = set(qids)
    changed = True
    while changed:
        changed = False
        for q in assignment.questions.values():
            if q.id not in lost and lost & set(q.needs):
                lost.add(q.id)
                changed = True
    return lost


def _replace_stub_line(stub: str, body: str) -> str:
    """The release's stub with its ``raise NotImplementedError`` line replaced by ``body`` (same indent)."""
    lines = stub.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "raise NotImplementedError":
            indent = line[: len(line) - len(line.lstrip())]
            lines[i : i + 1] = [indent + b for b in body.splitlines()]
            return "\n".join(lines) + "\n"
    raise ValueError(f"the release's stub has no 'raise NotImplementedError' line:\n{stub}")


def _first_def(source: str) -> str | None:
    tree = ast.parse(source)
    return next((n.name for n in tree.body if isinstance(n, ast.FunctionDef)), None)


def plan_class(assignment: Assignment, stubs: dict[str, str], n: int, seed: int) -> list[Student]:
    """``n`` students: kinds in the proportions of :data:`SHARES`, shuffled with ``seed``.

    Parameters
    ----------
    assignment : Assignment
        The parsed source.
    stubs : dict of str to str
        The release's answer cell of each question.
    n : int
        Class size.
    seed : int
        Seed of every random choice (kinds' order, which question, which variant).

    Returns
    -------
    list of Student
        Named ``student_000.ipynb`` and on, in the shuffled order.
    """
    rng = random.Random(seed)
    points = {q.id: float(q.points) for q in assignment.questions.values()}
    answered = [q for q in assignment.questions if q in stubs]
    wrong = WRONG.get(assignment.path.name, [])
    counts = {kind: round(share * n) for kind, share in SHARES.items()}
    if not wrong:
        counts["unanswered"] += counts.pop("wrong")
    counts["loops"] = 1
    while sum(counts.values()) > n:  # tiny classes: drop from the largest kinds
        counts[max(counts, key=counts.get)] -= 1
    kinds = ["full"] * (n - sum(counts.values())) + [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(kinds)

    def losing(qids: set[str]) -> dict[str, float]:
        lost = affected(assignment, qids)
        return {q: 0.0 if q in lost else p for q, p in points.items()}

    students = []
    for i, kind in enumerate(kinds):
        name = f"student_{i:03d}.ipynb"
        if kind == "full":
            students.append(Student(name, kind, "solution", {}, dict(points)))
        elif kind == "blank":
            students.append(Student(name, kind, "release", None, {q: 0.0 for q in points}))
        elif kind == "wrong":
            what, cells, lost = wrong[rng.randrange(len(wrong))]
            students.append(Student(name, kind, what, cells, losing(lost)))
        else:
            qid = rng.choice(answered)
            if kind == "unanswered":
                cells, what = {qid: stubs[qid]}, f"{qid} left unanswered"
            elif kind == "loops":
                cells, what = {qid: _replace_stub_line(stubs[qid], "while True:\n    pass")}, f"{qid} loops"
            elif rng.random() < 0.5:
                body = 'raise IndexError("index 3 is out of bounds for axis 0 with size 3")'
                cells, what = {qid: _replace_stub_line(stubs[qid], body)}, f"{qid} raises IndexError"
            else:
                solution = assignment.questions[qid].solution[0]
                missing = "import torch_helpers  # a module the jail does not have\n"
                fn = _first_def(solution)
                what = f"{qid}: import fails before " + (f"def {fn}" if fn else "the answer")
                cells = {qid: missing + solution}
            students.append(Student(name, kind, what, cells, losing({qid})))
    return students


def write_class(assignment: Assignment, students: list[Student], release_bytes: bytes, folder: Path) -> None:
    """Write every student's notebook into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in students:
        if s.replacements is None:
            (folder / s.name).write_bytes(release_bytes)
            continue
        header = f"Submitted by {s.name.removesuffix('.ipynb')}."
        nbformat.write(build_submission(assignment, s.replacements, header), folder / s.name)


# --------------------------------------------------------------------------
# Measuring one run of the command line
# --------------------------------------------------------------------------


def _status_kib(pid: int) -> dict[str, int] | None:
    """``VmHWM`` and ``VmRSS`` of a process in KiB; ``None`` once it has exited (or is a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values if "VmHWM" in values else None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children are listed per thread, so every thread is asked)."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                found.append(kid)
                stack.append(kid)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class _Poller(threading.Thread):
    """Samples the grader's memory, and its jailed Python processes', every ``POLL_SECONDS`` until exit."""

    def __init__(self, pid: int, result: Measurement):
        super().__init__(daemon=True)
        self.pid, self.result = pid, result
        self.stop = threading.Event()
        self.children: set[int] = set()

    def run(self) -> None:
        r = self.result
        while not self.stop.is_set():
            own = _status_kib(self.pid)
            if own is None:
                return  # exited: the last sample is at most POLL_SECONDS old
            r.samples += 1
            r.grader_hwm_kib = max(r.grader_hwm_kib, own["VmHWM"])
            r.grader_rss_kib = max(r.grader_rss_kib, own.get("VmRSS", 0))
            for kid in _descendants(self.pid):
                if not _comm(kid).startswith("python"):
                    continue  # bwrap itself
                status = _status_kib(kid)
                if status is not None:
                    self.children.add(kid)
                    r.child_hwm_kib = max(r.child_hwm_kib, status["VmHWM"])
            r.child_runs_seen = len(self.children)
            self.stop.wait(POLL_SECONDS)


def run_grader(argv: list[str], out_dir: Path) -> Measurement:
    """Run the command line once: its wall time, when its first line came, and its memory.

    Parameters
    ----------
    argv : list of str
        The whole command.
    out_dir : Path
        Where its output goes (``grader-stdout.txt``, ``grader-stderr.txt``).

    Returns
    -------
    Measurement
    """
    with (out_dir / "grader-stderr.txt").open("wb") as err, (out_dir / "grader-stdout.txt").open("w") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        result = Measurement(returncode=-1, wall_seconds=0.0, first_line_seconds=None)
        poller = _Poller(proc.pid, result)
        poller.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            if result.first_line_seconds is None and line.startswith("student_"):
                result.first_line_seconds = time.monotonic() - start
                result.first_line_name = line.partition(":")[0]
            out.write(line)
        _, status, usage = os.wait4(proc.pid, 0)
        result.wall_seconds = time.monotonic() - start
        proc.returncode = result.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        poller.stop.set()
        poller.join()
    result.wait4_maxrss_kib = usage.ru_maxrss  # KiB on Linux
    return result


# --------------------------------------------------------------------------
# Checking the gradebook
# --------------------------------------------------------------------------


def check_gradebook(path: Path, assignment: Assignment, students: list[Student]) -> list[str]:
    """Every difference between the gradebook and the expected points (empty when it is right)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    problems = []
    if set(rows) != {s.name for s in students}:
        extra, missing = set(rows) - {s.name for s in students}, {s.name for s in students} - set(rows)
        problems.append(
            f"gradebook rows differ from the class: extra {sorted(extra)}, missing {sorted(missing)}"
        )
    for s in students:
        row = rows.get(s.name)
        if row is None:
            continue
        got = {q: float(row[q]) for q in assignment.questions}
        if row["status"] != "graded" or got != s.expected or float(row["total"]) != sum(s.expected.values()):
            problems.append(
                f"{s.name} ({s.kind}: {s.detail}): expected {s.expected}, got {got}, total {row['total']}, "
                f"status {row['status']}, reason {row['reason']!r}"
            )
    return problems


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--assignment",
        type=Path,
        default=ROOT / "homework" / "hw1_softmax.md",
        help="assignment source (default homework/hw1_softmax.md)",
    )
    p.add_argument("--students", type=int, default=100, help="class size (default 100)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs of the grader (default 2)")
    p.add_argument("--seed", type=int, default=14, help="seed of the class (default 14)")
    p.add_argument(
        "--out", type=Path, help="keep the class, gradebook and reports here (default: a temporary folder)"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.students < 1 or args.jobs < 1:
        p.error("--students and --jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.assignment.resolve()
    assignment = load_assignment(source)
    work = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="grade_class_"))
    folder = work / "class"
    if folder.exists() and any(folder.iterdir()):
        print(f"error: {folder} is not empty; choose another --out", file=sys.stderr)
        return 2
    try:
        return _bench(args, source, assignment, work, folder)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, source: Path, assignment: Assignment, work: Path, folder: Path) -> int:
    py = sys.executable
    released = work / "release"
    done = subprocess.run(
        [py, "-m", "ce_grader", "release", str(source), "--out", str(released)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(f"error: the release failed:\n{done.stderr}", file=sys.stderr)
        return 1
    release_path = released / f"{assignment.name}.ipynb"
    release_bytes = release_path.read_bytes()
    stubs = answer_sources(nbformat.reads(release_bytes.decode("utf-8"), as_version=4))
    students = plan_class(assignment, stubs, args.students, args.seed)
    write_class(assignment, students, release_bytes, folder)

    mix = Counter(s.kind for s in students)
    shown_source = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    print(f"{shown_source}: {len(students)} submissions (seed {args.seed}, {assignment.max_points:g} points)")
    print(f"in {folder}" + ("" if args.out else " (removed at the end; --out keeps it)"))
    for kind in KIND_TEXT:
        if mix[kind]:
            details = Counter(s.detail for s in students if s.kind == kind)
            shown = "; ".join(f"{d} x{c}" for d, c in sorted(details.items()))
            print(f"  {mix[kind]:4d} {kind:<11} {KIND_TEXT[kind]}: {shown}")

    gradebook, report = work / "gradebook.csv", work / "reports.json"
    argv = [py, "-m", "ce_grader", "grade", str(source), str(folder), "--csv", str(gradebook)]
    argv += ["--json", str(report), "--jobs", str(args.jobs)]
    load_before = _loadavg()
    print(f"running: python -m ce_grader grade ... --jobs {args.jobs}  (load average {load_before})")
    m = run_grader(argv, work)
    load_after = _loadavg()
    if m.returncode != 0:
        err = (work / "grader-stderr.txt").read_text(errors="replace")
        print(f"error: the grader exited with {m.returncode}:\n{err[-3000:]}", file=sys.stderr)
        return 1
    problems = check_gradebook(gradebook, assignment, students)
    if problems:
        print(
            f"error: {len(problems)} submissions graded wrongly; these numbers measure nothing:",
            file=sys.stderr,
        )
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(
        f"gradebook checked: all {len(students)} submissions got exactly their expected points per question"
    )

    seconds = {r["submission"]: r["seconds"] for r in json.loads(report.read_text())}
    per_kind = {
        kind: sum(seconds[s.name] for s in students if s.kind == kind) / mix[kind]
        for kind in KIND_TEXT
        if mix[kind]
    }
    n, mib = len(students), 1 / 1024
    rate = 60 * n / m.wall_seconds
    per_100 = m.wall_seconds * 100 / n
    peak = max(m.grader_hwm_kib, m.wait4_maxrss_kib) * mib
    first = m.first_line_seconds
    start = first - seconds[m.first_line_name] if first is not None and m.first_line_name in seconds else None
    print()
    print(f"{'students':>8}  {'jobs':>4}  {'wall s':>7}  {'submissions/min':>15}  {'grader peak MiB':>15}")
    print(f"{n:>8}  {args.jobs:>4}  {m.wall_seconds:>7.1f}  {rate:>15.1f}  {peak:>15.1f}")
    scaled = (
        "" if n == 100 else f" (scaled linearly to 100 students: {per_100:.1f} s; rough for a small class)"
    )
    print(
        f"goal (100 students in {GOAL_SECONDS_PER_100:g} s, grader under {GOAL_MIB:g} MiB): "
        f"time {per_100 / GOAL_SECONDS_PER_100:.2f}{scaled}, memory {peak / GOAL_MIB:.2f}"
    )
    print()
    if start is not None:
        print(
            f"start-up and reference run: {start:.1f} s (first line printed at {first:.1f} s, "
            f"less {m.first_line_name}'s own {seconds[m.first_line_name]:.1f} s)"
        )
    print(
        f"grader: VmHWM {m.grader_hwm_kib * mib:.1f} MiB, VmRSS at most {m.grader_rss_kib * mib:.1f} MiB "
        f"({m.samples} samples, every {POLL_SECONDS * 1000:g} ms); "
        f"wait4 ru_maxrss {m.wait4_maxrss_kib * mib:.1f} MiB"
    )
    print(
        f"largest jailed Python process seen: {m.child_hwm_kib * mib:.1f} MiB VmHWM "
        f"({m.child_runs_seen} processes sampled)"
    )
    print("mean seconds per submission (the grader's own clock, --jobs at a time):")
    for kind, mean in per_kind.items():
        print(f"  {kind:<11} {mean:6.2f}")
    print(f"load average before {load_before}, after {load_after}; {os.cpu_count()} CPUs, {_cpu()}")

    if args.json:
        data = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "machine": {"cpu": _cpu(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "assignment": assignment.path.name,
            "students": n,
            "jobs": args.jobs,
            "seed": args.seed,
            "mix": dict(mix),
            "correct": True,
            "wall_seconds": round(m.wall_seconds, 2),
            "startup_and_reference_seconds": None if start is None else round(start, 2),
            "submissions_per_minute": round(rate, 2),
            "grader_peak_mib": round(peak, 1),
            "grader_vmhwm_mib": round(m.grader_hwm_kib * mib, 1),
            "grader_wait4_maxrss_mib": round(m.wait4_maxrss_kib * mib, 1),
            "grader_peak_vmrss_mib": round(m.grader_rss_kib * mib, 1),
            "largest_jailed_python_vmhwm_mib": round(m.child_hwm_kib * mib, 1),
            "mean_seconds_per_submission": {k: round(v, 3) for k, v in per_kind.items()},
            "goal_ratio_time": round(per_100 / GOAL_SECONDS_PER_100, 3),
            "goal_ratio_memory": round(peak / GOAL_MIB, 3),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
