"""One lock for every ``ast.parse`` the grader makes.

CPython 3.11 before 3.11.8 tracks the AST constructor's recursion depth per
interpreter, not per thread, so two grading threads parsing at once can fail
with "SystemError: AST constructor recursion depth mismatch" (CPython
gh-106905). Every parse in ``ce_grader`` goes through :func:`parse`.
"""

from __future__ import annotations

import ast
import threading

AST_LOCK = threading.RLock()


def parse(source: str) -> ast.Module:
    """``ast.parse(source)`` while holding :data:`AST_LOCK`."""
    with AST_LOCK:
        return ast.parse(source)
