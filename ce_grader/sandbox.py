"""Run untrusted notebook code in a separate, limited process.

One call of :func:`run` starts a fresh Python process (``python -I``) in a
fresh temporary directory, with

* a memory limit (``RLIMIT_AS``), a CPU-time limit (``RLIMIT_CPU``), a limit on
  the size of files it writes (``RLIMIT_FSIZE``) and no core dumps;
* a time limit per cell and per probe (``SIGALRM`` inside the process, and a
  watchdog outside it that kills the whole process group if the process does
  not stop by itself), and a wall-clock deadline for the whole run;
* its standard output discarded and its standard error truncated;
* when Linux namespaces are available (``unshare``), its own PID and network
  namespaces: it cannot see or signal the grader, and has no network;
* a private copy of ``ce_lib`` first on ``sys.path`` in which the functions
  the question forbids raise instead of computing.

The process reports raw values (``.npy`` bytes, never pickles) on a pipe
that only it and the grader hold. Nothing it reports is a verdict.
"""

from __future__ import annotations

import ast
import base64
import binascii
import functools
import importlib
import inspect
import io
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._astlock import AST_LOCK, parse
from .spec import Check

__all__ = ["Limits", "ProbeOutcome", "RunResult", "namespaces_available", "run"]

_DRIVER = Path(__file__).with_name("_driver.py")
_STDERR_KEEP = 8_000


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox run.

    Attributes
    ----------
    cell_seconds : float
        Wall-clock limit of each answer cell and each probe.
    setup_seconds : float
        Wall-clock limit of each trusted setup cell (imports may be slow on a busy machine).
    notebook_seconds : float
        Wall-clock limit of everything run for one submission.
    memory_mb : int
        Address-space limit of the process.
    file_mb : int
        Largest file the process may write.
    result_mb : int
        Most data read back from the process.
    isolate : {"auto", "namespaces", "none"}
        Use PID and network namespaces: when available, always (error if
        unavailable), or never.
    """

    cell_seconds: float = 10.0
    setup_seconds: float = 60.0
    notebook_seconds: float = 300.0
    memory_mb: int = 1536
    file_mb: int = 16
    result_mb: int = 64
    isolate: str = "auto"


@dataclass
class ProbeOutcome:
    """What the sandbox returned for one probe: a value, or the error it raised."""

    value: np.ndarray | None = None
    error: str | None = None


@dataclass
class RunResult:
    """Everything the grader learns from one run."""

    cell_errors: dict[str, str] = field(default_factory=dict)
    probes: dict[int, ProbeOutcome] = field(default_factory=dict)
    failure: str | None = None
    stderr: str = ""
    isolated: bool = False


@functools.cache
def namespaces_available() -> bool:
    """Whether ``unshare`` can give us user, PID and network namespaces here."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return False
    try:
        done = subprocess.run(
            [*_unshare_prefix(exe), "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _unshare_prefix(exe: str) -> list[str]:
    return [exe, "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--"]


@functools.cache
def _library_files() -> dict[str, str]:
    """The text of ce_lib's modules, read once (later edits on disk do not reach the sandbox)."""
    import ce_lib

    root = Path(ce_lib.__file__).parent
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))}


def _poisoned_library(forbid: Sequence[str]) -> dict[str, str]:
    """ce_lib's files with the bodies of the forbidden functions replaced by a ``raise``."""
    return dict(_poisoned_files(tuple(forbid)))


@functools.cache
def _poisoned_files(forbid: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Computed once per set of forbidden names, under the parse lock (see ``_astlock``);
    the grader warms this cache before it starts any grading thread."""
    with AST_LOCK:
        return tuple(_poison(forbid).items())


def _poison(forbid: Sequence[str]) -> dict[str, str]:
    files = dict(_library_files())
    targets: dict[str, set[str]] = {}
    for name in forbid:
        module, _, attr = name.rpartition(".")
        obj = inspect.unwrap(getattr(importlib.import_module(module), attr))
        filename = Path(inspect.getfile(obj)).name
        targets.setdefault(filename, set()).add(obj.__name__)
    for filename, names in targets.items():
        tree = parse(files[filename])
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                message = (
                    f"ce_lib.{node.name} is the reference implementation; "
                    "it is disabled while this question is graded"
                )
                node.body = [
                    ast.Raise(exc=ast.Call(ast.Name("RuntimeError", ast.Load()), [ast.Constant(message)], []))
                ]
        files[filename] = ast.unparse(ast.fix_missing_locations(tree))
    return files


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        extra = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
        return f"was killed by {name}{extra}"
    return f"exited with status {code}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    cells: Sequence[tuple[str, str]],
    probes: Sequence[Check],
    *,
    forbid: Sequence[str] = (),
    limits: Limits | None = None,
    deadline: float | None = None,
    setup: int = 0,
) -> RunResult:
    """Execute cells then probes in a fresh sandbox process.

    Parameters
    ----------
    cells : sequence of (label, source)
        Code to run in order in one namespace; an error in a cell is recorded
        and the next cell still runs.
    probes : sequence of Check
        Expressions to evaluate afterwards; only their raw values come back.
    forbid : sequence of str
        ``ce_lib`` functions disabled in this run.
    limits : Limits, optional
        Resource limits; the defaults of :class:`Limits` otherwise.
    deadline : float, optional
        ``time.monotonic()`` value by which the run is killed in any case.
    setup : int, default 0
        How many of the first cells are trusted setup cells, which get
        ``limits.setup_seconds`` instead of ``limits.cell_seconds``.

    Returns
    -------
    RunResult
    """
    limits = limits or Limits()
    start = time.monotonic()
    hard = start + limits.notebook_seconds if deadline is None else deadline
    isolate = limits.isolate == "namespaces" or (limits.isolate == "auto" and namespaces_available())
    if limits.isolate == "namespaces" and not namespaces_available():
        raise RuntimeError("Linux namespaces (unshare) are not available on this machine")
    result = RunResult(isolated=isolate)
    if hard - start <= 0:
        result.failure = "no time left within the notebook time limit"
        return result
    tmp = Path(tempfile.mkdtemp(prefix="ce_hw_"))
    try:
        timed = [
            (label, src, limits.setup_seconds if i < setup else limits.cell_seconds)
            for i, (label, src) in enumerate(cells)
        ]
        return _run_in(tmp, timed, probes, forbid, limits, hard, isolate, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_in(
    tmp: Path,
    cells: Sequence[tuple[str, str, float]],
    probes: Sequence[Check],
    forbid: Sequence[str],
    limits: Limits,
    hard: float,
    isolate: bool,
    result: RunResult,
) -> RunResult:
    lib = tmp / "lib" / "ce_lib"
    lib.mkdir(parents=True)
    for name, text in _poisoned_library(forbid).items():
        (lib / name).write_text(text, encoding="utf-8")
    work = tmp / "work"
    work.mkdir()
    inputs = tmp / "inputs"
    inputs.mkdir()
    job_probes = []
    for j, probe in enumerate(probes):
        arrays, scalars = {}, {}
        for k, (name, value) in enumerate(probe.inputs.items()):
            if isinstance(value, np.ndarray):
                ref = inputs / f"{j}_{k}.npy"
                np.save(ref, value, allow_pickle=False)
                arrays[name] = str(ref)
            else:
                scalars[name] = value
        job_probes.append({"expr": probe.expr, "arrays": arrays, "scalars": scalars})
    job = {
        "cells": [list(c) for c in cells],
        "probes": job_probes,
        "lib": str(tmp / "lib"),
        "limits": {
            "cell_seconds": limits.cell_seconds,
            "memory_bytes": limits.memory_mb * 2**20,
            "file_bytes": limits.file_mb * 2**20,
            "cpu_seconds": max(1, int(hard - time.monotonic()) + 1),
        },
    }
    job_path = tmp / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {
        "PATH": os.defpath,
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    read_fd, write_fd = os.pipe()
    prefix = _unshare_prefix(shutil.which("unshare") or "unshare") if isolate else []
    cmd = [
        *prefix,
        sys.executable,
        "-I",
        "-c",
        _DRIVER.read_text(encoding="utf-8"),
        str(job_path),
        str(write_fd),
    ]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            cwd=work,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    try:
        _supervise(proc, read_fd, probes, {label: sec for label, _, sec in cells}, limits, hard, result)
    finally:
        _kill_group(proc)
        proc.wait()
        os.close(read_fd)
        if proc.stderr is not None:
            proc.stderr.close()
    return result


def _supervise(
    proc: subprocess.Popen,
    read_fd: int,
    probes: Sequence[Check],
    cell_labels: dict[str, float],
    limits: Limits,
    hard: float,
    result: RunResult,
) -> None:
    """Read the channel and standard error until the process ends, enforcing the deadlines."""
    assert proc.stderr is not None
    err_fd = proc.stderr.fileno()
    os.set_blocking(read_fd, False)
    os.set_blocking(err_fd, False)
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ, "chan")
    sel.register(err_fd, selectors.EVENT_READ, "err")
    buffer = bytearray()
    stderr = bytearray()
    received = 0
    max_bytes = limits.result_mb * 2**20
    current: str | None = None  # label of the cell or probe running now
    allowed = limits.cell_seconds  # its time limit
    step_deadline: float | None = None
    done = False
    exited_at: float | None = None
    while sel.get_map():
        now = time.monotonic()
        if proc.poll() is not None and exited_at is None:
            exited_at = now
        if exited_at is not None and now - exited_at > 1.0:
            break  # a leftover child keeps the pipes open; it is killed with the group
        if now >= hard:
            where = f" while running {current}" if current else ""
            result.failure = f"the notebook time limit was reached{where}; the process was killed"
            break
        if step_deadline is not None and now >= step_deadline:
            result.failure = f"{current} did not stop within {allowed:g} s; the process was killed"
            break
        if received > max_bytes:
            result.failure = f"the process sent more than {limits.result_mb} MB of results; it was killed"
            break
        wait = min(hard, step_deadline or hard) - now
        for key, _ in sel.select(timeout=max(0.0, min(wait, 0.2))):
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                continue
            if key.data == "err":
                if len(stderr) < _STDERR_KEEP:
                    stderr.extend(chunk[: _STDERR_KEEP - len(stderr)])
                continue
            received += len(chunk)
            buffer.extend(chunk)
            while (cut := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:cut])
                del buffer[: cut + 1]
                event = _parse_event(line)
                if event is None:
                    continue
                kind = event.get("ev")
                if kind == "start":
                    label = event.get("label")
                    current = label[:200] if isinstance(label, str) else "a cell"
                    allowed = cell_labels.get(current, limits.cell_seconds)
                    step_deadline = time.monotonic() + allowed * 1.2 + 1.0
                elif kind == "end":
                    step_deadline = None
                    error = event.get("error")
                    if isinstance(error, str) and current in cell_labels:
                        result.cell_errors.setdefault(current, _clean(error))
                    current = None
                elif kind == "probe":
                    _store_probe(event, len(probes), result)
                elif kind == "done":
                    done = True
    sel.close()
    result.stderr = stderr.decode("utf-8", "replace")
    if result.failure is None and not done:
        _kill_group(proc)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        where = f" while running {current}" if current else ""
        hint = ""
        if "MemoryError" in result.stderr:
            hint = " (out of memory)"
        result.failure = f"the process {_describe_exit(code)}{hint}{where}"


def _parse_event(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def _store_probe(event: dict, count: int, result: RunResult) -> None:
    j = event.get("id")
    if not isinstance(j, int) or isinstance(j, bool) or not 0 <= j < count or j in result.probes:
        return
    error = event.get("error")
    if isinstance(error, str):
        result.probes[j] = ProbeOutcome(error=_clean(error))
        return
    npy = event.get("npy")
    try:
        raw = base64.b64decode(npy if isinstance(npy, str) else "", validate=True)
        value = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            raise ValueError("not a numeric array")
    except (ValueError, TypeError, EOFError, OSError, binascii.Error) as exc:
        result.probes[j] = ProbeOutcome(error=f"the result could not be read back ({type(exc).__name__})")
        return
    result.probes[j] = ProbeOutcome(value=value)


def _clean(text: str, limit: int = 300) -> str:
    """Printable, single-line, bounded: reasons come from untrusted code."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
