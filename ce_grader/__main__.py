"""Command line: ``python -m ce_grader {release,grade,check} ...``.

The grader restarts itself in Python's isolated mode (``-I``: nothing from
the working directory, the user's site-packages or ``PYTHON*`` variables),
imports everything it will need, and only then reads submissions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_SUBMISSION = 2
EXIT_ASSIGNMENT = 3
EXIT_NO_JAIL = 4


def _add_limits(p: argparse.ArgumentParser, defaults) -> None:
    d = defaults
    p.add_argument(
        "--cell-timeout",
        type=float,
        default=d.cell_seconds,
        metavar="S",
        help=f"time limit of each cell and each check, in seconds (default {d.cell_seconds:g})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d.notebook_seconds,
        metavar="S",
        help=f"time limit of a whole submission, in seconds (default {d.notebook_seconds:g})",
    )
    p.add_argument(
        "--memory",
        type=int,
        default=d.memory_mb,
        metavar="MB",
        help=f"memory of each run of a submission's code (default {d.memory_mb})",
    )
    p.add_argument(
        "--disk",
        type=int,
        default=d.disk_mb,
        metavar="MB",
        help=f"scratch disk of each run of a submission's code (default {d.disk_mb})",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="submissions graded in parallel (default 1); the questions of one submission run one "
        "at a time, so that its limits are its own",
    )
    p.add_argument(
        "--unsafe-no-jail",
        action="store_true",
        help="run student code without the bubblewrap jail, as you, with your files in reach "
        "(only where no jail can be built, and only for code you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    from .sandbox import Limits

    d = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m ce_grader",
        description="Release homework notebooks without their solutions, and grade submissions in a jail.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="write the student notebook")
    p.add_argument("source", type=Path, help="assignment source with solutions (MyST .md)")
    p.add_argument("--out", type=Path, required=True, help="directory for the student notebook")
    p = sub.add_parser("grade", help="grade a submission, or every submission in a folder")
    p.add_argument("source", type=Path, help="assignment source with solutions and hidden tests")
    p.add_argument("submission", type=Path, help="a .ipynb file, or a folder of them")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report(s) as JSON")
    p.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="folder mode: the gradebook (default ./gradebook-<assignment>.csv)",
    )
    p.add_argument(
        "--feedback",
        type=Path,
        metavar="DIR",
        help="write one feedback file per submission into DIR (created if missing)",
    )
    _add_limits(p, d)
    p = sub.add_parser("check", help="verify an assignment: release is clean, solution gets full marks")
    p.add_argument("source", type=Path, help="assignment source with solutions and hidden tests")
    p.add_argument(
        "--execute", action="store_true", help="also run the source in a Jupyter kernel (nbclient)"
    )
    _add_limits(p, d)
    return parser


def _limits(args: argparse.Namespace, mode: str):
    from .sandbox import Limits

    return Limits(
        cell_seconds=args.cell_timeout,
        notebook_seconds=args.timeout,
        memory_mb=args.memory,
        disk_mb=args.disk,
        jail=mode == "bwrap",
        landlock=mode == "landlock",
    )


def _isolation(args: argparse.Namespace) -> tuple[str | None, str]:
    """The strongest confinement this machine offers: ``(mode, why)``; mode ``None``: none at all."""
    from .jail import jail_problem, landlock_problem

    if args.unsafe_no_jail:
        return "none", "--unsafe-no-jail"
    problem = jail_problem()
    if problem is None:
        return "bwrap", ""
    if landlock_problem() is None:
        return "landlock", problem
    return None, f"{problem} Landlock is not available either: {landlock_problem()}"


def _preload() -> None:
    """Import, before any submission is read, every module grading will use."""
    import jupytext  # noqa: F401
    import nbformat  # noqa: F401

    import ce_lib  # noqa: F401

    from . import collect, grader, jail, jail_library, output, sandbox, selfcheck, static  # noqa: F401

    try:  # what static.transform needs for a setup cell or solution with IPython syntax
        import IPython.core.inputtransformer2  # noqa: F401
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # names from submissions must never crash a report
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    for option, value, least in [
        ("--jobs", getattr(args, "jobs", 1), 1),
        ("--memory", getattr(args, "memory", 256), 256),
        ("--disk", getattr(args, "disk", 1), 1),
        ("--cell-timeout", getattr(args, "cell_timeout", 1), 0.1),
        ("--timeout", getattr(args, "timeout", 1), 1),
    ]:
        if not value >= least:
            print(f"error: {option} must be at least {least:g}; got {value:g}", file=sys.stderr)
            return EXIT_SUBMISSION
    from .notebook import AssignmentError, SubmissionError

    try:
        if args.command == "release":
            from .notebook import release

            print(f"wrote {release(args.source, args.out)}")
            return EXIT_OK
        _preload()
        mode, why = _isolation(args)
        if args.command == "check":
            if mode is None:  # check runs the instructor's own solution and the blank release only
                print(f"note: no jail here, the checks run unconfined: {why}", file=sys.stderr)
            return _check(args, _limits(args, mode or "none"))
        if mode is None:
            print(f"error: refusing to grade: {why}", file=sys.stderr)
            return EXIT_NO_JAIL
        if mode == "landlock":
            print(
                "note: no bubblewrap jail here, so each run is confined with Landlock instead: it reads "
                "only Python, NumPy and its copy of ce_lib, writes no file, has no network and cannot "
                "signal or change other processes, but it runs as you and can learn their ids. "
                f"(bubblewrap: {why})",
                file=sys.stderr,
            )
        if mode == "none":
            print("warning: --unsafe-no-jail: student code runs as you, your files in reach", file=sys.stderr)
        return _grade(args, _limits(args, mode))
    except AssignmentError as exc:
        print(f"error in the assignment: {exc}", file=sys.stderr)
        return EXIT_ASSIGNMENT
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SUBMISSION


def _grade(args: argparse.Namespace, limits) -> int:
    from .collect import CollectError
    from .grader import compute_reference, grade_folder, grade_submission, write_gradebook
    from .notebook import load_assignment
    from .output import OutputError, atomic_write, check_writable_target, safe_text

    assignment = load_assignment(args.source)
    folder = args.submission.is_dir() and not args.submission.is_symlink()
    csv_path = args.csv or Path(f"gradebook-{assignment.name}.csv")
    try:  # refuse a planted link or special file now, not after an hour of grading
        if folder:
            check_writable_target(csv_path, "gradebook")
        if args.json:
            check_writable_target(args.json, "JSON report")
        if args.feedback:  # a new or empty folder: nothing can have been planted in it
            if args.feedback.is_symlink() or (args.feedback.exists() and not args.feedback.is_dir()):
                raise OutputError(f"the feedback folder {args.feedback} is a link or not a folder")
            args.feedback.mkdir(parents=True, exist_ok=True)
            if any(args.feedback.iterdir()):
                raise OutputError(f"the feedback folder {args.feedback} is not empty; give a new one")
    except (OutputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SUBMISSION
    reference = compute_reference(assignment, limits, args.jobs)
    if folder:

        def show(r) -> None:
            why = r.error or r.warning
            tail = f"  ({safe_text(why, 200)})" if why else ""
            print(f"{r.submission}: {r.score:g}/{r.max_score:g}{tail}", flush=True)

        try:
            reports = grade_folder(
                assignment, args.submission, reference=reference, limits=limits, jobs=args.jobs, progress=show
            )
        except CollectError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SUBMISSION
        try:
            write_gradebook(reports, assignment, csv_path)
        except OutputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SUBMISSION
        print(f"{len(reports)} submissions graded; gradebook: {csv_path}")
    else:
        reports = [grade_submission(assignment, args.submission, reference=reference, limits=limits)]
        print(reports[0].table())
        if reports[0].error:
            print(f"error: {safe_text(reports[0].error, 300)}", file=sys.stderr)
    try:
        if args.json:
            data = [r.to_dict() for r in reports] if folder else reports[0].to_dict()
            atomic_write(args.json, json.dumps(data, indent=2).encode("utf-8"), what="JSON report")
        if args.feedback and not _write_feedback(reports, args.feedback):
            return EXIT_SUBMISSION
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SUBMISSION
    return EXIT_SUBMISSION if not folder and reports[0].error else EXIT_OK


def _write_feedback(reports, folder: Path) -> bool:
    """One text file per submission, with a harmless name no other submission's can take.

    Returns whether every file was written; one that cannot be does not stop the others.
    """
    from .output import OutputError, atomic_write

    used: set[str] = set()
    failed = 0
    for r in reports:
        name = r.submission.removesuffix(".ipynb")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80].strip("._") or "submission"
        tag = hashlib.sha256(r.submission.encode("utf-8", "replace")).hexdigest()[:16]
        file = f"{stem}-{tag}.txt"
        n = 1
        while file.lower() in used:  # distinct names, also on case-insensitive file systems
            n += 1
            file = f"{stem}-{tag}-{n}.txt"
        used.add(file.lower())
        try:
            atomic_write(folder / file, r.feedback_text().encode("utf-8"), what="feedback file")
        except OutputError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    tail = f"; {failed} could not be written" if failed else ""
    print(f"{len(reports) - failed} feedback files in {folder}{tail}")
    return failed == 0


def _check(args: argparse.Namespace, limits) -> int:
    from .selfcheck import execute_source, self_check

    done, problems = self_check(args.source, limits, args.jobs)
    if args.execute:
        execute_source(args.source, timeout=int(args.cell_timeout) * 6)
        done.append("the source runs top to bottom in a Jupyter kernel")
    for line in done:
        print(f"ok: {line}")
    for line in problems:
        print(f"problem: {line}")
    return EXIT_ASSIGNMENT if problems else EXIT_OK


def _isolated() -> None:
    """Restart in isolated mode (``-I``) unless already there; then make this process non-dumpable."""
    if not sys.flags.isolated:
        os.execv(sys.executable, [sys.executable, "-I", "-m", "ce_grader", *sys.argv[1:]])
    if sys.platform.startswith("linux"):  # no other process of the same user may read or write our memory
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


if __name__ == "__main__":
    _isolated()
    sys.exit(main())
