"""The executed version of a chapter, as the book build computed it.

Jupyter Book executes the chapters through jupyter-cache (``execute_notebooks:
cache``) and keeps every result in ``_build/.jupyter_cache``. This module reads
a chapter's MyST source with jupytext and merges in the outputs that the cache
holds for exactly that code. It is the one source of executed notebooks for
the nbval reference files and for the ``.ipynb`` downloads of the site.

(The copies that myst-nb writes to ``_build/jupyter_execute`` cannot serve:
for a chapter taken from the cache they are saved *without* outputs, and for a
freshly executed one their stream outputs are half-merged.)
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "_build" / ".jupyter_cache"


class NotExecuted(LookupError):
    """The cache holds no execution of this chapter's current code."""


def executed_notebook(source: Path, cache_dir: Path = CACHE) -> nbformat.NotebookNode:
    """The notebook of ``source`` (a MyST ``.md``) with the outputs of its cached execution."""
    if not cache_dir.is_dir():
        raise NotExecuted(f"no execution cache at {cache_dir}: build the book first (make book)")
    notebook = jupytext.read(source)
    try:
        _, merged = get_cache(cache_dir).merge_match_into_notebook(notebook)
    except KeyError as error:
        raise NotExecuted(f"{source} has not been executed in its current form: rebuild the book") from error
    code = [cell for cell in merged.cells if cell.cell_type == "code"]
    if code and not any(cell.get("outputs") for cell in code):
        raise NotExecuted(f"the cached execution of {source} has no outputs at all: make clean book")
    return merged
