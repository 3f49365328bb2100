"""Cross-entropy value + gradient: ce_lib against PyTorch and against the floor of unavoidable work.

    python benchmarks/run.py            # full run (several minutes; includes the LLM-size linear case)
    python benchmarks/run.py --quick    # a few minutes
    python benchmarks/run.py --json book/part2/data/benchmark.json

For each shape (N, C) and dtype it times, interleaved round by round so that
every contender sees the same machine load, and reports medians:

* ``ce_lib``      ``cross_entropy_value_and_grad(z, y)`` (integer targets, mean);
* ``ce_lib 2 calls``  ``cross_entropy(z, y)`` then ``cross_entropy_grad(z, y)``;
* ``multi-pass``  a straightforward NumPy version (max, subtract, exp, sum,
  divide, log, one-hot): what one writes without thinking about passes;
* ``naive``       separate softmax, log, and the gradient through the explicit
  C x C softmax Jacobian, only where the Jacobians fit in ``--naive-limit``;
* ``torch``       ``F.cross_entropy`` forward + backward on the CPU, if torch is installed;
* ``floor``       the slower of ``np.copy(z)`` (one read and one write per logit)
  and ``np.exp(z)`` (one exponential per logit) on the same array.

The logits are ``normal(0, 2)``. A second table times ``ce_lib``, the floor and torch
for other kinds of logits (``LOGIT_KINDS``): a z-loss-like batch (every row's
log-sum-exp close to 0, about half of them below), small logits (``0.01 z``), logits
shifted to about -50 (every ``exp(z)`` tiny), and huge losses (the target logit far
below the row's maximum, beyond the exponent range). ``ce_lib`` takes one pass for
all of them: the rows of these tables are the whole story, there is no slower path.

Peak memory is measured with tracemalloc (which sees NumPy's allocations, not
torch's), as the extra memory beyond the inputs and the returned gradient.
Timings are printed, never asserted. Threads are pinned before NumPy is
imported (``--threads``, default 1: NumPy's elementwise functions use one
core, so one thread for every contender compares like with like).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, no LLM-size linear case (a few min)")
    p.add_argument("--threads", type=int, default=1, help="threads for BLAS/OpenMP and torch (default 1)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per case (default 3 quick, 11 full)"
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--naive-limit", type=float, default=1.0, help="GiB allowed for the naive Jacobians")
    p.add_argument("--no-linear", action="store_true", help="skip the linear cross-entropy part")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before NumPy (and torch) are imported

import gc  # noqa: E402
import statistics  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a clean clone works too
from ce_lib.categorical import cross_entropy, cross_entropy_grad, cross_entropy_value_and_grad  # noqa: E402
from ce_lib.scale import linear_cross_entropy_reference, linear_cross_entropy_value_and_grad  # noqa: E402

try:
    import torch

    torch.set_num_threads(ARGS.threads)
    F = torch.nn.functional
except ImportError:  # the benchmark runs without torch and says so
    torch = None

SHAPES = [(4096, 10), (4096, 1000), (512, 32000), (64, 128256)]
DTYPES = [np.float32, np.float64]
KIND_SHAPES = [(4096, 1000), (512, 32000)]  # the shapes of the logit-kinds table (--quick: the first)
MiB = 1 << 20


# -- the contenders ----------------------------------------------------------


def run_ce_lib(z, y):
    return cross_entropy_value_and_grad(z, y)


def run_ce_lib_two_calls(z, y):
    return cross_entropy(z, y), cross_entropy_grad(z, y)


def run_multi_pass(z, y):
    """The textbook formulas, one NumPy call per step (max-shifted, so at least stable)."""
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    p = e / e.sum(axis=1, keepdims=True)
    logp = shifted - np.log(e.sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), y].mean()
    onehot = np.zeros_like(z)
    onehot[np.arange(n), y] = 1
    return loss, (p - onehot) / n


def run_naive(z, y):
    """Softmax, then log, then dL/dz = J^T dL/dp through the explicit (N, C, C) Jacobians."""
    n = z.shape[0]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p = p / p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    dl_dp = np.zeros_like(p)
    dl_dp[np.arange(n), y] = -1.0 / (n * p[np.arange(n), y])
    jac = p[:, :, None] * np.eye(z.shape[1], dtype=z.dtype) - p[:, :, None] * p[:, None, :]
    return loss, np.einsum("nij,ni->nj", jac, dl_dp)


def run_floor_copy(z, y):
    return np.copy(z)


def run_floor_exp(z, y):
    return np.exp(z)


def make_torch(z, y):
    yt = torch.from_numpy(y)

    def run_torch(z_, y_):
        zt = torch.from_numpy(z).requires_grad_()
        loss = F.cross_entropy(zt, yt)
        loss.backward()
        return loss.detach(), zt.grad

    return run_torch


# -- measuring ----------------------------------------------------------------


def time_interleaved(fns: dict, z, y, repeats: int) -> dict:
    """Median seconds of each function, timed in rounds: each round runs every function once."""
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up (first-touch, caches, lazy imports)
        f(z, y)
    for _ in range(repeats):
        for k, f in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out = f(z, y)
            times[k].append(time.perf_counter() - t0)
            del out
    return {k: statistics.median(v) for k, v in times.items()}


def traced_peak(f, *args) -> tuple[int, object]:
    """Peak bytes NumPy allocated during ``f(*args)`` (tracemalloc), and its result."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = f(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, out


def returned_bytes(out) -> int:
    if isinstance(out, np.ndarray):
        return out.nbytes
    if isinstance(out, tuple):
        return sum(returned_bytes(o) for o in out)
    return 0


def zloss_like(z, y, rng):
    """Every row's log-sum-exp close to 0 (normal, sd 0.1): what a z-loss trains towards."""
    lse = np.logaddexp.reduce(z, axis=1, keepdims=True)
    return z - lse + rng.normal(scale=0.1, size=(z.shape[0], 1))


def huge_loss(z, y, rng):
    """The target logit 1000 (float64) or 100 (float32) below the others: exp(z_c - z_y) overflows."""
    z = z.copy()
    z[np.arange(len(y)), y] -= 1000.0 if z.dtype == np.float64 else 100.0
    return z


LOGIT_KINDS = {
    "normal(0, 2)": lambda z, y, rng: z,
    "z-loss: log Z ~ 0": zloss_like,
    "small: 0.01 z": lambda z, y, rng: 0.01 * z,
    "shifted: z - 50": lambda z, y, rng: z - 50.0,
    "huge loss: z_y - 1000 (f32: - 100)": huge_loss,
}


def bench_case(n, c, dtype, repeats, kind=None):
    """One row of the main table (``kind=None``: every contender) or of the logit-kinds table."""
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(n, c))
    y = rng.integers(0, c, size=n)
    if kind is not None:
        z = LOGIT_KINDS[kind](z.astype(dtype).astype(np.float64), y, np.random.default_rng(1))
    z = z.astype(dtype)
    fns = {"ce_lib": run_ce_lib}
    if kind is None:
        fns |= {"ce_lib_two_calls": run_ce_lib_two_calls, "multi_pass": run_multi_pass}
    fns |= {"floor_copy": run_floor_copy, "floor_exp": run_floor_exp}
    naive_bytes = n * c * c * z.itemsize
    if kind is None and naive_bytes <= ARGS.naive_limit * (1 << 30):
        fns["naive"] = run_naive
    if torch is not None:
        fns["torch"] = make_torch(z, y)
    t = time_interleaved(fns, z, y, repeats)
    floor = max(t["floor_copy"], t["floor_exp"])
    row = {
        "N": n,
        "C": c,
        "dtype": np.dtype(dtype).name,
        "logits": kind or "normal(0, 2)",
        "logits_MiB": z.nbytes / MiB,
        "time_ms": {k: 1e3 * v for k, v in t.items()},
        "floor_ms": 1e3 * floor,
        "floor_is": "exp" if t["floor_exp"] >= t["floor_copy"] else "copy",
        "ratio_to_floor": {k: t[k] / floor for k in t if not k.startswith("floor")},
        "ratio_to_torch": {k: t[k] / t["torch"] for k in t if not k.startswith("floor")} if torch else None,
        "naive_skipped_GiB": None if "naive" in fns or kind else naive_bytes / (1 << 30),
        "extra_peak_MiB": {},
    }
    for k, f in fns.items():
        if k == "torch" or (kind and k != "ce_lib"):
            continue  # tracemalloc does not see torch's allocator; the floors' memory is known
        peak, out = traced_peak(f, z, y)
        row["extra_peak_MiB"][k] = (peak - returned_bytes(out)) / MiB
        del out
    row["extra_peak_in_logits"] = {k: v / row["logits_MiB"] for k, v in row["extra_peak_MiB"].items()}
    return row


def bench_linear(n, d, v, dtype, repeats, chunk_size=None, time_it=True, zloss_bias=False):
    """Chunked against materialised linear cross-entropy: time (median) and traced peak memory.

    ``zloss_bias``: a bias of ``-log V`` puts every row's log-sum-exp close to 0 (about half the
    rows below), as a z-loss does.
    """
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((n, d), dtype=np.float32) * 0.5).astype(dtype)
    W = (rng.standard_normal((v, d), dtype=np.float32) / np.sqrt(d)).astype(dtype)
    y = rng.integers(0, v, size=n)
    b = np.full(v, -np.log(v) - 0.125, dtype=dtype) if zloss_bias else None
    outputs_mib = (h.nbytes + W.nbytes) / MiB  # dh and dW

    def chunked():
        return linear_cross_entropy_value_and_grad(h, W, y, bias=b, chunk_size=chunk_size)

    def materialised():
        return linear_cross_entropy_reference(h, W, y, bias=b)

    result = {
        "N": n,
        "d": d,
        "V": v,
        "dtype": np.dtype(dtype).name,
        "chunk_size": chunk_size,
        "zloss_bias": zloss_bias,
        "logits_MiB": n * v * np.dtype(dtype).itemsize / MiB,
        "outputs_MiB": outputs_mib,
    }
    for name, f in (("chunked", chunked), ("materialised", materialised)):
        t0 = time.perf_counter()
        peak, out = traced_peak(f)
        elapsed = time.perf_counter() - t0
        if name == "chunked":
            ref_loss = float(out[0])
        else:
            result["loss_difference"] = abs(float(out[0]) - ref_loss)
        del out
        result[f"{name}_peak_MiB"] = peak / MiB
        result[f"{name}_extra_peak_MiB"] = peak / MiB - outputs_mib
        result[f"{name}_time_s_traced_once"] = elapsed
    if time_it:
        times = {"chunked": [], "materialised": []}
        for _ in range(repeats):
            for name, f in (("chunked", chunked), ("materialised", materialised)):
                gc.collect()
                t0 = time.perf_counter()
                out = f()
                times[name].append(time.perf_counter() - t0)
                del out
        result["time_s"] = {k: statistics.median(v) for k, v in times.items()}
        result["time_ratio_chunked_to_materialised"] = (
            result["time_s"]["chunked"] / result["time_s"]["materialised"]
        )
    return result


# -- reporting -----------------------------------------------------------------


def machine_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": ARGS.threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
    }


def fmt(x, spec="7.2f"):
    return "      -" if x is None else format(x, spec)


def print_table(rows):
    cols = ["ce_lib", "ce_lib_two_calls", "multi_pass", "naive", "torch"]
    print(f"\nMedian ms for value + gradient (threads={ARGS.threads}); in brackets: ratio to the floor")
    head = f"{'N':>6} {'C':>7} {'dtype':>8} {'floor':>8} " + " ".join(f"{c:>16}" for c in cols)
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for c in cols:
            if c in r["time_ms"]:
                cells.append(f"{r['time_ms'][c]:8.2f} ({r['ratio_to_floor'][c]:4.2f})")
            else:
                cells.append(f"{'-':>16}")
        print(
            f"{r['N']:>6} {r['C']:>7} {r['dtype']:>8} {r['floor_ms']:8.2f} "
            + " ".join(f"{c:>16}" for c in cells)
        )
    if torch is not None:
        print(
            "\nce_lib / torch:  "
            + "  ".join(
                f"({r['N']},{r['C']},{r['dtype'][5:]}) {r['ratio_to_torch']['ce_lib']:.2f}" for r in rows
            )
        )
    print("\nExtra peak memory beyond inputs and returned gradient, in copies of the logits (tracemalloc):")
    for r in rows:
        e = r["extra_peak_in_logits"]
        print(
            f"  ({r['N']}, {r['C']}, {r['dtype']}): ce_lib {e['ce_lib']:.3f}, "
            f"multi-pass {e['multi_pass']:.2f}" + (f", naive {e['naive']:.0f}" if "naive" in e else "")
        )


def print_kinds_table(rows):
    print(f"\nOther kinds of logits, median ms for value + gradient (threads={ARGS.threads}):")
    head = f"{'N':>6} {'C':>7} {'dtype':>8} {'logits':>22} {'floor':>8} {'ce_lib':>8} {'torch':>8}"
    head += f" {'/floor':>7} {'/torch':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r["time_ms"].get("torch")
        vs_torch = r["ratio_to_torch"]["ce_lib"] if r["ratio_to_torch"] else None
        print(
            f"{r['N']:>6} {r['C']:>7} {r['dtype']:>8} {r['logits']:>22} {r['floor_ms']:8.2f} "
            f"{r['time_ms']['ce_lib']:8.2f} {fmt(t, '8.2f')} {r['ratio_to_floor']['ce_lib']:7.2f} "
            f"{fmt(vs_torch, '7.2f')}"
        )


def goals(rows):
    """The issue's goals, checked on this run's ratios (reported, never asserted)."""
    out = []
    for r in rows:
        if r["C"] < 1000:
            continue
        f = r["ratio_to_floor"]["ce_lib"]
        t = r["ratio_to_torch"]["ce_lib"] if r["ratio_to_torch"] else None
        m = r["extra_peak_in_logits"]["ce_lib"]
        out.append(
            {
                "N": r["N"],
                "C": r["C"],
                "dtype": r["dtype"],
                "logits": r["logits"],
                "ratio_to_floor": f,
                "ratio_to_torch": t,
                "extra_peak_in_logits": m,
                "floor_ok": f <= 2.0,
                "torch_ok": None if t is None else t <= 1.0,
                "memory_ok": m <= 1.0,
            }
        )
    return out


def main():
    repeats = ARGS.repeats or (3 if ARGS.quick else 11)
    info = machine_info()
    print(json.dumps(info, indent=1))
    if torch is None:
        print("torch: not installed (its column is left out)")
    t_start = time.perf_counter()
    rows = []
    for dtype in DTYPES:
        for n, c in SHAPES:
            rows.append(bench_case(n, c, dtype, repeats))
            r = rows[-1]
            print(
                f"  ({n}, {c}, {r['dtype']}): ce_lib {r['time_ms']['ce_lib']:.2f} ms, "
                f"floor {r['floor_ms']:.2f} ms"
                + (f", torch {r['time_ms']['torch']:.2f} ms" if torch else ""),
                flush=True,
            )
    print_table(rows)
    kind_rows = []
    for dtype in DTYPES:
        for n, c in KIND_SHAPES[:1] if ARGS.quick else KIND_SHAPES:
            for kind in LOGIT_KINDS:
                kind_rows.append(bench_case(n, c, dtype, repeats, kind=kind))
    print_kinds_table(kind_rows)
    g = goals(rows) + goals([r for r in kind_rows if r["logits"] != "normal(0, 2)"])
    print("\nGoals for C >= 1000 (ce_lib <= 2x floor, <= 1x torch, extra memory <= 1 copy of the logits):")
    for x in g:
        print(
            f"  ({x['N']}, {x['C']}, {x['dtype']}, {x['logits']}): floor x{x['ratio_to_floor']:.2f} "
            f"{'met' if x['floor_ok'] else 'NOT met'}; torch x{fmt(x['ratio_to_torch'], '.2f').strip()} "
            f"{'met' if x['torch_ok'] else ('n/a' if x['torch_ok'] is None else 'NOT met')}; "
            f"memory {x['extra_peak_in_logits']:.3f} {'met' if x['memory_ok'] else 'NOT met'}"
        )

    linear = []
    if not ARGS.no_linear:
        print("\nLinear cross-entropy (h @ W.T then CE, value + dh, dW): chunked vs materialised")
        n, d, v, rep, chunk = (1024, 256, 32000, 2, 128) if ARGS.quick else (2048, 512, 32000, 3, 256)
        cases = [(n, d, v, np.float32, rep, chunk, True, zloss) for zloss in (False, True)]
        if not ARGS.quick:
            cases.append((8192, 1024, 128256, np.float32, 1, None, False, False))  # default chunk size
        for n, d, v, dt, rep, chunk, time_it, zloss_bias in cases:
            res = bench_linear(n, d, v, dt, rep, chunk_size=chunk, time_it=time_it, zloss_bias=zloss_bias)
            linear.append(res)
            line = (
                f"  N={n} d={d} V={v} {res['dtype']}{', z-loss bias' if zloss_bias else ''}: "
                f"logits would be {res['logits_MiB']:.0f} MiB; "
                f"extra peak chunked {res['chunked_extra_peak_MiB']:.0f} MiB, "
                f"materialised {res['materialised_extra_peak_MiB']:.0f} MiB"
            )
            if time_it:
                line += (
                    f"; time chunked {res['time_s']['chunked']:.2f} s, materialised "
                    f"{res['time_s']['materialised']:.2f} s "
                    f"(x{res['time_ratio_chunked_to_materialised']:.2f})"
                )
            else:
                line += (
                    f"; one traced run each: chunked {res['chunked_time_s_traced_once']:.1f} s, "
                    f"materialised {res['materialised_time_s_traced_once']:.1f} s"
                )
            print(line, flush=True)
    info["wall_s"] = time.perf_counter() - t_start
    print(f"\nwall time {info['wall_s']:.1f} s")
    if ARGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.json)), exist_ok=True)
        with open(ARGS.json, "w") as fh:
            json.dump(
                {
                    "machine": info,
                    "quick": ARGS.quick,
                    "repeats": repeats,
                    "cases": rows,
                    "goals": g,
                    "logit_kinds": kind_rows,
                    "linear": linear,
                },
                fh,
                indent=1,
            )
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
