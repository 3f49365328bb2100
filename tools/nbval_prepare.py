"""Turn the book's MyST chapters into ``.ipynb`` files that nbval can test.

nbval re-executes a notebook and compares every cell's output with the output
stored in the file. MyST Markdown stores no outputs, so this script converts
each chapter listed in ``_toc.yml`` with jupytext and fills in the outputs of
the book build's own execution (from its cache, see ``executed.py``). nbval
then checks that a fresh run prints exactly what the published book shows:
a number that changes from run to run fails the test.

Run ``make book`` first (``make test`` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from executed import CACHE, NotExecuted, executed_notebook
from toc import ROOT, is_notebook, toc_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "nbval")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ipynb"):
        old.unlink()
    chapters = [page for page in toc_files() if is_notebook(page)]
    if not chapters:
        sys.exit("no notebook chapters found in _toc.yml")
    for page in chapters:
        try:
            notebook = executed_notebook(ROOT / f"{page}.md", args.cache.resolve())
        except NotExecuted as error:
            sys.exit(str(error))
        target = out / f"{page.replace('/', '__')}.ipynb"
        nbformat.write(notebook, target)
        print(f"nbval: {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
