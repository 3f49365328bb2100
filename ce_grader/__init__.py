"""ce_grader: release homework notebooks and grade them, each submission in a jail.

The homework tool of the course, for instructors; students import ``ce_lib``
and never this package. Three commands (``python -m ce_grader --help``)::

    python -m ce_grader release SOURCE.md --out DIR
    python -m ce_grader grade SOURCE.md SUBMISSION.ipynb [--json FILE]
    python -m ce_grader grade SOURCE.md FOLDER [--csv FILE] [--feedback DIR] [--jobs N]
    python -m ce_grader check SOURCE.md [--execute]

The markup of an assignment is described in :mod:`ce_grader.notebook`; the
hidden tests are calls of :func:`check`. How a submission is graded:
:mod:`ce_grader.grader`; the jail: :mod:`ce_grader.jail` and
:mod:`ce_grader.sandbox`; reading submissions: :mod:`ce_grader.collect` and
:mod:`ce_grader.static`; the library a question allows:
:mod:`ce_grader.jail_library`; safe output: :mod:`ce_grader.output`.
"""

from __future__ import annotations

from .spec import Check, check

__all__ = ["Check", "check"]
