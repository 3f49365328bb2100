"""The form every chapter must have, checked on the MyST sources (no build needed).

A chapter that lost its content (a stub in place of a notebook) or its
exercises would otherwise still build and pass nbval with nothing to compare.
"""

from __future__ import annotations

import re

import pytest
from site_support import ROOT, pages

CHAPTERS = [page for page in pages() if page.startswith(("book/part1/", "book/part2/"))]


def test_the_book_has_ten_chapters():
    assert len(CHAPTERS) == 10, CHAPTERS


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_is_a_complete_notebook(page):
    text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
    front = text.split("\n---", 1)[0]
    assert text.startswith("---") and "kernelspec:" in front, f"{page} is not a MyST notebook"
    code_cells = len(re.findall(r"^```\{code-cell\}", text, flags=re.M))
    assert code_cells >= 10, f"{page} has only {code_cells} code cells"
    exercises = len(re.findall(r"^`{3,}\{exercise\}", text, flags=re.M))
    solutions = len(re.findall(r"^`{3,}\{solution(?:-start)?\}", text, flags=re.M))
    assert exercises >= 4, f"{page} has {exercises} exercises"
    assert solutions >= exercises, f"{page}: {exercises} exercises but {solutions} solutions"
    figures = re.findall(r"mystnb:\s*\n\s+figure:.*?\n\s+image:\s*\n\s+alt:\s*(\S.*)", text, flags=re.S)
    assert figures, f"{page} has no figure with alt text"
    assert re.search(r"\$\$ \(\w[\w-]*\)", text), f"{page} has no labelled equation"
    assert "{prf:" in text, f"{page} has no sphinx-proof definition or theorem"
