"""Homework tooling: student releases and an autograder that students cannot fool.

Three commands (``python -m ce_grader --help``)::

    python -m ce_grader release SOURCE.md --out DIR
    python -m ce_grader grade SOURCE.md SUBMISSION.ipynb [--json FILE]
    python -m ce_grader grade SOURCE.md FOLDER [--csv FILE]
    python -m ce_grader check SOURCE.md [--execute]

The markup of an assignment is described in :mod:`ce_grader.notebook`;
the hidden tests are calls of :func:`check`. The rest of the machinery
(jupytext, nbformat, nbclient) is imported only when a command needs it.
"""

from __future__ import annotations

from .spec import Check, check

__all__ = ["Check", "check"]
