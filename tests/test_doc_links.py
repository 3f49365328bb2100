"""Links both ways between ce_lib's docstrings and the chapters, checked without building the book.

* Docstring -> chapter: every public name of ``ce_lib`` has a ``Course:`` paragraph that links a
  chapter (``:doc:``) and the equation / theorem / section it implements (``:eq:``,
  ``:prf:ref:``, ``:ref:``); every label exists in a chapter that the same paragraph links.
* Chapter -> API: every public ``ce_lib`` function that a chapter's code cells use is linked,
  in the chapter's prose, to its API entry under its real module
  (``{py:func}`ce.cross_entropy <ce_lib.categorical.cross_entropy>```), and every such link
  names a real public function of that module.

The full build (``jupyter-book build . -W -n``) checks that Sphinx resolves the same links; this
file checks the conventions quickly and says which link is missing.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import ce_lib

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("part[12]/*.md"))

# A label defined in a chapter, by the role that refers to it.
LABEL_PATTERNS = {
    "eq": re.compile(r"^\$\$\s*\(([\w-]+)\)\s*$", re.M),  # $$ ... $$ (label)
    "prf:ref": re.compile(r"^```+\{prf:[a-z]+\}.*\n(?::[a-z-]+:.*\n)*?:label:\s*([\w-]+)", re.M),
    "ref": re.compile(r"^\(([\w-]+)\)=\s*$", re.M),  # (label)= before a heading
}
ROLE = re.compile(r":(eq|prf:ref|ref|doc):`([^`]+)`")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.M | re.S)
PY_FUNC_LINK = re.compile(r"\{py:func\}`[^`<]*<([\w.]+)>`")


def _public_names() -> list[str]:
    return sorted(ce_lib.__all__)


def _real_path(name: str) -> str:
    """``ce_lib.<module>.<name>``, the target that ``automodule`` in book/api.md documents."""
    obj = getattr(ce_lib, name)
    return f"{obj.__module__}.{name}"


def _labels(path: Path) -> dict[str, set[str]]:
    text = path.read_text(encoding="utf-8")
    return {role: set(pattern.findall(text)) for role, pattern in LABEL_PATTERNS.items()}


def _course_paragraph(name: str) -> str:
    doc = inspect.getdoc(getattr(ce_lib, name)) or ""
    for paragraph in doc.split("\n\n"):
        if paragraph.startswith("Course: "):
            return " ".join(paragraph.split())
    return ""


def _doc_path(target: str) -> Path:
    """The source of a ``:doc:`` target such as ``/book/part1/gradient``."""
    return ROOT / (target.lstrip("/") + ".md")


def _used_functions(path: Path) -> set[str]:
    """Public ce_lib functions the chapter's code cells use: ``ce.name`` or ``from ce_lib... import``."""
    code = "\n".join(CODE_CELL.findall(path.read_text(encoding="utf-8")))
    names = set(re.findall(r"\bce\.(\w+)", code))
    for block in re.findall(r"^from ce_lib[\w.]* import (\([^)]*\)|[^\n]*)", code, flags=re.M):
        names.update(re.findall(r"\w+", block))
    return {n for n in names if n in ce_lib.__all__ and inspect.isfunction(getattr(ce_lib, n))}


def _prose(path: Path) -> str:
    return CODE_CELL.sub("", path.read_text(encoding="utf-8"))


def test_the_patterns_find_what_the_book_defines():
    """Guards the parsers: if they stopped matching, every check below would pass vacuously."""
    labels = _labels(ROOT / "book/part1/gradient.md")
    assert "gr-main" in labels["eq"]
    assert "gr-thm-gradient" in labels["prf:ref"]
    assert "gr-sec-from-scratch" in labels["ref"]
    assert {"cross_entropy_grad", "softmax_jacobian"} <= _used_functions(ROOT / "book/part1/gradient.md")
    assert "lse_merge" in _used_functions(ROOT / "book/part2/scale.md")  # from ce_lib.scale import (...)
    assert "use_book_style" not in _used_functions(ROOT / "book/part1/gradient.md")  # not public API
    assert len(CHAPTERS) == 10


@pytest.mark.parametrize("name", _public_names())
def test_docstring_links_its_chapter_and_label(name):
    paragraph = _course_paragraph(name)
    assert paragraph, f"ce_lib.{name}: no 'Course: ...' paragraph in the docstring"
    roles = ROLE.findall(paragraph)
    docs = [target for role, target in roles if role == "doc"]
    assert docs, f"ce_lib.{name}: the Course paragraph links no chapter (:doc:)"
    for target in docs:
        assert _doc_path(target).is_file(), f"ce_lib.{name}: :doc:`{target}` is not a book source"
    defined = {role: set() for role in LABEL_PATTERNS}
    for target in docs:
        for role, labels in _labels(_doc_path(target)).items():
            defined[role] |= labels
    targets = [(role, target) for role, target in roles if role != "doc"]
    assert targets, f"ce_lib.{name}: the Course paragraph links no equation, theorem or section"
    for role, target in targets:
        assert target in defined[role], (
            f"ce_lib.{name}: :{role}:`{target}` is not defined in the chapters it links ({docs})"
        )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_each_function_it_calls(chapter):
    linked = set(PY_FUNC_LINK.findall(_prose(chapter)))
    missing = sorted(_real_path(name) for name in _used_functions(chapter) if _real_path(name) not in linked)
    assert not missing, f"{chapter.name}: code calls these but the prose does not link them: {missing}"


@pytest.mark.parametrize("name", [n for n in _public_names() if inspect.isfunction(getattr(ce_lib, n))])
def test_each_chapter_a_docstring_links_links_back(name):
    for role, target in ROLE.findall(_course_paragraph(name)):
        if role == "doc":
            linked = set(PY_FUNC_LINK.findall(_prose(_doc_path(target))))
            assert _real_path(name) in linked, f"{target}.md does not link back to {_real_path(name)}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_link_box_swallows_no_code_cell(chapter):
    """The links live in one admonition before the first code cell; a backtick in its title would
    make it an invalid fence (CommonMark) that swallows the next code cell when the notebook is read."""
    jupytext = pytest.importorskip("jupytext")
    text = chapter.read_text(encoding="utf-8")
    assert text.count("```{admonition} Library functions used in this chapter\n") == 1
    cells = jupytext.reads(text, fmt="md:myst").cells
    assert sum(cell.cell_type == "code" for cell in cells) == len(CODE_CELL.findall(text))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_point_at_real_api_entries(chapter):
    public = {_real_path(name) for name in ce_lib.__all__}
    for target in PY_FUNC_LINK.findall(_prose(chapter)):
        assert target in public, f"{chapter.name}: {{py:func}} link to {target}, not a public API entry"
