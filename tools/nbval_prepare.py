"""Turn the book's MyST chapters into ``.ipynb`` files that nbval can test.

nbval re-executes a notebook and compares every cell's output with the output
stored in the file. MyST Markdown stores no outputs, so this script converts
each chapter listed in ``_toc.yml`` with jupytext and fills in the outputs of
the executed copy that the book build left in ``_build/jupyter_execute``.
nbval then checks that a fresh run prints exactly what the published book
shows: a number that changes from run to run fails the test.

Run ``make book`` first (``make test`` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml``, in order."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    found: list[str] = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return found


def is_notebook(path: Path) -> bool:
    """A MyST file is a notebook when its front matter names a kernel."""
    text = path.read_text(encoding="utf-8")
    return text.startswith("---") and "kernelspec:" in text.split("\n---", 1)[0]


def rendered_outputs(outputs: list) -> list:
    """The outputs as the book shows them.

    myst-nb merges every stream output of a cell into the first one of its
    name *in place* (``coalesce_streams``) but saves the original list, so a
    cell that printed in two flushes is saved as ``[merged, second piece]``.
    Keep the first (merged) stream of each name and drop the later pieces.
    """
    seen: set[str] = set()
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream":
            if output["name"] in seen:
                continue
            seen.add(output["name"])
        kept.append(output)
    return kept


def prepare(entry: str, out_dir: Path, build_dir: Path) -> Path:
    source = ROOT / f"{entry}.md"
    executed_path = build_dir / "jupyter_execute" / f"{entry}.ipynb"
    if not executed_path.exists():
        sys.exit(f"{executed_path} is missing: build the book first (make book)")
    notebook = jupytext.read(source)
    executed = nbformat.read(executed_path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    done = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in code] != [c.source for c in done]:
        sys.exit(f"{executed_path} is stale: its code differs from {source}; rebuild the book")
    for cell, ran in zip(code, done, strict=True):
        cell.outputs = rendered_outputs(ran.outputs)
        cell.execution_count = ran.get("execution_count")
    target = out_dir / f"{entry.replace('/', '__')}.ipynb"
    nbformat.write(notebook, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "nbval")
    parser.add_argument("--build", type=Path, default=ROOT / "_build")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.build = args.build.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.ipynb"):
        old.unlink()
    entries = [e for e in toc_files(ROOT / "_toc.yml") if is_notebook(ROOT / f"{e}.md")]
    for entry in entries:
        print(f"nbval: {prepare(entry, args.out, args.build).relative_to(ROOT)}")
    if not entries:
        sys.exit("no notebook chapters found in _toc.yml")


if __name__ == "__main__":
    main()
