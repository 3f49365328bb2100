"""Run untrusted notebook code in a jail and read back what it claims, as hostile data.

One call of :func:`run` starts a fresh ``python -I -S -B`` in a fresh
:mod:`jail <ce_grader.jail>` (or, only when the instructor asked for it with
``--unsafe-no-jail``, in a temporary directory as the instructor's own user),
with

* a seccomp filter: threads, but no second process and no ``exec``
  (``_confine.py``), so the limits of its one process are the limits of the
  run: memory (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``), the largest file
  (``RLIMIT_FSIZE``); the jail's scratch ``tmpfs`` bounds the disk;
* a time limit per cell and per probe inside the process (``SIGALRM``, which
  the student's code can switch off), and the grader's own clock outside it:
  a budget fixed before the run starts (the sum of the cells' and probes'
  limits) that no message from the process can extend;
* the hidden checks and their inputs sent only after every cell has run.

The process reports in binary frames (``_driver.py``). The grader checks the
size of each frame against its limits *before* it stores it, keeps its own
labels for cells and probes, and reads values only as plain numeric arrays
whose byte count it checks against their declared shape.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import jail
from .jail_library import library_for
from .output import safe_text
from .spec import Check

__all__ = ["Limits", "ProbeOutcome", "RunResult", "run"]

_HERE = Path(__file__).parent
#: The text run in the student process, read once when the grader starts.
#: The grader's own modules, read once when it starts: the inspector runs this copy, so nothing
#: written to disk later (by anyone) changes the code that reads submissions.
_GRADER_FILES = {p.name: p.read_text(encoding="utf-8") for p in sorted(_HERE.glob("*.py"))}
CONFINE = _GRADER_FILES["_confine.py"]
DRIVER = CONFINE + _GRADER_FILES["_driver.py"]
_HEADER = struct.Struct("<cII")
_TEXT_BYTES = 4096
_VALUE_HEAD = 256
#: dtypes a probe value may have (little-endian numeric and boolean).
_DTYPES = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]
)
_STARTUP_SECONDS = 10.0
_SLACK_SECONDS = 2.0
_ENV = {
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (one question of one submission).

    Attributes
    ----------
    cell_seconds : float
        Wall-clock limit of each answer cell and each probe.
    setup_seconds : float
        Wall-clock limit of each trusted setup cell.
    notebook_seconds : float
        Wall-clock limit of everything run for one submission.
    memory_mb : int
        Address space of the run's one process.
    disk_mb : int
        Size of the writable scratch directory.
    file_mb : int
        Largest file the process may write.
    result_mb : int
        Most data read back from the process.
    jail : bool
        Run in a bubblewrap jail.
    landlock : bool
        Without the bubblewrap jail: confine the process with Landlock (read
        only what a run needs, write only its scratch folder, no TCP, no
        signals out). ``jail=False, landlock=False`` is ``--unsafe-no-jail``.
    """

    cell_seconds: float = 10.0
    setup_seconds: float = 60.0
    notebook_seconds: float = 300.0
    memory_mb: int = 1536
    disk_mb: int = 64
    file_mb: int = 16
    result_mb: int = 16
    jail: bool = True
    landlock: bool = False

    @property
    def mode(self) -> str:
        """``"bwrap"``, ``"landlock"`` or ``"none"``."""
        return "bwrap" if self.jail else "landlock" if self.landlock else "none"


@dataclass
class ProbeOutcome:
    """What the process returned for one probe: a value, or the exception it says it raised."""

    value: np.ndarray | None = None
    error_type: str | None = None
    error: str | None = None


@dataclass
class RunResult:
    """Everything the grader learns from one run; every string in it is already made safe."""

    cell_errors: dict[int, str] = field(default_factory=dict)
    probes: dict[int, ProbeOutcome] = field(default_factory=dict)
    failure: str | None = None


# --------------------------------------------------------------------------
# What the process sees: its packages and its copy of the library
# --------------------------------------------------------------------------

_ROOT_LOCK = threading.Lock()


@functools.cache
def _private_root() -> Path:
    """A directory only this grader process writes to (removed when it exits)."""
    root = Path(tempfile.mkdtemp(prefix="ce_grader_"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _built_once(target: Path, fill) -> Path:
    """``target`` in the private directory, filled by ``fill(staging)`` once and moved in whole.

    Several grading threads may ask at once; a half-written directory is never seen.
    """
    with _ROOT_LOCK:
        if not target.exists():
            staging = Path(tempfile.mkdtemp(dir=_private_root()))
            fill(staging)
            target.parent.mkdir(exist_ok=True)
            staging.rename(target)
    return target


def _write_package(folder: Path, package: str, files: dict[str, str]) -> None:
    (folder / package).mkdir()
    for name, text in files.items():
        (folder / package / name).write_text(text, encoding="utf-8")


def _grader_copy() -> Path:
    """The snapshot of the grader's modules, written once into the private directory."""
    return _built_once(_private_root() / "grader", lambda d: _write_package(d, "ce_grader", _GRADER_FILES))


@functools.cache
def _numpy_dirs() -> tuple[tuple[str, str], ...]:
    pkg = Path(np.__file__).parent
    dirs = [(str(pkg), "numpy")]
    libs = pkg.with_name("numpy.libs")
    if libs.is_dir():
        dirs.append((str(libs), "numpy.libs"))
    return tuple(dirs)


def library_dir(allow: tuple[str, ...] | None, forbid: tuple[str, ...]) -> Path:
    """A directory holding the ``ce_lib`` package one question's jail gets (built once per question kind)."""
    files = library_for(allow, forbid)
    key = hashlib.sha256(json.dumps([allow, forbid]).encode()).hexdigest()[:16]
    return _built_once(_private_root() / "lib" / key, lambda d: _write_package(d, "ce_lib", files))


def _unsafe_site() -> Path:
    """Unjailed runs: a directory with links to NumPy only (not the whole site-packages)."""

    def fill(folder: Path) -> None:
        for host, name in _numpy_dirs():
            (folder / name).symlink_to(host)

    return _built_once(_private_root() / "site", fill)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def _kill(proc: subprocess.Popen) -> None:
    """Kill the run's whole process group (it started a new session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _block(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def run(
    cells: Sequence[tuple[str, str]],
    probes: Sequence[Check],
    *,
    allow: tuple[str, ...] | None = None,
    forbid: tuple[str, ...] = (),
    limits: Limits | None = None,
    deadline: float | None = None,
    setup: int = 0,
) -> RunResult:
    """Execute cells then probes in a fresh jailed process.

    Parameters
    ----------
    cells : sequence of (label, source)
        Code to run in order in one namespace; an error in a cell is recorded
        and the next cell still runs. Labels stay in the grader.
    probes : sequence of Check
        Expressions to evaluate afterwards; only their raw values come back.
    allow, forbid : tuple of str
        Which ``ce_lib`` functions the run's copy of the library has.
    limits : Limits, optional
        Resource limits; the defaults of :class:`Limits` otherwise.
    deadline : float, optional
        ``time.monotonic()`` value by which the run is killed in any case.
    setup : int, default 0
        How many of the first cells are trusted setup cells (``limits.setup_seconds`` each).

    Returns
    -------
    RunResult
    """
    limits = limits or Limits()
    start = time.monotonic()
    seconds = [limits.setup_seconds if i < setup else limits.cell_seconds for i in range(len(cells))]
    hard = deadline if deadline is not None else start + limits.notebook_seconds
    # The grader's own clock: the trusted start (interpreter, setup cells), then, from the moment the
    # process says the setup is done (before any student code runs), the student's part.
    clock = _Clock(
        start_by=min(start + _STARTUP_SECONDS + sum(seconds[:setup]), hard),
        student_seconds=sum(seconds[setup:]) + limits.cell_seconds * len(probes) + _SLACK_SECONDS,
        hard=hard,
    )
    result = RunResult()
    if hard - start <= 0:
        result.failure = "no time left within the notebook time limit"
        return result
    job, inputs = _job(cells, seconds, setup, probes, limits, hard - start, allow, forbid)
    with tempfile.TemporaryDirectory(prefix="run_", dir=_private_root()) as scratch:
        read_fd, write_fd = os.pipe()
        try:
            command, cwd = _command(limits, Path(scratch), allow, forbid, write_fd)
            try:
                proc = subprocess.Popen(
                    command.cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(write_fd, *command.fds),
                    cwd=cwd,
                    env=_ENV if not limits.jail else {},
                    start_new_session=True,
                )
            finally:
                command.close()
        finally:
            os.close(write_fd)
        try:
            _supervise(proc, read_fd, job, inputs, len(cells), probes, limits, clock, result)
        finally:
            _kill(proc)
            os.close(read_fd)
    return result


class _Clock:
    """When a run is killed: set before it starts; one trusted message may only bring it closer."""

    def __init__(self, start_by: float, student_seconds: float, hard: float):
        self.stop, self.student_seconds, self.hard = start_by, student_seconds, hard
        self.student_started = False

    def student_starts(self) -> None:
        if not self.student_started:  # only the first: later ones are the student's own
            self.student_started = True
            self.stop = min(time.monotonic() + self.student_seconds, self.hard)


def _job(cells, seconds, setup, probes, limits, budget, allow, forbid) -> tuple[bytes, bytes]:
    specs, blobs = [], []
    for probe in probes:
        arrays, scalars = [], {}
        for name, value in probe.inputs.items():
            if isinstance(value, np.ndarray):
                value = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")
                arrays.append([name, value.dtype.str, list(value.shape)])
                blobs.append(value.tobytes())
            else:
                scalars[name] = value
        specs.append({"expr": probe.expr, "arrays": arrays, "scalars": scalars})
    landlock = None
    if limits.jail:
        paths = [jail.LIB, jail.SITE]
    else:
        paths = [str(library_dir(allow, forbid)), str(_unsafe_site())]
        if limits.landlock:
            landlock = {"read": [*jail.landlock_read_paths(), *paths, *(h for h, _ in _numpy_dirs())]}
    job = {
        "cells": [[src, sec] for (_, src), sec in zip(cells, seconds, strict=True)],
        "setup": setup,
        "paths": paths,
        "landlock": landlock,
        "scratch": limits.jail,
        "limits": {
            "cell_seconds": limits.cell_seconds,
            "memory_bytes": limits.memory_mb * 2**20,
            "file_bytes": limits.file_mb * 2**20,
            "cpu_seconds": int(budget) + 1,
        },
    }
    hidden = _block(json.dumps(specs).encode("utf-8")) + _block(b"".join(blobs))
    return _block(json.dumps(job).encode("utf-8")), hidden


def _command(limits: Limits, scratch: Path, allow, forbid, fd: int) -> tuple[jail.JailCommand, str]:
    """The command line and working directory of one run (the channel keeps its number ``fd``)."""
    exe, _ = jail.python_runtime()
    argv = [exe, "-I", "-S", "-B", "-c", DRIVER, str(fd)]
    if not limits.jail:
        return jail.JailCommand(argv), str(scratch)
    binds = [(str(library_dir(allow, forbid) / "ce_lib"), f"{jail.LIB}/ce_lib")]
    binds += [(host, f"{jail.SITE}/{name}") for host, name in _numpy_dirs()]
    env = {**_ENV, "HOME": jail.SCRATCH, "TMPDIR": jail.SCRATCH, "PATH": "/usr/bin"}
    return jail.jail_command(argv, binds, scratch_bytes=limits.disk_mb * 2**20, env=env), "/"


def _supervise(proc, read_fd, job, inputs, n_cells, probes, limits, clock, result) -> None:
    """Feed the job, read frames until the process is done or out of time, enforcing every limit."""
    assert proc.stdin is not None
    out_fd = proc.stdin.fileno()
    os.set_blocking(out_fd, False)
    os.set_blocking(read_fd, False)
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ, "chan")
    sel.register(out_fd, selectors.EVENT_WRITE, "job")
    pending = bytearray(job)
    inputs_sent = False
    reader = _FrameReader(n_cells, len(probes), limits.result_mb * 2**20)
    try:
        while True:
            now = time.monotonic()
            if now >= clock.stop:
                result.failure = "the time limit of this question was reached; the process was killed"
                return
            events = sel.select(timeout=min(0.2, clock.stop - now))
            for key, _ in events:
                if key.data == "job":
                    try:
                        written = os.write(out_fd, pending[: 1 << 16])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        written = len(pending)
                    del pending[:written]
                    if not pending:
                        sel.unregister(out_fd)
                        if inputs_sent:
                            proc.stdin.close()
                    continue
                try:
                    chunk = os.read(read_fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    reader.finish(result, proc)
                    return
                problem = reader.feed(chunk, result)
                if problem:
                    result.failure = problem
                    return
                if reader.setup_done:
                    clock.student_starts()
                if reader.cells_done and not inputs_sent:
                    inputs_sent = True
                    reader.inputs_sent = True
                    if not pending:
                        sel.register(out_fd, selectors.EVENT_WRITE, "job")
                    pending += inputs
                if reader.done:
                    return
    finally:
        sel.close()
        if not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass


class _FrameReader:
    """Parses the channel's frames with limits checked before anything is stored."""

    def __init__(self, n_cells: int, n_probes: int, max_bytes: int):
        self.n_cells, self.n_probes, self.max_bytes = n_cells, n_probes, max_bytes
        self.buffer = bytearray()
        self.received = 0
        self.setup_done = self.cells_done = self.done = self.inputs_sent = False

    def feed(self, chunk: bytes, result: RunResult) -> str | None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            return f"the process sent more than {self.max_bytes >> 20} MB; it was killed"
        self.buffer += chunk
        while len(self.buffer) >= _HEADER.size:
            kind, step, length = _HEADER.unpack_from(self.buffer)
            cap = {b"E": _TEXT_BYTES, b"V": self.max_bytes, b"S": 0, b"C": 0, b"D": 0}.get(kind)
            if cap is None or length > cap:
                return "the process sent a malformed message; it was killed"
            if len(self.buffer) < _HEADER.size + length:
                return None
            payload = bytes(self.buffer[_HEADER.size : _HEADER.size + length])
            del self.buffer[: _HEADER.size + length]
            self._handle(kind, step, payload, result)
        return None

    def _handle(self, kind: bytes, step: int, payload: bytes, result: RunResult) -> None:
        if kind == b"S":
            self.setup_done = True
        elif kind == b"C":
            self.setup_done = self.cells_done = True
        elif kind == b"D":
            self.done = True
        elif kind == b"E":
            name, _, text = payload.partition(b"\0")
            type_name = safe_text(name.decode("utf-8", "replace"), 80)
            message = safe_text(text.decode("utf-8", "replace"), 300)
            full = f"{type_name}: {message}" if message else type_name
            if step < self.n_cells and not self.cells_done:
                result.cell_errors.setdefault(step, full)
            elif self.n_cells <= step < self.n_cells + self.n_probes:
                j = step - self.n_cells
                if j not in result.probes:
                    result.probes[j] = ProbeOutcome(error_type=type_name, error=full)
        elif kind == b"V" and 0 <= step < self.n_probes and step not in result.probes:
            result.probes[step] = _decode_value(payload)

    def finish(self, result: RunResult, proc: subprocess.Popen) -> None:
        if self.done:
            return
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        result.failure = f"the process {_describe_exit(code)} before it finished"


def _decode_value(payload: bytes) -> ProbeOutcome:
    """A numeric array from ``dtype;shape NUL bytes``, or the reason it is not one."""
    head, sep, raw = payload[:_VALUE_HEAD].partition(b"\0")
    bad = ProbeOutcome(error_type="malformed", error="the result could not be read back")
    if not sep:
        return bad
    raw = payload[len(head) + 1 :]
    try:
        dtype_text, _, shape_text = head.decode("ascii").partition(";")
    except UnicodeDecodeError:
        return bad
    if dtype_text not in _DTYPES:
        return bad
    dims = shape_text.split(",") if shape_text else []
    if len(dims) > 32 or not all(d.isdigit() and len(d) <= 12 for d in dims):
        return bad
    shape = tuple(int(d) for d in dims)
    dtype = np.dtype(dtype_text)
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != len(raw):
        return bad
    try:  # a shape with zero elements may still be too large for NumPy to describe
        return ProbeOutcome(value=np.frombuffer(raw, dtype=dtype).reshape(shape))  # read-only, no copy
    except (ValueError, MemoryError, OverflowError):
        return bad


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        extra = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)", "SIGKILL": ""}.get(name, "")
        return f"was killed by {name}{extra}"
    return f"exited with status {code}"


# --------------------------------------------------------------------------
# The inspector: parsing a submission, in a jail of its own
# --------------------------------------------------------------------------

_INSPECTOR_BOOT = """
import resource, sys
mem = {memory}
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
confine()
if {read!r} is not None:
    restrict_files({read!r}, [])
sys.path[:0] = {paths!r}
sys.dont_write_bytecode = True
from ce_grader.static import main
main()
"""


def inspect(job: dict, data: bytes, limits: Limits, *, seconds: float = 60.0, memory_mb: int = 1024) -> dict:
    """Run :func:`ce_grader.static.worker` on a submission's bytes in a jail; its reply, checked.

    Returns
    -------
    dict
        ``{"answers": {question: [source, ...]}, "forbidden": {question: str or None}}``
        or ``{"error": reason}``; every string in it is untrusted.
    """
    exe, _ = jail.python_runtime()
    grader_dir, venv_site = str(_grader_copy()), sysconfig.get_paths()["purelib"]
    if limits.jail:
        paths = ["/jail/grader", "/jail/venv"]
    else:
        paths = [grader_dir, venv_site]
    boot = CONFINE
    read = None
    if limits.landlock and not limits.jail:
        read = [*jail.landlock_read_paths(), grader_dir, venv_site]
    code = boot + _INSPECTOR_BOOT.format(
        memory=memory_mb * 2**20, cpu=int(seconds) + 1, paths=paths, read=read
    )
    argv = [exe, "-I", "-S", "-B", "-c", code]
    env = dict(_ENV)
    if limits.jail:
        binds = [(grader_dir, "/jail/grader"), (venv_site, "/jail/venv")]
        command = jail.jail_command(argv, binds, scratch_bytes=16 * 2**20, env={**env, "HOME": jail.SCRATCH})
        env = {}
    else:
        command = jail.JailCommand(argv)
    limit = 2 * len(data) + (1 << 20)
    with tempfile.TemporaryFile(dir=_private_root()) as feed:
        payload = json.dumps(job).encode("utf-8")
        feed.write(_block(payload) + _block(data))
        feed.seek(0)
        with tempfile.TemporaryDirectory(dir=_private_root()) as cwd:
            try:
                proc = subprocess.Popen(
                    command.cmd,
                    stdin=feed,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    pass_fds=command.fds,
                    cwd=cwd if not limits.jail else "/",
                    env=env,
                    start_new_session=True,
                )
            finally:
                command.close()
            try:
                raw, problem = _read_capped(proc, limit, time.monotonic() + seconds)
            finally:
                _kill(proc)
                assert proc.stdout is not None
                proc.stdout.close()
    if problem:
        return {"error": problem}
    try:
        reply = json.loads(raw)
    except (ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        return {"error": "reading it gave no usable reply"}
    return reply


def _read_capped(proc: subprocess.Popen, limit: int, stop: float) -> tuple[bytes, str | None]:
    """The length-prefixed reply on the process's stdout, within ``limit`` bytes and by ``stop``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now >= stop:
                return b"", "reading it took longer than its time limit"
            if not sel.select(timeout=min(0.2, stop - now)):
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit + 8:
                return b"", "reading it produced more data than the notebook holds"
    if len(buf) < 8 or struct.unpack_from("<Q", buf)[0] != len(buf) - 8:
        code = proc.wait()
        why = "ran out of memory or time" if code else "gave an incomplete reply"
        return b"", f"reading it {why}"
    return bytes(buf[8:]), None
