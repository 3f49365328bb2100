"""The built site in a real browser: every page of the table of contents, offline.

Playwright drives Chromium against ``_build/html`` served on 127.0.0.1, with
every other host made unresolvable. Skipped (with a message saying how to
enable them) when the site is not built or no Chromium is found, except under
``CI=true``, where that is a failure.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import jupytext
import nbformat
import pytest
from site_support import (
    CHROMIUM_ARGS,
    HOW_TO_ENABLE,
    MATHJAX_DONE,
    ROOT,
    SCREENSHOTS,
    SITE,
    chapters,
    find_chromium,
    page_title,
    pages,
    serve,
    skip_or_fail,
)

pytestmark = pytest.mark.browser

PAGE_FACTS = """
() => {
  const math = [...document.querySelectorAll('.math')];
  return {
    math: math.length,
    unrendered: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error')
                                                                  || e.textContent.slice(0, 80)),
    raw_tex: document.querySelector('article').innerText.includes('$$'),
    images: [...document.querySelectorAll('article img')].map(img => ({
      src: img.getAttribute('src'), alt: (img.getAttribute('alt') || '').trim(),
      loaded: img.complete && img.naturalWidth > 0})),
  };
}
"""


@pytest.fixture(scope="module")
def base_url():
    if not (SITE / "index.html").exists():
        skip_or_fail("The site is not built: run `make book` first")
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        skip_or_fail(HOW_TO_ENABLE)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: pip install -r requirements.txt")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Recorder:
    """Collects what a page did that a self-contained site must never do."""

    def __init__(self, page, base_url: str):
        self.foreign: list[str] = []
        self.failed: list[str] = []
        self.console: list[str] = []
        host = urlparse(base_url).netloc
        page.on(
            "request",
            lambda r: (
                urlparse(r.url).scheme in ("http", "https")
                and urlparse(r.url).netloc != host
                and self.foreign.append(r.url)
            ),
        )
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))


def open_page(browser, base_url: str, path: str, **context_options):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    page = context.new_page()
    recorder = Recorder(page, base_url)
    page.goto(f"{base_url}/{path}", wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page, recorder


@pytest.mark.parametrize("name", pages())
def test_page_is_complete_offline(browser, base_url, name):
    context, page, rec = open_page(browser, base_url, f"{name}.html")
    try:
        has_mathjax = page.evaluate(MATHJAX_DONE)
        facts = page.evaluate(PAGE_FACTS)
        page.wait_for_load_state("networkidle")
        assert page_title(name) in page.title()
        assert not rec.foreign, f"requests to other hosts: {rec.foreign}"
        assert not rec.failed, f"failed requests: {rec.failed}"
        assert not rec.console, f"console errors: {rec.console}"
        if facts["math"]:
            assert has_mathjax, "the page has math but MathJax did not load"
        assert not facts["unrendered"], f"math left as raw TeX: {facts['unrendered']}"
        assert not facts["errors"], f"MathJax errors: {facts['errors']}"
        assert not facts["raw_tex"], "raw $$ in the page text"
        for img in facts["images"]:
            assert img["loaded"], f"image did not load: {img['src']}"
            assert img["alt"], f"image without alt text: {img['src']}"
    finally:
        context.close()


@pytest.mark.parametrize("name", chapters())
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_chapter_screenshot(browser, base_url, name, scheme):
    context, page, rec = open_page(browser, base_url, f"{name}.html", color_scheme=scheme)
    try:
        page.evaluate(MATHJAX_DONE)
        assert page.evaluate("document.documentElement.dataset.theme") == scheme
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOTS / f"{name.replace('/', '__')}-{scheme}.png"
        page.screenshot(path=str(target), full_page=False)
        assert target.stat().st_size > 10_000
        assert not rec.console and not rec.failed
    finally:
        context.close()


def test_sidebar_navigation_reaches_every_page(browser, base_url):
    context, page, rec = open_page(browser, base_url, f"{pages()[0]}.html")
    try:
        for name in pages()[1:]:
            link = page.locator(f'nav.bd-docs-nav a[href$="{name.split("/")[-1]}.html"]').first
            link.click()
            page.wait_for_url(f"**/{name}.html")
            assert page_title(name) in page.title()
        assert not rec.failed and not rec.foreign
    finally:
        context.close()


def test_search_finds_softmax(browser, base_url):
    context, page, rec = open_page(browser, base_url, "search.html?q=softmax")
    try:
        page.wait_for_selector("#search-results ul.search li", timeout=20_000)
        hits = page.locator("#search-results ul.search li").count()
        assert hits >= 3
        assert not rec.foreign and not rec.console
    finally:
        context.close()


@pytest.mark.parametrize("name", chapters())
def test_chapter_offers_its_notebook(browser, base_url, name):
    """The download menu links a valid .ipynb with the chapter's code.

    The same code cells are executed by the nbval tests (from the same source),
    so a valid notebook with identical sources is a notebook that executes.
    """
    context, page, _rec = open_page(browser, base_url, f"{name}.html")
    try:
        link = page.locator("a.btn:has-text('.ipynb')").first
        href = link.get_attribute("href")
        assert href and href.endswith(f"{name.split('/')[-1]}.ipynb")
        response = page.request.get(page.url.rsplit("/", 1)[0] + "/" + href)
        assert response.ok
        notebook = nbformat.reads(json.dumps(response.json()), as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code and all(c.get("outputs") is not None for c in code)
        source = jupytext.read(ROOT / f"{name}.md")
        assert [c.source for c in code] == [c.source for c in source.cells if c.cell_type == "code"]
    finally:
        context.close()
