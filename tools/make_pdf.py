"""Print the whole book to ``_build/pdf/book.pdf`` with headless Chromium.

The book is built once more with Sphinx's *single-page* HTML builder (the
notebooks are not re-executed: their outputs come from the execution cache),
served on 127.0.0.1, and printed by the same Chromium the browser tests use,
after MathJax has typeset every formula. Internal links (to sections, equations,
figures) are anchors inside the single page, so they stay links in the PDF.
No network is needed: MathJax is served from the site itself.

Usage: ``python tools/make_pdf.py`` (``make pdf`` does it in the project's venv).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from site_support import CHROMIUM_ARGS, HOW_TO_ENABLE, MATHJAX_DONE, find_chromium, serve  # noqa: E402
from toc import toc_files  # noqa: E402

SINGLE = ROOT / "_build" / "singlehtml"
PDF = ROOT / "_build" / "pdf" / "book.pdf"

PRINT_CSS = """
@media print {
  .bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .prev-next-area,
  .bd-footer, .bd-footer-content, .headerlink, .toggle-hidden { display: none !important; }
  .bd-main, .bd-content, .bd-article-container, .bd-page-width { max-width: 100% !important; }
  details.dropdown, div.dropdown { break-inside: avoid; }
  figure, .cell_output img { break-inside: avoid; }
  pre { white-space: pre-wrap !important; word-break: break-all; }
}
"""


def build_single_page() -> Path:
    subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(ROOT),
            "--builder",
            "singlehtml",
            "-W",
            "-n",
            "--keep-going",
        ],
        check=True,
    )
    # The single page is written under the root document's name (book/intro.html),
    # but its links to _static/ and _images/ assume it sits at the top: put it there.
    page = SINGLE / "book.html"
    shutil.copyfile(SINGLE / f"{toc_files()[0]}.html", page)
    return page


def print_to_pdf(target: Path = PDF) -> Path:
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        sys.exit(HOW_TO_ENABLE)
    target.parent.mkdir(parents=True, exist_ok=True)
    with serve(SINGLE) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/book.html", wait_until="networkidle")
        if not page.evaluate(MATHJAX_DONE):
            sys.exit("MathJax did not load: the PDF would show raw TeX")
        # Open every collapsed solution so that the PDF contains them.
        page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
        page.add_style_tag(content=PRINT_CSS)
        page.emulate_media(media="print")
        page.pdf(
            path=str(target),
            format="A4",
            print_background=True,
            outline=True,
            tagged=True,
            margin={"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"},
        )
        browser.close()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="reuse _build/singlehtml")
    args = parser.parse_args()
    if not args.skip_build or not (SINGLE / "book.html").exists():
        build_single_page()
    print(f"PDF written to {print_to_pdf().relative_to(ROOT)}")


if __name__ == "__main__":
    main()
