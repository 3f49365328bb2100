"""Hostile submissions against the real command line, judged only by outcome (issue 14).

Every file in ``tests/grader_attacks/`` is one attack on ``homework/hw1_softmax.md``
(q1 3, q2 3, q3 2, q4 2 points), with a header that names its threat-model class
(``/work/shared/homework/threat-model.md``), says what it tries and what the honest
outcome is. The attacks and three honest classmates go into one class folder, which
``python -m ce_grader grade`` grades once per isolation mode (``--jobs 2``). The tests
then look only at what an instructor would see or suffer:

* every row of the gradebook: the exact honest score of each attacker (what its honest
  parts deserve, usually 0 for the attacked question) and of each classmate, the
  status, and a reason whenever points are lost;
* the grader itself: exit status, wall time, peak memory of everything it started;
* the gradebook's bytes, the console and the feedback files: one row per submission,
  one printable line per value, no cell a spreadsheet would run as a formula, nothing
  that tells a student a hidden input;
* every file: the workspace (the folder, the source the grader reads, sentinels at
  guessable paths) is unchanged but for the gradebook and feedback, and no file an
  attack plants (named ``PWNED-*``) exists anywhere it tried to write;
* processes: none left behind (this process becomes a child subreaper, so that any
  orphan of the grader is re-parented here and found);
* a later, independent grading run gives the honest classmates the same scores.

An attack that detects its own success in a way the score would not show raises
``ATTACK-SUCCEEDED`` in its answer cell (with a wrong answer, so that the message reaches
the report); that marker must appear nowhere.

Attacks get the paths a real student could guess (the repository is public, the folder
layout is the instructor's habit): placeholders such as ``@@SOURCE@@`` are replaced by
this workspace's paths. They never get secrets.

The grader offers three isolation modes, and each grades the class once:

* ``jail`` (bubblewrap, the default): every attack.
* ``landlock`` (the fallback when no bubblewrap works; chosen here by naming a bwrap
  that does not exist): the attacks of classes 1 to 5 and 9, which Landlock and the
  seccomp filter must stop without namespaces. Classes 6 to 8 and 10 go through the
  same code in every mode (frame reader, inspector, output escaping, comparison) and
  are run in the two other modes.
* ``unsafe`` (``--unsafe-no-jail``): the attacks of classes 5 to 8 and 10, which the
  seccomp filter, the resource limits, the frame reader and the output escaping must
  stop on their own. It does NOT protect against classes 1 to 4: the student's code
  runs as the instructor, with every file the instructor can read or write in reach
  (the filter only keeps it from starting processes or signalling the grader), so
  those attacks are not run there.

A mode this machine cannot provide is skipped, except under ``CI=true``, where its tests
fail with the reason.
"""

from __future__ import annotations

import ast
import csv
import ctypes
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest

from ce_grader.jail import jail_problem, landlock_problem

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "homework" / "hw1_softmax.md"
ATTACKS = Path(__file__).parent / "grader_attacks"
POINTS = {"q1": 3.0, "q2": 3.0, "q3": 2.0, "q4": 2.0}
MAX = sum(POINTS.values())
LIMITS = ["--cell-timeout", "2", "--timeout", "60", "--jobs", "2"]
MARK = "ATTACK-SUCCEEDED"
MODES = ["jail", "landlock", "unsafe"]  # the isolation modes the grader offers, strongest first
RUN_SECONDS = 240  # a whole class; the runs stay far below it (see the per-submission bounds)
ROW_SECONDS = 65.0  # one submission: --timeout 60, plus the time to start and stop its processes
PEAK_MB = 1700  # the memory limit of a run (--memory, 1536 MB by default), plus the grader's own
HONEST = {
    # name: (points per question, reason expected)
    "ada.ipynb": ({"q1": 3, "q2": 3, "q3": 2, "q4": 2}, False),  # the solution
    "bob.ipynb": ({"q1": 0, "q2": 0, "q3": 0, "q4": 0}, True),  # the blank release
    "cy.ipynb": ({"q1": 0, "q2": 3, "q3": 2, "q4": 2}, True),  # a softmax that overflows
}
OVERFLOWING_SOFTMAX = """def softmax(z):
    e = np.exp(np.asarray(z, dtype=float))
    return e / e.sum(axis=-1, keepdims=True)
"""
UNSAFE_CHARS = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One file of ``tests/grader_attacks``: how to build the submission and its honest outcome."""

    stem: str
    klass: str
    tries: str
    expect: dict[str, float]
    status: str = "graded"
    reason: str = ""
    modes: tuple[str, ...] = ("jail",)
    build: tuple[str, ...] = ("cells",)
    grow: tuple[str, ...] = ()
    name: str = ""
    seconds: float = ROW_SECONDS
    notebook_metadata: dict | None = None
    sections: tuple[tuple[str, dict | None, str], ...] = ()
    plant: str = ""
    refusal: str = ""
    also: tuple[dict[str, float], str] | None = None

    @property
    def file_name(self) -> str:
        return self.name or (self.stem if self.build[0] == "symlink-folder" else f"{self.stem}.ipynb")

    @property
    def total(self) -> float:
        return sum(self.expect.values())


def parse_attack(path: Path) -> Attack:
    """An attack from its file: ``# key: value`` header lines, then ``# %% section`` parts."""
    text = path.read_text(encoding="utf-8")
    head, _, _ = text.partition("\n# %% ")
    fields: dict[str, str] = {}
    key = None
    for line in head.splitlines():
        m = re.match(r"^# ([a-z-]+): (.*)$", line)
        if m:
            key = m.group(1)
            fields[key] = m.group(2)
        elif line.startswith("#   ") and key:
            fields[key] += " " + line[4:]
    sections = []
    parts = re.split(r"^# %% (\S+)(?: (.*))?\n", text, flags=re.MULTILINE)
    for i in range(1, len(parts), 3):
        meta = json.loads(parts[i + 1]) if parts[i + 1] else None
        sections.append((parts[i], meta, parts[i + 2]))
    expect = {q: float(v) for q, v in (item.split("=") for item in fields.get("expect", "").split())}
    return Attack(
        stem=path.stem,
        klass=fields["class"],
        tries=fields["tries"],
        expect=expect,
        status=fields.get("status", "graded"),
        reason=fields.get("reason", ""),
        modes=tuple(fields.get("modes", "jail").split()),
        build=tuple(fields.get("build", "cells").split()),
        grow=tuple(fields.get("grow", "").split()),
        name=ast.literal_eval(fields["name"]) if "name" in fields else "",
        seconds=float(fields.get("seconds", ROW_SECONDS)),
        notebook_metadata=json.loads(fields["notebook-metadata"]) if "notebook-metadata" in fields else None,
        sections=tuple(sections),
        plant=fields.get("plant", ""),
        refusal=fields.get("refusal", ""),
        also=_alternative(fields["also"]) if "also" in fields else None,
    )


def _alternative(text: str) -> tuple[dict[str, float], str]:
    """``q1=3 q2=0 ... | words``: another exact outcome, accepted when the row's reason has the words."""
    scores, _, words = text.partition("|")
    return {q: float(v) for q, v in (item.split("=") for item in scores.split())}, words.strip()


ALL_ATTACKS = [parse_attack(p) for p in sorted(ATTACKS.glob("*.cells"))]
BY_STEM = {a.stem: a for a in ALL_ATTACKS}


def attacks_for(mode: str) -> list[Attack]:
    return [a for a in ALL_ATTACKS if mode in a.modes]


def test_every_class_is_attacked():
    """At least one attack per class of the threat model, and more for classes 1 to 7."""
    counts = {str(k): 0 for k in range(1, 11)}
    for a in ALL_ATTACKS:
        assert a.klass.split()[0] in counts, f"{a.stem}: unknown class {a.klass!r}"
        assert a.tries, f"{a.stem}: says nothing about what it tries"
        counts[a.klass.split()[0]] += 1
    for k, n in counts.items():
        assert n >= (2 if int(k) <= 7 else 1), f"class {k}: only {n} attack(s)"
    for a in ALL_ATTACKS:  # each row is found by the stem in its (escaped) name
        assert a.stem in a.file_name
        others = [b.stem for b in ALL_ATTACKS if b is not a and a.stem in b.file_name]
        assert not others, f"{a.stem} is part of the names of {others}"
        if set(a.modes) & set(MODES):
            assert set(a.expect) == set(POINTS), a.stem
        assert a.modes and set(a.modes) <= {*MODES, "plant", "single"}, a.stem


# --------------------------------------------------------------------------
# Building submissions
# --------------------------------------------------------------------------


@functools.cache
def _solution() -> dict:
    """The instructor's notebook as a student would hand it in: hidden tests removed."""
    nb = jupytext.read(SOURCE)
    nb.cells = [c for c in nb.cells if "hidden-tests" not in c.metadata.get("tags", [])]
    nb.metadata.pop("jupytext", None)
    return json.loads(nbformat.writes(nb))


def notebook(replacements: dict[str, str]) -> dict:
    """The solution notebook with the answer cells of some questions replaced."""
    nb = json.loads(json.dumps(_solution()))
    done = set()
    for cell in nb["cells"]:
        qid = cell["metadata"].get("homework", {}).get("question")
        if "answer" in cell["metadata"].get("tags", []) and qid in replacements:
            cell["source"] = replacements[qid]
            done.add(qid)
    assert done == set(replacements), f"no answer cell for {set(replacements) - done}"
    return nb


def _grow(nb: dict, qid: str, kind: str, size: int) -> None:
    """Append something huge to a question's answer cell."""
    extra = {
        "magics": lambda: "\n" + "%time x = 1\n" * size,
        "unary": lambda: "\nx = " + "-" * size + "1\n",
        "string": lambda: "\nfiller = '" + "x" * (size * 1_000_000 - 200_000) + "'\n",
    }[kind]()
    for cell in nb["cells"]:
        if (
            cell["metadata"].get("homework", {}).get("question") == qid
            and "answer" in cell["metadata"]["tags"]
        ):
            cell["source"] = "".join(cell["source"]) + extra
            return
    raise AssertionError(f"no answer cell for {qid}")


def attack_notebook(attack: Attack, subst) -> bytes:
    """The bytes of a cells-built attack: the solution with its sections swapped in."""
    answers = {q: subst(src) for q, meta, src in attack.sections if not q.startswith(("+", "raw"))}
    nb = notebook(answers)
    for qid, meta, src in attack.sections:
        if meta is not None and not qid.startswith("+"):
            for cell in nb["cells"]:
                hw = cell["metadata"].get("homework", {})
                if hw.get("question") == qid and "answer" in cell["metadata"].get("tags", []):
                    cell["metadata"] = meta
        elif qid.startswith("+"):
            nb["cells"].append(
                {
                    "cell_type": "code",
                    "metadata": meta or {},
                    "source": subst(src),
                    "outputs": [],
                    "execution_count": None,
                }
            )
    if attack.notebook_metadata is not None:
        nb["metadata"].update(attack.notebook_metadata)
    for i in range(0, len(attack.grow), 3):
        _grow(nb, attack.grow[i], attack.grow[i + 1], int(attack.grow[i + 2]))
    if attack.build[0] == "nested-metadata":
        depth = int(attack.build[1])
        nb["metadata"]["deep"] = "@@DEEP@@"
        return json.dumps(nb).replace('"@@DEEP@@"', '{"a": ' * depth + "0" + "}" * depth).encode()
    return json.dumps(nb, indent=1).encode()


def raw_section(attack: Attack) -> str:
    return next(src for q, _, src in attack.sections if q == "raw")


# --------------------------------------------------------------------------
# The workspace: a class folder, the source, sentinels at guessable paths
# --------------------------------------------------------------------------


class Workspace:
    """Everything one grading run reads and may write, in one temporary folder.

    ``course/homework/hw1_softmax.md`` is the source the grader reads; ``class/`` the
    submissions; ``outside/`` files next to the folder (link targets, a victim file);
    ``home/`` the grader's HOME with start-up files; ``gtmp/`` its TMPDIR; ``out/`` the
    gradebook, JSON report and feedback; ``later/`` the honest classmates again, for a
    later run.
    """

    def __init__(self, root: Path, blank: bytes):
        self.root = root
        self.source = root / "course" / "homework" / "hw1_softmax.md"
        self.folder = root / "class"
        self.outside = root / "outside"
        self.home = root / "home"
        self.gtmp = root / "gtmp"
        self.out = root / "out"
        self.later = root / "later"
        self.gradebook = self.out / "gradebook.csv"
        self.feedback = self.out / "feedback"
        self.report = self.out / "report.json"
        for d in (self.source.parent, self.folder, self.outside / "solution_folder", self.home, self.gtmp):
            d.mkdir(parents=True)
        for d in (self.out, self.later):
            d.mkdir()
        shutil.copyfile(SOURCE, self.source)
        solution = json.dumps(_solution(), indent=1).encode()
        for path in (
            self.outside / "solution.ipynb",
            self.outside / "solution2.ipynb",
            self.outside / "solution_folder" / "solution.ipynb",
        ):
            path.write_bytes(solution)
        (self.outside / "victim.csv").write_text("VICTIM: nothing may write here\n")
        (self.home / ".bashrc").write_text("# the instructor's .bashrc\n")
        (self.home / ".profile").write_text("# the instructor's .profile\n")
        honest = {
            "ada.ipynb": solution,
            "bob.ipynb": blank,
            "cy.ipynb": json.dumps(notebook({"q1": OVERFLOWING_SOFTMAX})).encode(),
        }
        for name, data in honest.items():
            (self.folder / name).write_bytes(data)
            (self.later / name).write_bytes(data)

    def subst(self, attack: Attack):
        paths = {
            "TMP": self.root,
            "SOURCE": self.source,
            "CLASS": self.folder,
            "GRADEBOOK": self.gradebook,
            "FEEDBACK": self.feedback,
            "OUTSIDE": self.outside,
            "HOME": self.home,
            "REPO": ROOT,
            "FIXTURE": attack.stem,
        }

        def apply(text: str) -> str:
            for key, value in paths.items():
                text = text.replace(f"@@{key}@@", str(value))
            return text

        return apply

    def add(self, attack: Attack) -> None:
        """Put one attack into the class folder (link targets must already exist)."""
        path = self.folder / attack.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = attack.build[0]
        target = self.subst(attack)(attack.build[1]) if len(attack.build) > 1 else ""
        if kind in ("symlink", "symlink-folder"):
            path.symlink_to(target)  # relative targets stay relative: a link to a classmate's file
        elif kind == "hardlink":
            os.link(target if target.startswith("/") else self.folder / target, path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "raw":
            path.write_text(raw_section(attack), encoding="utf-8")
        else:
            path.write_bytes(attack_notebook(attack, self.subst(attack)))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CE_GRADER"))}
        env.update(HOME=str(self.home), TMPDIR=str(self.gtmp))
        return env


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> bytes:
    """The student release of hw1, made by the real command."""
    out = tmp_path_factory.mktemp("release")
    done = subprocess.run(
        [sys.executable, "-m", "ce_grader", "release", str(SOURCE), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return (out / "hw1_softmax.ipynb").read_bytes()


# --------------------------------------------------------------------------
# Running the command line and observing everything
# --------------------------------------------------------------------------


@dataclass
class Done:
    """A finished command: status, output, wall time, peak memory of it and its descendants."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = RUN_SECONDS) -> Done:
    """``python -m ce_grader ARGS``; the peak memory comes from wait4 (the grader waits for its children)."""
    logs = cwd.parent / f"{cwd.name}-logs"
    logs.mkdir(exist_ok=True)
    n = len(list(logs.iterdir()))
    out_path, err_path = logs / f"{n}.out", logs / f"{n}.err"
    start = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ce_grader", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            status = -1
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -999
    seconds = time.monotonic() - start
    return Done(
        proc.returncode,
        out_path.read_text(encoding="utf-8", errors="replace"),
        err_path.read_text(encoding="utf-8", errors="replace"),
        seconds,
        usage.ru_maxrss / 1024,
    )


def _become_subreaper(on: bool) -> None:
    """Orphans of the grader's processes are re-parented to this process (Linux), where they are found."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1 if on else 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _proc(pid: str) -> tuple[int, str, str, str]:
    """(parent pid, state, command line, working folder) of a process; empty strings if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            tail = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return -1, "", "", ""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    return int(tail[1]), tail[0].decode(), cmdline, cwd


def leftovers(root: Path) -> list[str]:
    """Processes the run left: descendants of this process, or any process naming the workspace.

    Found processes are killed (by pid: they are this test's own descendants or name its
    workspace) and reaped, so that one failure does not leak into the next run.
    """
    me = os.getpid()
    table = {int(p): _proc(p) for p in os.listdir("/proc") if p.isdigit()}

    def descends(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            pid = table.get(pid, (-1,))[0]
            if pid == me:
                return True
        return False

    found = []
    for pid, (ppid, state, cmdline, cwd) in table.items():
        if pid == me or ppid < 0:
            continue
        if state == "Z":  # dead: an orphan of a killed jail, re-parented here; reaped, not counted
            if ppid == me:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            continue
        if descends(pid) or str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"pid {pid} ({state}) {cmdline[:120]!r} in {cwd}")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            if ppid == me:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
    return found


def _entry(path: Path) -> tuple:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    extra = ""
    if stat.S_ISREG(st.st_mode):
        extra = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        extra = os.readlink(path)
    mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else (st.st_mtime_ns, sorted(os.listdir(path)))
    return kind, st.st_mode, st.st_size, st.st_nlink, mtime, extra


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple]:
    """Every entry under `root` (links not followed, FIFOs not opened): kind, size, links, mtime, hash."""
    result = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            path = here / name
            if path not in skip:
                result[str(path.relative_to(root))] = _entry(path)
    return result


def _hook_folders() -> list[Path]:
    """Folders outside the workspace where an attack may try to plant a file (start-up hooks, caches)."""
    paths = sysconfig.get_paths()
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
    home = Path(os.path.expanduser("~"))
    folders = {
        Path("/"),
        Path("/work"),
        Path("/tmp"),
        Path("/var/tmp"),
        Path("/dev/shm"),
        home,
        home / ".local/lib/python3.11/site-packages",
        ROOT,
        ROOT / "homework",
        ROOT / "ce_lib",
        ROOT / "ce_lib" / "__pycache__",
        ROOT / "ce_grader",
        Path(np.__file__).parent,
        *(Path(paths[k]) for k in ("purelib", "platlib", "stdlib")),
        *(Path(base[k]) for k in ("purelib", "platlib", "stdlib")),
        *(Path(p) for p in sys.path if p),
    }
    return sorted(f for f in folders if f.is_dir())


HOOK_NAMES = ("sitecustomize.py", "usercustomize.py", ".bashrc", ".profile", ".pythonrc.py")


def planted_files(stems: set[str]) -> list[str]:
    """Files that attacks planted outside the workspace; removed once found (they are the attacks' own)."""
    found = []
    for folder in _hook_folders():
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            ours = name.startswith("PWNED-") and any(s in name for s in stems)
            if not ours and name in HOOK_NAMES:
                try:
                    ours = path.is_file() and "PWNED-" in path.read_text(errors="replace")
                except OSError:
                    ours = False
            if ours:
                found.append(str(path))
                try:
                    path.unlink()
                except OSError:
                    pass
    return found


# --------------------------------------------------------------------------
# One graded class per isolation mode
# --------------------------------------------------------------------------


@dataclass
class ClassRun:
    """What grading one class folder did, as seen from outside."""

    mode: str
    ws: Workspace
    attacks: list[Attack]
    done: Done
    rows: list[dict[str, str]] = field(default_factory=list)
    gradebook: bytes = b""
    report: list[dict] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    planted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    gtmp_left: list[str] = field(default_factory=list)
    later: Done | None = None
    later_rows: list[dict[str, str]] = field(default_factory=list)

    def row(self, key: str) -> dict[str, str]:
        """The gradebook row of an honest classmate (exact name) or of an attack (its stem in the name)."""
        if key in HONEST:
            hits = [r for r in self.rows if r["submission"] == key]
        else:
            hits = [r for r in self.rows if key in r["submission"]]
        assert len(hits) == 1, f"{len(hits)} gradebook rows for {key}: {[r['submission'] for r in self.rows]}"
        return hits[0]

    def seconds(self, key: str) -> float:
        hits = [r for r in self.report if key in r["submission"]]
        assert len(hits) == 1, f"{len(hits)} JSON reports for {key}"
        return float(hits[0]["seconds"])


def require(mode: str) -> None:
    """Skip a test whose isolation mode this machine cannot provide; under ``CI=true``, fail instead."""
    problem = {"jail": jail_problem, "landlock": landlock_problem}.get(mode, lambda: None)()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the {mode} isolation must be available under CI: {problem}")
    pytest.skip(f"no {mode} isolation here: {problem}")


def mode_options(mode: str, ws_root: Path) -> tuple[list[str], dict[str, str]]:
    """Command-line options and environment that select an isolation mode.

    ``jail``: bubblewrap (the default). ``landlock``: the fallback the grader uses when
    no bubblewrap works, chosen here by naming a bwrap that does not exist.
    ``unsafe``: ``--unsafe-no-jail``.
    """
    if mode == "unsafe":
        return ["--unsafe-no-jail"], {}
    if mode == "landlock":
        return [], {"CE_GRADER_BWRAP": str(ws_root / "no-such-bwrap")}
    return [], {}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def grade_class(mode: str, root: Path, blank: bytes) -> ClassRun:
    ws = Workspace(root, blank)
    attacks = attacks_for(mode)
    plain = [a for a in attacks if a.build[0] not in ("symlink", "hardlink", "symlink-folder")]
    for attack in plain + [a for a in attacks if a not in plain]:
        ws.add(attack)
    skip = (ws.gtmp, ws.out)
    before = snapshot(ws.root, skip)
    stems = {a.stem for a in ALL_ATTACKS}
    planted_before = planted_files(stems)
    options, extra_env = mode_options(mode, ws.root)
    _become_subreaper(True)
    try:
        args = ["grade", str(ws.source), str(ws.folder), "--csv", str(ws.gradebook)]
        args += ["--feedback", str(ws.feedback), "--json", str(ws.report), *LIMITS]
        done = run_cli(args + options, cwd=ws.root, env=ws.env() | extra_env)
        left = leftovers(ws.root)
    finally:
        _become_subreaper(False)
    run = ClassRun(mode, ws, attacks, done, left=left)
    after = snapshot(ws.root, skip)
    run.changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    run.outputs = sorted(str(p.relative_to(ws.out)) for p in ws.out.rglob("*"))
    run.planted = planted_before + planted_files(stems)
    run.gradebook = ws.gradebook.read_bytes() if ws.gradebook.exists() else b""
    run.rows = _read_rows(ws.gradebook)
    run.report = json.loads(ws.report.read_text()) if ws.report.exists() else []
    run.gtmp_left = sorted(os.listdir(ws.gtmp))
    later_book = ws.out / "later.csv"
    args = ["grade", str(ws.source), str(ws.later), "--csv", str(later_book), *LIMITS]
    run.later = run_cli(args + options, cwd=ws.root, env=ws.env() | extra_env)
    run.later_rows = _read_rows(later_book)
    return run


@pytest.fixture(scope="module")
def jail_run(tmp_path_factory, blank) -> ClassRun:
    require("jail")
    return grade_class("jail", tmp_path_factory.mktemp("jail"), blank)


@pytest.fixture(scope="module")
def landlock_run(tmp_path_factory, blank) -> ClassRun:
    require("landlock")
    return grade_class("landlock", tmp_path_factory.mktemp("landlock"), blank)


@pytest.fixture(scope="module")
def unsafe_run(tmp_path_factory, blank) -> ClassRun:
    return grade_class("unsafe", tmp_path_factory.mktemp("unsafe"), blank)


@pytest.fixture(params=MODES)
def class_run(request) -> ClassRun:
    return request.getfixturevalue(f"{request.param}_run")


def _describe(run: ClassRun) -> str:
    done = run.done
    return (
        f"[{run.mode}] exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------
# Scores: each attacker and each honest classmate
# --------------------------------------------------------------------------

CASES = [(mode, a.stem) for mode in MODES for a in attacks_for(mode)]


@pytest.mark.parametrize(("mode", "stem"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_attacker_gets_exactly_its_honest_score(mode, stem, request):
    run = request.getfixturevalue(f"{mode}_run")
    attack = BY_STEM[stem]
    row = run.row(stem)
    assert {r.get("isolation") for r in run.report} == {ISOLATION[mode]}, "graded in another isolation mode"
    got = {q: float(row[q]) for q in POINTS}
    expect = attack.expect
    if attack.also and attack.also[1] in row["reason"]:  # the other honest outcome, e.g. killed at a limit
        expect = attack.also[0]
    assert got == expect, f"{stem} ({attack.tries}): {row}"
    assert float(row["total"]) == sum(expect.values()) and float(row["max"]) == MAX, row
    assert row["status"] == attack.status, row
    if sum(expect.values()) < MAX or attack.status != "graded":
        assert row["reason"].strip(), f"{stem}: points lost without a reason: {row}"
    assert attack.reason in row["reason"], row
    assert MARK not in json.dumps(row), row
    if attack.build[0] in ("cells", "nested-metadata", "raw"):
        assert run.seconds(stem) <= attack.seconds, f"{stem} took {run.seconds(stem):.1f} s"


ISOLATION = {"jail": "bwrap", "landlock": "landlock", "unsafe": "none"}


def test_each_run_used_its_isolation_mode(class_run):
    """A grader that fell back to a weaker mode would make every other result of its run meaningless."""
    assert class_run.report, _describe(class_run)
    modes = {r["submission"]: r.get("isolation") for r in class_run.report}
    assert set(modes.values()) == {ISOLATION[class_run.mode]}, modes


def test_honest_classmates_get_their_scores(class_run):
    for name, (points, reason) in HONEST.items():
        row = class_run.row(name)
        assert {q: float(row[q]) for q in POINTS} == points, (class_run.mode, row)
        assert row["status"] == "graded" and bool(row["reason"]) == reason, (class_run.mode, row)


def test_later_run_gives_the_same_honest_scores(class_run):
    later = class_run.later
    assert later is not None and later.returncode == 0, later
    rows = {r["submission"]: r for r in class_run.later_rows}
    assert set(rows) == set(HONEST)
    for name, (points, _) in HONEST.items():
        assert {q: float(rows[name][q]) for q in POINTS} == points, (class_run.mode, rows[name])


# --------------------------------------------------------------------------
# The grader survives, within bounds, and leaves nothing behind
# --------------------------------------------------------------------------


def test_grader_finishes_in_bounded_time_and_memory(class_run):
    done = class_run.done
    assert done.returncode == 0, _describe(class_run)
    assert "Traceback" not in done.stderr, _describe(class_run)
    assert done.seconds < RUN_SECONDS, done.seconds
    assert done.peak_mb < PEAK_MB, f"peak memory of the grader and its processes: {done.peak_mb:.0f} MB"
    for r in class_run.report:
        assert float(r["seconds"]) <= ROW_SECONDS, (r["submission"], r["seconds"])


def test_no_process_is_left_behind(class_run):
    assert class_run.left == [], class_run.left


def test_nothing_but_the_gradebook_and_feedback_is_written(class_run):
    ws = class_run.ws
    assert class_run.changed == [], f"changed in the workspace: {class_run.changed}"
    assert class_run.planted == [], f"files planted outside the workspace: {class_run.planted}"
    feedback = [o for o in class_run.outputs if o.startswith("feedback/")]
    assert set(class_run.outputs) - set(feedback) == {"gradebook.csv", "report.json", "feedback"}, (
        class_run.outputs
    )
    assert len(feedback) == len(class_run.rows)
    assert class_run.gtmp_left == [], f"the grader left in its TMPDIR: {class_run.gtmp_left}"
    assert (ws.outside / "victim.csv").read_text() == "VICTIM: nothing may write here\n"
    assert ws.source.read_bytes() == SOURCE.read_bytes()


# --------------------------------------------------------------------------
# Output: gradebook, console and feedback are honest and inert
# --------------------------------------------------------------------------


def unsafe_chars(text: str) -> list[str]:
    """Characters a terminal or a spreadsheet could act on (newline aside)."""
    return sorted({repr(ch) for ch in text if ch != "\n" and unicodedata.category(ch) in UNSAFE_CHARS})


def test_gradebook_is_one_safe_row_per_submission(class_run):
    text = class_run.gradebook.decode("utf-8")
    assert unsafe_chars(text) == [], unsafe_chars(text)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["submission", "q1", "q2", "q3", "q4", "total", "max", "status", "reason"]
    assert len(rows) == 1 + len(HONEST) + len(class_run.attacks), [r[0] for r in rows]
    assert len(text.splitlines()) == len(rows), "a cell spans lines"
    for row in rows:
        assert len(row) == 9, row
        for cell in row:
            assert not cell.lstrip(" ").startswith(FORMULA_STARTS), f"formula cell {cell!r}"
    assert MARK not in text


def test_console_shows_one_safe_line_per_submission(class_run):
    done = class_run.done
    for stream in (done.stdout, done.stderr):
        assert unsafe_chars(stream) == [], unsafe_chars(stream)
        assert MARK not in stream
    lines = done.stdout.splitlines()
    scores = [line for line in lines if re.search(r": \d+(\.\d+)?/10(  \(.*\))?$", line)]
    assert len(scores) == len(class_run.rows), lines
    assert f"{len(class_run.rows)} submissions graded" in done.stdout


def hidden_leaks() -> list[str]:
    """Numbers that c1_leak_through_feedback encodes from q3's hidden inputs (seeds from the source)."""
    hidden = np.random.default_rng(1003)
    first = hidden.normal(size=(4, 9))
    second = hidden.normal(scale=5.0, size=(3, 50))
    return [str(int(abs(z.flat[0]) * 1e6) + 1) for z in (first, second)]


def test_feedback_is_safe_and_reveals_no_hidden_input(class_run):
    files = sorted(class_run.ws.feedback.iterdir())
    assert len(files) == len(class_run.rows)
    for path in files:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.txt", path.name), path.name
        text = path.read_text(encoding="utf-8")
        assert unsafe_chars(text) == [], (path.name, unsafe_chars(text))
        assert MARK not in text, (path.name, text)
        for leak in hidden_leaks():
            assert leak not in text, f"{path.name} tells the student a hidden input ({leak}):\n{text}"


# --------------------------------------------------------------------------
# Separate runs: planted links at the gradebook, refusal without a jail, text notebooks
# --------------------------------------------------------------------------


def _small_class(root: Path) -> Path:
    folder = root / "class"
    folder.mkdir()
    (folder / "ada.ipynb").write_bytes(json.dumps(_solution()).encode())
    return folder


@pytest.mark.parametrize("stem", [a.stem for a in attacks_for("plant")])
def test_planted_link_at_an_output_is_refused(stem, tmp_path):
    """Class 4: a link or special file planted where the grader writes; refused, the target untouched.

    These runs grade one honest notebook without the jail: what is tested is the
    grader's own writing, which does not depend on how student code is isolated.
    """
    case = BY_STEM[stem].plant
    folder = _small_class(tmp_path)
    victim = tmp_path / "outside" / "victim.csv"
    victim.parent.mkdir()
    victim.write_text("VICTIM\n")
    victim_dir = tmp_path / "outside" / "feedback"
    victim_dir.mkdir()
    book = tmp_path / "gradebook.csv"
    feedback = tmp_path / "feedback"
    env = os.environ | {"TMPDIR": str(tmp_path)}
    args = ["grade", str(SOURCE), str(folder), *LIMITS, "--unsafe-no-jail"]
    if case == "default-path-symlink":
        (tmp_path / "gradebook-hw1_softmax.csv").symlink_to(victim)
    else:
        args += ["--csv", str(book)]
    if case == "symlink":
        book.symlink_to(victim)
    elif case == "dangling-symlink":
        book.symlink_to(tmp_path / "outside" / "created-through-the-link.csv")
    elif case == "hardlink":
        os.link(victim, book)
    elif case == "fifo":
        os.mkfifo(book)
    elif case == "folder":
        book.mkdir()
    elif case == "feedback-folder-symlink":
        feedback.symlink_to(victim_dir)
        args += ["--feedback", str(feedback)]
    elif case == "feedback-file-symlink":  # the name comes from an earlier run, as a student would learn it
        learn = tmp_path / "earlier"
        run_cli([*args, "--feedback", str(learn)], cwd=tmp_path, env=env, timeout=120)
        (name,) = os.listdir(learn)
        feedback.mkdir()
        (feedback / name).symlink_to(victim)
        args += ["--feedback", str(feedback)]
    done = run_cli(args, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert BY_STEM[stem].refusal in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert victim.read_text() == "VICTIM\n"
    assert os.listdir(victim_dir) == []
    assert not (tmp_path / "outside" / "created-through-the-link.csv").exists()
    assert "ada.ipynb:" not in done.stdout, f"refused only after grading: {done.stdout}"


def test_refuses_to_grade_without_isolation(tmp_path):
    """No bubblewrap (a bwrap that does not exist), no Landlock (switched off): refused, nothing written."""
    folder = _small_class(tmp_path)
    env = os.environ | {
        "CE_GRADER_BWRAP": str(tmp_path / "no-such-bwrap"),
        "CE_GRADER_LANDLOCK": "off",
        "TMPDIR": str(tmp_path),
    }
    before = snapshot(tmp_path, ())
    done = run_cli(
        [
            "grade",
            str(SOURCE),
            str(folder),
            "--csv",
            str(tmp_path / "book.csv"),
            "--feedback",
            str(tmp_path / "fb"),
        ],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert "refusing to grade" in done.stderr and "--unsafe-no-jail" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(tmp_path, ()) == before, "something was written"


def test_yaml_bomb_in_a_text_notebook(tmp_path):
    """Class 7: a text notebook graded alone, whose YAML header expands to 9**9 strings.

    In the jail only: what stops it is the inspector's own memory and time limits, the
    same in every mode, and each run costs the inspector's full memory (about 20 s).
    """
    mode = "jail"
    require(mode)
    (attack,) = attacks_for("single")
    options, extra_env = mode_options(mode, tmp_path)
    path = tmp_path / "bomb.md"
    path.write_text(raw_section(attack), encoding="utf-8")
    report = tmp_path / "report.json"
    args = ["grade", str(SOURCE), str(path), "--json", str(report), *LIMITS]
    done = run_cli(
        args + options, cwd=tmp_path, env=os.environ | extra_env | {"TMPDIR": str(tmp_path)}, timeout=150
    )
    assert done.returncode in (0, 2), (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.seconds < 100 and done.peak_mb < PEAK_MB, (done.seconds, done.peak_mb)
    data = json.loads(report.read_text())
    earned = {q["id"]: q["earned"] for q in data["questions"]}
    if done.returncode == 0:  # read as a notebook: its q1 is honest, nothing else is answered
        assert earned == {"q1": 3, "q2": 0, "q3": 0, "q4": 0}, data
    else:  # or refused as unreadable: its own row, with the reason
        assert data["error"] and "not a readable notebook" in data["error"], data
        assert sum(earned.values()) == 0
