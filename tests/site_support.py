"""Helpers for the tests of the built site: find the site and a Chromium, serve over HTTP."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
sys.path.insert(0, str(ROOT / "tools"))

from toc import is_notebook, page_title, toc_files  # noqa: E402

IN_CI = os.environ.get("CI") == "true"
HOW_TO_ENABLE = (
    "No Chromium found. Install one (Debian/Ubuntu: apt-get install chromium) or point "
    "CE_CHROMIUM at a Chromium/Chrome executable to run the browser tests."
)
# Chromium flags: headless, no sandbox (we may be root), and no background traffic.
# The host-resolver rule makes every host but 127.0.0.1 unresolvable: the site is
# tested as if the machine had no network at all.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# Wait until MathJax (if the page loads it) has typeset everything.
MATHJAX_DONE = """
async () => {
  if (!window.MathJax) return false;
  for (let i = 0; i < 200 && !(MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  if (!(MathJax.startup && MathJax.startup.promise)) return false;
  await MathJax.startup.promise;
  return true;
}
"""


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI=true a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """CE_CHROMIUM, else a Chromium or Chrome on PATH."""
    explicit = os.environ.get("CE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration of the block."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pages() -> list[str]:
    return toc_files()


def chapters() -> list[str]:
    """The pages that are notebooks (the chapters)."""
    return [p for p in toc_files() if is_notebook(p)]


__all__ = [
    "CHROMIUM_ARGS",
    "HOW_TO_ENABLE",
    "IN_CI",
    "MATHJAX_DONE",
    "ROOT",
    "SCREENSHOTS",
    "SITE",
    "chapters",
    "find_chromium",
    "page_title",
    "pages",
    "serve",
    "skip_or_fail",
]
