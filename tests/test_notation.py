"""One meaning per symbol: no chapter gives a symbol of the notation page another meaning.

`book/notation.md` fixes what each symbol means. This test holds a small table of
the ways a chapter could break that (a vector-valued label ``y_i``, a plain ``e_y``
for the one-hot, a Hessian called ``H``, a maximum called ``m``, classes numbered
from 1, ...), each with an example that must be caught and one that must not, and
scans the prose and mathematics of every chapter (code cells excluded).

A paragraph that quotes the source notes' own symbols (it links a note, ``<src-00k>``)
is exempt: saying once which of the notes' symbols is which of ours is what the
notation page asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted((BOOK / "part1").glob("*.md")) + sorted((BOOK / "part2").glob("*.md"))


@dataclass(frozen=True)
class Rule:
    symbol: str  # as written in the first column of the notation page
    meaning: str  # the one meaning the notation page gives it
    misuse: str  # regex matching a use with another meaning
    bad: str  # an example the regex must catch
    good: str  # a correct use it must leave alone


RULES = [
    Rule("$y \\in \\{0, \\dots, C-1\\}$", "the label is an integer, never a vector",
         r"(?<![A-Za-z\\_{])y_\{?[ijkc]\b", r"$g_i = p_i - y_i$", r"$p_y - 1$ and $z_{n y_n}$"),
    Rule("$\\mathbf{e}_y$", "the one-hot is written bold",
         r"(?<!\\mathbf\{)(?<!\\mathbf )(?<![A-Za-z\\])e_\{?[yijkc]\b",
         r"$e_k - e_y$", r"$p - \mathbf{e}_y$, $\mathbf{e}_k$, $e^{z_j}$"),
    Rule("$\\nabla^2_z \\ell$", "the Hessian is never H",
         r"Hessian,? \$H|\bH\s*=\s*\\nabla|\\nabla\^2[^$]{0,40}=\s*H\b",
         r"the Hessian $H = \nabla^2 \ell$", r"the entropy $H(p)$ and $\nabla^2_z \ell = J$"),
    Rule("$T$, $\\beta = 1/T$", "beta is the inverse temperature only",
         r"\\beta\$? bytes|\\beta_\{?\\?(max|text|mathrm)|\\beta\$? (is|denotes) (the )?(momentum|bandwidth)",
         r"$\beta$ bytes per number", r"$\beta = 1/T$ and $\operatorname{softmax}(\beta z)$"),
    Rule("$M = \\max_j z_j$", "the maximum is M; m is the margin",
         r"(?<![A-Za-z\\^])m\s*=\s*\\max|(?<![A-Za-z\\])m_\{?\\(text|mathrm)\{(old|new)",
         r"$m = \max_j z_j$", r"$M = \max_j z_j$, margin $m = 0.35$, $\ell^m = \max(0, 1)$"),
    Rule("$d$", "d is the feature dimension only",
         r"(?<![A-Za-z\\])d\s*=\s*(e\^|\\exp)|(?<![A-Za-z\\])d_\{?\\(text|mathrm)\{(old|new)",
         r"$d = e^{M - M'}$", r"$h \in \mathbb{R}^d$, $d = 64$"),
    Rule("$Z = \\sum_j e^{z_j}$", "Z is the partition function only",
         r"logits,? \$Z\b|(?<![A-Za-z\\_])Z\s*=\s*[XWH]\b",
         r"a batch of logits $Z = X W^\top$", r"$Z = \sum_j e^{z_j}$ and $\log Z = M + \log \zeta$"),
    Rule("$C$", "classes are numbered 0 .. C-1",
         r"_\{[a-z]\s*=\s*1\}\^\{?C\b|\{1,\s*\\l?dots,\s*C\}|\b[a-z]\s*=\s*1,\s*\\l?dots,\s*C\b",
         r"$\sum_{j=1}^{C} e^{z_j}$", r"$\sum_{j=0}^{C-1} e^{z_j}$ and $n = 1, \dots, N$"),
    Rule("$p = \\operatorname{softmax}(z)$", "p is the prediction; the target is q",
         r"target (distribution |vector )?\$p\b|\$p\$ (is|be|denotes) (a|the) target",
         r"a target distribution $p$", r"the target $q$ and the prediction $p$; $H(q,p) \ne H(p,q)$"),
    Rule("$s$", "s is the logit scale only",
         r"(?<![A-Za-z\\_])s\s*=\s*(\\sum|\\textstyle\s*\\sum|r\s*\+)",
         r"$s = \sum_j q_j$", r"$z = s \cos\theta$"),
]

CODE_CELL = re.compile(r"^```\{code-cell\}.*?^```\s*$", re.M | re.S)
ADMONITION = re.compile(r"^```\{admonition\}.*?^```\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"``?[^`\n]+``?")
FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)


def prose_paragraphs(text: str) -> list[str]:
    """The chapter's paragraphs without front matter and code cells (inline code kept)."""
    text = FRONT_MATTER.sub("", text)
    text = CODE_CELL.sub("", text)
    # An admonition (a "Pitfall in the notes" box) is one unit: when it links a
    # note, all of it may quote the note's symbols.
    boxes = ADMONITION.findall(text)
    text = ADMONITION.sub("", text)
    return boxes + [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def quotes_notes(paragraph: str) -> bool:
    return bool(re.search(r"<src-00\d>", paragraph))


def violations(text: str, rule: Rule) -> list[str]:
    found = []
    pattern = re.compile(rule.misuse)
    for par in prose_paragraphs(text):
        if quotes_notes(par):
            continue
        par = INLINE_CODE.sub("", par)
        for m in pattern.finditer(par):
            start = max(0, m.start() - 40)
            found.append(par[start:m.end() + 40].replace("\n", " "))
    return found


def notation_page() -> str:
    return (BOOK / "notation.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("rule", RULES, ids=[r.meaning for r in RULES])
def test_rule_catches_its_bad_example_only(rule):
    assert violations(rule.bad, rule), f"rule misses its own bad example {rule.bad!r}"
    assert not violations(rule.good, rule), f"rule flags a correct use {rule.good!r}"


@pytest.mark.parametrize("rule", RULES, ids=[r.meaning for r in RULES])
def test_symbol_is_on_the_notation_page(rule):
    rows = [line for line in notation_page().splitlines() if line.startswith("| $")]
    assert any(line.split("|")[1].strip() == rule.symbol for line in rows), (
        f"{rule.symbol} is not a symbol of book/notation.md's tables"
    )


def test_notation_page_fixes_zero_based_classes():
    assert "Class indices start at 0" in notation_page()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_keeps_the_notation(chapter):
    text = chapter.read_text(encoding="utf-8")
    problems = [
        f"{rule.meaning}: ...{hit}..." for rule in RULES for hit in violations(text, rule)
    ]
    assert not problems, f"{chapter.name} breaks the notation:\n" + "\n".join(problems)
