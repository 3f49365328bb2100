"""Execute every chapter under each BLAS/SIMD variant this machine can run, and compare.

The numbers a chapter prints come from NumPy's SIMD loops and OpenBLAS's
kernels, and both are chosen at run time from the CPU: the reader's machine
may round differently from ours. This check runs every chapter (a fresh
kernel for each) under several such choices, forced with environment
variables:

* ``OPENBLAS_CORETYPE`` selects OpenBLAS's kernels (``Haswell``, ``SkylakeX``,
  ``Sandybridge``, ``Prescott``); ``SkylakeX`` runs only on CPUs with AVX-512F
  (elsewhere it dies of an illegal instruction) and is skipped with a reason;
* ``NPY_DISABLE_CPU_FEATURES`` switches off NumPy's optional (dispatched) SIMD
  loops; the names come from NumPy itself, which rejects names it does not know;
* ``avx2-machine`` is what a common AVX2 machine without AVX-512 runs:
  OpenBLAS's Haswell kernels with NumPy's AVX-512 loops off.

Every chapter must execute, with every in-page assertion holding, under every
variant. The report then lists every printed number that differs between
variants at the precision it is printed with, in three groups:

* **drift**: a printed number that depends on the machine. The goal is none.
* **within the printed spread**: a mean printed as ``mean ± sd`` that moves by
  less than the ``sd`` printed next to it (the reader is told how much it may
  move);
* **rounding level**: numbers below 1e-6 printed in scientific notation, such
  as a gradient check's relative error; their digits depend on summation order,
  and every such number is asserted below a tolerance in its cell.

Usage (``make repro`` runs the first)::

    python tools/repro.py                        # all chapters, all variants, two at a time
    python tools/repro.py --variants default,sandybridge --chapters book/part2/margins
    python tools/repro.py --list                 # the variants and why some are skipped

Exit status 0 when every chapter ran under every variant and the drift group is
empty, 1 otherwise. The full report is also written to ``_build/repro/report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toc import ROOT, is_notebook, toc_files

OUT = ROOT / "_build" / "repro"
# Cells that measure the machine (wall time) carry this tag, for nbval too: their output is not compared.
MEASUREMENT_TAG = "nbval-ignore-output"
CELL_TIMEOUT = 300  # seconds; a chapter must take far less (the book's goal is 30 s)

# Printed at the end of every execution, in the kernel, so that the report shows
# which kernels and loops really ran (an ignored variable would otherwise pass unseen).
PROBE = """\
import json as _j, numpy as _np, threadpoolctl as _t
from numpy._core._multiarray_umath import __cpu_features__ as _f, __cpu_dispatch__ as _d
print("REPRO-PROBE" + _j.dumps({
    "numpy": _np.__version__,
    "blas": sorted({i.get("architecture", "?") for i in _t.threadpool_info() if i["user_api"] == "blas"}),
    "simd": sorted(k for k in _d if _f.get(k))}))
"""


@dataclass
class Variant:
    """One way of running: environment variables, and a reason to skip if the CPU cannot."""

    name: str
    env: dict[str, str]
    what: str
    skip: str = ""


@dataclass
class Result:
    """One chapter executed under one variant."""

    chapter: str
    variant: str
    ok: bool
    seconds: float
    error: str = ""
    outputs: list[str | None] = field(default_factory=list)  # text output per code cell; None: a measurement
    probe: dict = field(default_factory=dict)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def numpy_dispatch(python: str) -> list[str]:
    """The names of NumPy's optional SIMD targets, read from the NumPy that will run the chapters."""
    code = "from numpy._core._multiarray_umath import __cpu_dispatch__ as d; print(' '.join(d))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError:  # NumPy 1.x keeps them in numpy.core
        code = code.replace("numpy._core", "numpy.core")
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def variants(python: str) -> list[Variant]:
    """Every variant, with a skip reason where this machine cannot run it."""
    x86 = platform.machine().lower() in {"x86_64", "amd64"}
    flags = cpu_flags()
    dispatch = numpy_dispatch(python)
    avx512 = [name for name in dispatch if name.startswith("AVX512") or name == "X86_V4"]

    def needs(*features: str) -> str:
        """Why OpenBLAS kernels using these CPU features cannot run here ("" if they can)."""
        if not x86:
            return f"OpenBLAS's x86 kernels do not exist on {platform.machine()}"
        missing = [f for f in features if f not in flags]
        return f"this CPU lacks {', '.join(missing)} (the kernels would crash)" if missing else ""

    return [
        Variant("default", {}, "OpenBLAS and NumPy choose for this CPU"),
        Variant(
            "haswell",
            {"OPENBLAS_CORETYPE": "Haswell"},
            "OpenBLAS Haswell kernels (AVX2, FMA)",
            needs("avx2", "fma"),
        ),
        Variant(
            "skylakex",
            {"OPENBLAS_CORETYPE": "SkylakeX"},
            "OpenBLAS SkylakeX kernels (AVX-512)",
            needs("avx512f", "avx512bw", "avx512dq", "avx512vl"),
        ),
        Variant(
            "sandybridge",
            {"OPENBLAS_CORETYPE": "Sandybridge"},
            "OpenBLAS Sandybridge kernels (AVX, no FMA)",
            needs("avx"),
        ),
        Variant(
            "prescott", {"OPENBLAS_CORETYPE": "Prescott"}, "OpenBLAS Prescott kernels (SSE3)", needs("pni")
        ),  # Linux calls SSE3 "pni"
        Variant(
            "numpy-baseline",
            {"NPY_DISABLE_CPU_FEATURES": " ".join(dispatch)},
            "NumPy's optional SIMD loops off: " + (" ".join(dispatch) or "none"),
            "" if dispatch else "this NumPy has no optional SIMD loops",
        ),
        Variant(
            "avx2-machine",
            {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": " ".join(avx512)},
            "an AVX2 CPU without AVX-512: Haswell kernels, NumPy's AVX-512 loops off ("
            + (" ".join(avx512) or "none")
            + ")",
            needs("avx2", "fma") or ("" if avx512 else "this NumPy has no AVX-512 loops to turn off"),
        ),
    ]


def chapters() -> list[str]:
    """The notebook pages of the table of contents, in reading order."""
    return [page for page in toc_files() if is_notebook(page)]


# ---------------------------------------------------------------- one execution (a worker process)


def execute(chapter: str, out: Path) -> None:
    """Run one chapter in a fresh kernel (inheriting this process's environment); write JSON to ``out``."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    source = ROOT / f"{chapter}.md"
    notebook = jupytext.read(source)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(source.parent)}},
    )
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as exc:
        lines = [line for line in ANSI.sub("", str(exc)).strip().splitlines() if line.strip()]
        error = lines[-1] if lines else "cell execution failed"
    except Exception as exc:  # a dead kernel or a timeout: still a result, not a crash of the check
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    texts, probe = [], {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        text = "".join(_text(output) for output in cell.get("outputs", []))
        if text.startswith("REPRO-PROBE"):
            probe = json.loads(text[len("REPRO-PROBE") :])
            continue
        # A measurement of this machine (a timing), declared as such for nbval too: not compared.
        texts.append(None if MEASUREMENT_TAG in cell.get("metadata", {}).get("tags", []) else text)
    result = Result(chapter, os.environ.get("REPRO_VARIANT", "?"), not error, seconds, error, texts, probe)
    out.write_text(json.dumps(result.__dict__, indent=1))


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") in {"execute_result", "display_data"}:
        data = output.get("data", {})
        return "" if "image/png" in data else data.get("text/plain", "") + "\n"
    return ""


def run_one(python: str, chapter: str, variant: Variant, out: Path) -> Result:
    """Execute one chapter under one variant in a fresh process; never raises."""
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore::ImportWarning",
        "REPRO_VARIANT": variant.name,
        **variant.env,
    }
    for name in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES"):
        if name not in variant.env:
            env.pop(name, None)
    target = out / variant.name / f"{chapter.replace('/', '__')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [python, __file__, "--worker", chapter, "--json", str(target)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0 or not target.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return Result(
            chapter,
            variant.name,
            False,
            time.perf_counter() - start,
            f"worker exited with {proc.returncode}: " + " | ".join(tail),
        )
    return Result(**json.loads(target.read_text()))


# ---------------------------------------------------------------- comparing printed numbers

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])|\b(?:nan|inf)\b")


def split_numbers(text: str) -> tuple[str, list[str]]:
    """The text with every number replaced by ``{}``, and the numbers as printed."""
    numbers = NUMBER.findall(text)
    return re.sub(r"[ \t]+", " ", NUMBER.sub("{}", text)), numbers  # column padding is not a difference


def rounding_level(printed: str) -> bool:
    """A number printed in scientific notation below 1e-6: an error measure at rounding level."""
    if "e" not in printed.lower():
        return False
    try:
        return abs(float(printed)) < 1e-6
    except ValueError:
        return False


@dataclass
class Difference:
    chapter: str
    cell: int
    kind: str  # "drift", "spread", "rounding", "text" or "measurement"
    context: str
    values: dict[str, str]


def compare(
    results: dict[tuple[str, str], Result], chapter_list: list[str], names: list[str]
) -> list[Difference]:
    """Every printed number (or text) of a chapter that differs between the variants that ran it."""
    found: list[Difference] = []
    for chapter in chapter_list:
        ran = [name for name in names if (chapter, name) in results and results[chapter, name].ok]
        if len(ran) < 2:
            continue
        ref = results[chapter, ran[0]]
        for cell, ref_text in enumerate(ref.outputs):
            if ref_text is None:
                found.append(Difference(chapter, cell, "measurement", "", {}))
                continue
            template, ref_numbers = split_numbers(ref_text)
            per_variant = {}
            for name in ran[1:]:
                other = results[chapter, name].outputs
                text = (other[cell] if cell < len(other) else "") or ""
                per_variant[name] = split_numbers(text)
            if any(t != template or len(n) != len(ref_numbers) for t, n in per_variant.values()):
                changed = [n for n, (t, _) in per_variant.items() if t != template]
                found.append(
                    Difference(
                        chapter,
                        cell,
                        "text",
                        _first_line_that_differs(ref_text, per_variant),
                        {ran[0]: "reference", **{n: "text differs" for n in changed}},
                    )
                )
                continue
            for i, printed in enumerate(ref_numbers):
                values = {ran[0]: printed, **{n: nums[i] for n, (_, nums) in per_variant.items()}}
                if len(set(values.values())) == 1:
                    continue
                kind = _classify(i, ref_numbers, per_variant, values, template)
                found.append(Difference(chapter, cell, kind, _context(ref_text, i), values))
    return found


SPREAD_AFTER = re.compile(r"[°%]?\s*±")  # "12.5 ± 1.3", "12.5° ± 1.3°", "95% ± 2%"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _classify(
    i: int, ref_numbers: list[str], per_variant: dict, values: dict[str, str], template: str
) -> str:
    if all(rounding_level(v) for v in values.values()):
        return "rounding"
    pieces = template.split("{}")
    after = pieces[i + 1] if i + 1 < len(pieces) else ""
    before = pieces[i].rstrip()
    if SPREAD_AFTER.match(after):  # a mean: allowed to move by less than the spread printed after it
        spreads = [float(ref_numbers[i + 1])] + [float(nums[i + 1]) for _, nums in per_variant.values()]
        means = [float(v) for v in values.values()]
        return "spread" if max(means) - min(means) <= min(spreads) else "drift"
    if before.endswith("±"):  # the spread itself: reported with its mean
        return "spread"
    return "drift"


def _context(text: str, index: int) -> str:
    """The output line that holds the ``index``-th number, with that number marked."""
    count = 0
    for line in text.splitlines():
        matches = list(NUMBER.finditer(line))
        if count + len(matches) > index:
            m = matches[index - count]
            return (line[: m.start()] + "⟦" + m.group() + "⟧" + line[m.end() :]).strip()[:160]
        count += len(matches)
    return ""


def _first_line_that_differs(ref_text: str, per_variant: dict) -> str:
    ref_lines = ref_text.splitlines()
    for template, _ in per_variant.values():
        for j, line in enumerate(ref_lines):
            t, _ = split_numbers(line)
            others = template.splitlines()
            if j >= len(others) or others[j] != t:
                return line.strip()[:160]
    return ref_lines[0][:160] if ref_lines else ""


# ---------------------------------------------------------------- the report


def report(results, chapter_list, all_variants, diffs) -> str:
    ran = [v for v in all_variants if not v.skip]
    lines = [
        "# Reproducibility check",
        "",
        f"python: {sys.version.split()[0]}, machine: {platform.machine()}",
        "",
        "## Variants",
        "",
    ]
    for v in all_variants:
        env = " ".join(f"{k}={val!r}" for k, val in v.env.items()) or "(no variable set)"
        state = f"SKIPPED: {v.skip}" if v.skip else env
        lines.append(f"- **{v.name}**: {v.what}. {state}")
    lines += ["", "## Chapters x variants (seconds; FAIL = an error or a failed assertion)", ""]
    width = max(len(c) for c in chapter_list)
    header = f"| {'chapter':{width}s} | " + " | ".join(f"{v.name:>14s}" for v in ran) + " |"
    lines += [header, "|" + "-" * (width + 2) + "|" + "|".join("-" * 16 for _ in ran) + "|"]
    for chapter in chapter_list:
        cells = []
        for v in ran:
            r = results.get((chapter, v.name))
            cells.append(f"{'—':>14s}" if r is None else f"{r.seconds:13.1f}s" if r.ok else f"{'FAIL':>14s}")
        lines.append(f"| {chapter:{width}s} | " + " | ".join(cells) + " |")
    probes = {
        v.name: next((r.probe for (c, n), r in results.items() if n == v.name and r.probe), {}) for v in ran
    }
    lines += ["", "What ran (read inside the kernel):", ""]
    for name, probe in probes.items():
        lines.append(
            f"- {name}: NumPy {probe.get('numpy', '?')}, "
            f"OpenBLAS kernels {', '.join(probe.get('blas', []))}, "
            f"NumPy SIMD targets on: {' '.join(probe.get('simd', [])) or 'none'}"
        )
    failures = [r for r in results.values() if not r.ok]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {r.chapter} under {r.variant}: {r.error}" for r in failures]
    groups = [
        ("drift", "Drift: printed numbers that depend on the machine (the goal is none)"),
        ("text", "Outputs whose text (not only numbers) differs"),
        ("spread", "Means that move by less than the spread printed beside them"),
        ("rounding", "Rounding-level numbers (< 1e-6, asserted in their cells)"),
    ]
    measured = [d for d in diffs if d.kind == "measurement"]
    lines += [
        "",
        f"## Measurements of the machine, not compared: {len(measured)} cells",
        "",
        f"Cells tagged `{MEASUREMENT_TAG}` time code on the machine that runs them; the chapter says so.",
        "",
    ]
    lines += [f"- {d.chapter}, code cell {d.cell + 1}" for d in measured]
    for kind, title in groups:
        group = [d for d in diffs if d.kind == kind]
        lines += ["", f"## {title}: {len(group)}", ""]
        for d in group:
            values = ", ".join(f"{k} {v}" for k, v in d.values.items())
            lines.append(f"- {d.chapter}, code cell {d.cell + 1}: `{d.context}` — {values}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", help="comma-separated names (default: all this machine can run)")
    parser.add_argument("--chapters", help="comma-separated pages, e.g. book/part2/margins (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="executions at a time (default 2)")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter whose kernel runs the chapters"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        execute(args.worker, args.json)
        return 0

    all_variants = variants(args.python)
    if args.variants:
        wanted = args.variants.split(",")
        unknown = sorted(set(wanted) - {v.name for v in all_variants})
        if unknown:
            parser.error(
                f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(v.name for v in all_variants)}"
            )
        all_variants = [v for v in all_variants if v.name in wanted]
    if args.list:
        for v in all_variants:
            print(f"{v.name:15s} {v.what}" + (f"  [SKIPPED: {v.skip}]" if v.skip else ""))
        return 0
    chapter_list = chapters()
    if args.chapters:
        wanted = args.chapters.split(",")
        unknown = sorted(set(wanted) - set(chapter_list))
        if unknown:
            parser.error(f"not a chapter of _toc.yml: {', '.join(unknown)}")
        chapter_list = [c for c in chapter_list if c in wanted]

    ran = [v for v in all_variants if not v.skip]
    for v in all_variants:
        if v.skip:
            print(f"repro: skipping {v.name}: {v.skip}", flush=True)
    jobs = [(c, v) for v in ran for c in chapter_list]
    start = time.perf_counter()
    results: dict[tuple[str, str], Result] = {}

    def work(job):
        chapter, variant = job
        result = run_one(args.python, chapter, variant, args.out)
        status = f"{result.seconds:5.1f}s" if result.ok else "FAIL  " + result.error[:100]
        print(f"repro: {variant.name:15s} {chapter:28s} {status}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for result in pool.map(work, jobs):
            results[result.chapter, result.variant] = result
    diffs = compare(results, chapter_list, [v.name for v in ran])
    text = report(results, chapter_list, all_variants, diffs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    print(text)
    drift = [d for d in diffs if d.kind in {"drift", "text"}]
    failed = [r for r in results.values() if not r.ok]
    print(
        f"repro: {len(jobs)} executions in {time.perf_counter() - start:.0f} s; {len(failed)} failed; "
        f"{len(drift)} drifting outputs; report in {args.out / 'report.md'}"
    )
    return 1 if failed or drift else 0


if __name__ == "__main__":
    sys.exit(main())
