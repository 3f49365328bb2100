"""Command line: ``python -m ce_grader {release,grade,check} ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .sandbox import Limits

EXIT_OK = 0
EXIT_SUBMISSION = 2
EXIT_ASSIGNMENT = 3


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        cell_seconds=args.cell_timeout,
        notebook_seconds=args.timeout,
        memory_mb=args.memory,
        isolate=args.isolate,
    )


def _add_limits(p: argparse.ArgumentParser) -> None:
    d = Limits()
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
        help=f"memory limit of the student's process (default {d.memory_mb})",
    )
    p.add_argument(
        "--isolate",
        choices=["auto", "namespaces", "none"],
        default=d.isolate,
        help="run in PID and network namespaces: if available (auto), always, or never",
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="questions graded in parallel (default 1)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ce_grader",
        description="Release homework notebooks without their solutions, and grade submissions.",
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
        help="folder mode: the gradebook (default FOLDER/gradebook-<assignment>.csv)",
    )
    _add_limits(p)
    p = sub.add_parser("check", help="verify an assignment: release is clean, solution gets full marks")
    p.add_argument("source", type=Path, help="assignment source with solutions and hidden tests")
    p.add_argument(
        "--execute", action="store_true", help="also run the source in a Jupyter kernel (nbclient)"
    )
    _add_limits(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "isolate", None) == "namespaces":
        from .sandbox import namespaces_available

        if not namespaces_available():
            print("error: --isolate namespaces: unshare cannot create namespaces here", file=sys.stderr)
            return EXIT_SUBMISSION
    from .notebook import AssignmentError, SubmissionError

    try:
        if args.command == "release":
            from .notebook import release

            print(f"wrote {release(args.source, args.out)}")
            return EXIT_OK
        if args.command == "check":
            return _check(args)
        return _grade(args)
    except AssignmentError as exc:
        print(f"error in the assignment: {exc}", file=sys.stderr)
        return EXIT_ASSIGNMENT
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SUBMISSION


def _grade(args: argparse.Namespace) -> int:
    from .grader import compute_reference, grade_folder, grade_submission, write_gradebook
    from .notebook import SubmissionError, load_assignment

    limits = _limits(args)
    assignment = load_assignment(args.source)
    if not args.submission.exists():
        raise SubmissionError(f"submission not found: {args.submission}")
    reference = compute_reference(assignment, limits, args.jobs)
    if args.submission.is_dir():

        def show(r):
            tail = f"  ({r.error})" if r.error else ""
            print(f"{r.submission}: {r.score:g}/{r.max_score:g}{tail}", flush=True)

        reports = grade_folder(
            assignment, args.submission, reference=reference, limits=limits, jobs=args.jobs, progress=show
        )
        csv_path = args.csv or args.submission / f"gradebook-{assignment.name}.csv"
        write_gradebook(reports, assignment, csv_path)
        print(f"{len(reports)} submissions graded; gradebook: {csv_path}")
        if args.json:
            args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8")
        return EXIT_OK
    report = grade_submission(assignment, args.submission, reference=reference, limits=limits, jobs=args.jobs)
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from .selfcheck import execute_source, self_check

    done, problems = self_check(args.source, _limits(args), args.jobs)
    if args.execute:
        execute_source(args.source, timeout=int(args.cell_timeout) * 6)
        done.append("the source runs top to bottom in a Jupyter kernel")
    for line in done:
        print(f"ok: {line}")
    for line in problems:
        print(f"problem: {line}")
    return EXIT_ASSIGNMENT if problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
