"""A local Sphinx extension: a site that works offline, with notebook downloads.

* **MathJax from the site itself.** Sphinx loads MathJax 3 from a public CDN by
  default; without that host every formula shows as raw TeX. This extension
  points ``mathjax_path`` at ``_static/mathjax/`` and copies MathJax 3 there
  from the ``django-static-mathjax`` wheel, which ``requirements.txt`` installs
  from PyPI (it bundles MathJax's ``es5`` build and fonts, and nothing else:
  it does not depend on Django).
* **No dead Thebe loader.** Live code (Thebe) is switched off in ``_config.yml``,
  but sphinx-thebe still injects its loader, twice, with the address of a CDN:
  the second copy throws a redeclaration error in every page's console. The
  loader is dropped from pages.
* **A ``.ipynb`` download on every chapter.** For each page that the build
  executed as a notebook, the executed notebook (its source with the outputs of
  the build's execution, see ``executed.py``) is written to
  ``_sources/<page>.ipynb`` and offered in the theme's download menu.

Enabled from ``_config.yml`` (``sphinx.local_extensions``).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import nbformat
from executed import executed_notebook
from sphinx.application import Sphinx
from toc import ROOT, is_notebook

MATHJAX_ENTRY = "tex-mml-chtml.js"  # the same bundle Sphinx would take from the CDN
# What that bundle loads at run time: TeX extensions, CHTML fonts, the menu,
# and the accessibility components the menu can switch on.
MATHJAX_PARTS = [MATHJAX_ENTRY, "input", "output/chtml", "ui", "a11y", "sre"]


def mathjax_source() -> Path:
    """The ``es5`` folder of the MathJax 3 copy shipped by ``django-static-mathjax``."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise RuntimeError("MathJax is missing: pip install django-static-mathjax (see requirements.txt)")
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    if not (es5 / MATHJAX_ENTRY).is_file():
        raise RuntimeError(f"no MathJax {MATHJAX_ENTRY} under {es5}")
    return es5


def use_local_mathjax(app: Sphinx, config: Any) -> None:
    mathjax_source()  # fail early, with a clear message, if it is missing
    config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"  # relative to _static/


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Put the executed notebook of ``pagename`` (if it is a notebook) into the download menu."""
    if app.builder.format != "html" or not is_notebook(pagename):
        return
    notebook = executed_notebook(ROOT / f"{pagename}.md", Path(app.outdir).parent / ".jupyter_cache")
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    context["ipynb_source"] = f"{pagename}.ipynb"



def drop_thebe_loader(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    def is_thebe(asset: Any) -> bool:
        text = f"{getattr(asset, 'filename', asset)} {getattr(asset, 'attributes', {}).get('body', '')}"
        return "thebe" in text.lower()

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not is_thebe(asset)]


def share_html_visitors(app: Sphinx) -> None:
    """Let the single-page builder (used for the PDF) render what the HTML builder renders, math included.

    sphinx-proof registers its nodes for the ``html`` builder only, and Sphinx
    does not fall back from ``singlehtml`` to ``html``.
    """
    if app.builder.name != "singlehtml":
        return
    # Sphinx adds MathJax only to pages it knows to contain equations, and it
    # does not know that the single page contains all of them.
    app.registry.html_assets_policy = "always"
    handlers = app.registry.translation_handlers
    for node_name, visitors in handlers.get("html", {}).items():
        handlers.setdefault("singlehtml", {}).setdefault(node_name, visitors)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", use_local_mathjax)
    app.connect("builder-inited", share_html_visitors)
    app.connect("build-finished", copy_mathjax)
    app.connect("html-page-context", offer_notebook, priority=450)  # before the theme builds its buttons
    app.connect("html-page-context", drop_thebe_loader, priority=900)  # after the others add assets
    return {"parallel_read_safe": True, "parallel_write_safe": True}
