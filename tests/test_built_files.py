"""The built site and PDF as files: figures readable on a dark page, no CDN, every chapter in the PDF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from site_support import ROOT, SITE, chapters, page_title, pages, skip_or_fail

PDF = ROOT / "_build" / "pdf" / "book.pdf"


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").exists():
        skip_or_fail("The site is not built: run `make book` first")
    return SITE


def test_figures_have_an_opaque_white_background(site):
    """A transparent figure would show black axes on the dark theme's black page."""
    from PIL import Image

    figures = sorted((site / "_images").glob("*.png"))
    assert figures, "the site has no figures"
    for path in figures:
        image = np.asarray(Image.open(path).convert("RGBA"))
        corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert np.all(image[..., 3] == 255), f"{path.name} has transparent pixels"
        assert np.all(corners[:, :3] >= 250), f"{path.name} does not have a white background"


@pytest.mark.parametrize("name", pages())
def test_pages_reference_no_other_host(site, name):
    html = (site / f"{name}.html").read_text(encoding="utf-8")
    assets = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', html)
    assert not assets, f"{name}.html loads assets from other hosts: {assets}"


def test_pdf_has_every_chapter_in_order():
    if not PDF.exists():
        skip_or_fail("No PDF: run `make pdf` first")
    from pypdf import PdfReader

    text = " ".join(page.extract_text() for page in PdfReader(PDF).pages)
    text = re.sub(r"\s+", " ", text)
    positions = []
    for name in chapters():
        title = page_title(name)
        found = [m.start() for m in re.finditer(re.escape(title), text)]
        assert found, f"the PDF lacks the chapter title {title!r}"
        positions.append(found[-1] if len(found) > 1 else found[0])
    headings = [text.find(f"{i}. {page_title(n)}") for i, n in enumerate(chapters(), start=1)]
    assert all(h >= 0 for h in headings), "chapter headings are not numbered 1, 2, ... in the PDF"
    assert headings == sorted(headings), "chapters are out of order in the PDF"
