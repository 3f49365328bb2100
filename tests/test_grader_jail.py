"""The pieces of the grader's jail, one by one: seccomp, the bwrap file system, the frames, the clock.

``tests/test_grader_hostile.py`` attacks the whole command line; this file checks each
mechanism directly, so that a failure names the mechanism that broke.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ce_grader import jail as jail_module
from ce_grader import sandbox
from ce_grader.jail import jail_problem
from ce_grader.sandbox import Limits, RunResult, _decode_value, _FrameReader
from ce_grader.spec import Check

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = jail_problem()
if PROBLEM and os.environ.get("CI") == "true":  # CI must exercise the jail, not skip it
    raise RuntimeError(f"the grader's jail cannot be built in CI: {PROBLEM}")
needs_jail = pytest.mark.skipif(PROBLEM is not None, reason=f"no jail here: {PROBLEM}")
FAST = Limits(cell_seconds=2.0, setup_seconds=30.0, notebook_seconds=60.0)


def flags(cells: str, expr: str = "np.array(flags, dtype=float)", limits: Limits = FAST) -> RunResult:
    """Run one cell in a jail (or not) and read back the array it builds."""
    return sandbox.run(
        [("setup", "import numpy as np\nflags = []"), ("answer", cells)],
        [Check(expr)],
        limits=limits,
        setup=1,
    )


# --------------------------------------------------------------------------
# seccomp: threads yes, processes no
# --------------------------------------------------------------------------


def test_seccomp_allows_threads_and_refuses_new_processes():
    code = sandbox.CONFINE + (
        "confine()\n"
        "import os, subprocess, threading\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append('thread')); t.start(); t.join()\n"
        "import ctypes, resource, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def shm():\n"
        "    if libc.shmget(0, 1 << 20, 0o1600) < 0:\n"
        "        raise PermissionError(ctypes.get_errno(), 'shmget')\n"
        "for name, f in [('fork', os.fork), ('spawn', lambda: subprocess.run(['true'])),\n"
        "                ('exec', lambda: os.execv('/bin/true', ['true'])), ('shm', shm),\n"
        "                ('memfd', lambda: os.memfd_create('x')), ('socket', socket.socket),\n"
        "                ('kill', lambda: os.kill(os.getpid(), 0)),\n"
        "                ('prlimit', lambda: resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE))]:\n"
        "    try:\n"
        "        f(); out.append(name)\n"
        "    except PermissionError:\n"
        "        out.append('no ' + name)\n"
        "print(' '.join(out))\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    expected = "thread no fork no spawn no exec no shm no memfd no socket no kill no prlimit"
    assert done.stdout.split("\n")[0] == expected, done.stdout + done.stderr


# --------------------------------------------------------------------------
# The jail's file system, network and processes
# --------------------------------------------------------------------------

PROBE_JAIL = f"""
import os, socket
def can_read(p):
    try:
        open(p, 'rb').read(1); return 1.0
    except OSError:
        return 0.0
def can_write(p, n=1000):
    try:
        with open(p, 'wb') as f: f.write(b'x' * n)
        return 1.0
    except OSError:
        return 0.0
flags.append(can_read({str(ROOT / "homework" / "hw1_softmax.md")!r}))    # the sources
flags.append(can_read({str(ROOT / "ce_lib" / "functional.py")!r}))       # the real library
flags.append(can_read({str(Path.home() / ".bashrc")!r}))                 # the home folder
flags.append(float(os.path.exists({sys.prefix!r})))                      # the grader's venv
flags.append(can_write('/x') + can_write('/dev/x') + can_write('/usr/lib/x'))
flags.append(can_write('/work/small'))                                   # the scratch folder
flags.append(can_write('/work/big', 3 * 2**20))                          # beyond its 1 MB
flags.append(float(os.path.exists('/proc')) + float(os.getpid() != 1))  # no /proc; the run is PID 1
try:
    socket.create_connection(('127.0.0.1', 22), timeout=1); flags.append(1.0)
except OSError:
    flags.append(0.0)
try:
    import scipy; flags.append(1.0)
except ImportError:
    flags.append(0.0)
"""


@needs_jail
def test_the_jail_sees_and_writes_only_what_it_should():
    res = flags(PROBE_JAIL, limits=Limits(cell_seconds=5.0, disk_mb=1))
    assert res.failure is None and not res.cell_errors, (res.failure, res.cell_errors)
    got = res.probes[0].value.tolist()
    # sources, real library, home, venv: unreadable; no write outside /work; /work small only;
    # no /proc and no other process (the run is the jail's PID 1); no network; no SciPy
    assert got == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0], got


LANDLOCK = jail_module.landlock_problem()
needs_landlock = pytest.mark.skipif(LANDLOCK is not None, reason=f"no Landlock here: {LANDLOCK}")

PROBE_LANDLOCK = PROBE_JAIL.replace("'/work/small'", "'small'").replace(
    "flags.append(can_write('/work/big', 3 * 2**20))", "flags.append(0.0)"
)
PROBE_LANDLOCK = PROBE_LANDLOCK.replace(
    "flags.append(float(os.path.exists('/proc')) + float(os.getpid() != 1))  # no /proc; the run is PID 1",
    f"flags.append(can_read('/proc/1/environ') + can_read({str(ROOT / 'README.md')!r}))",
)


@needs_landlock
def test_landlock_confines_a_run_without_namespaces():
    res = flags(PROBE_LANDLOCK, limits=Limits(cell_seconds=5.0, jail=False, landlock=True))
    assert res.failure is None and not res.cell_errors, (res.failure, res.cell_errors)
    got = res.probes[0].value.tolist()
    # sources, real library, home: unreadable; the venv's folder exists (no mount namespace hides
    # it); no file written anywhere (there is no scratch folder without the jail); another
    # process's files and the repository unreadable; no network; no SciPy
    assert got == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0], got


@pytest.mark.parametrize("landlock", [pytest.param(True, marks=needs_landlock), False])
def test_without_the_jail_a_run_cannot_write_any_file(landlock, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    code = (
        "import os\n"
        f"for f in [lambda: open('new', 'w'), lambda: open({str(victim)!r}, 'a'),\n"
        f"          lambda: os.unlink({str(victim)!r}), lambda: os.mkdir('d')]:\n"
        "    try:\n"
        "        f(); flags.append(1)\n"
        "    except OSError:\n"
        "        flags.append(0)"
    )
    res = flags(code, limits=Limits(cell_seconds=5.0, jail=False, landlock=landlock))
    assert res.probes[0].value.tolist() == [0, 0, 0, 0], res
    assert victim.read_text() == "untouched"


def test_unjailed_runs_still_have_one_process_and_their_limits():
    code = "import os\ntry:\n    os.fork(); flags.append(1)\nexcept OSError:\n    flags.append(0)"
    res = flags(code, limits=Limits(cell_seconds=5.0, jail=False))
    assert res.probes[0].value.tolist() == [0]


# --------------------------------------------------------------------------
# Frames: what comes back is checked before it is stored
# --------------------------------------------------------------------------


def frame(kind: bytes, step: int, payload: bytes = b"") -> bytes:
    return struct.pack("<cII", kind, step, len(payload)) + payload


def value_frame(step: int, head: str, raw: bytes) -> bytes:
    return frame(b"V", step, head.encode() + b"\0" + raw)


def test_frames_are_checked_before_they_are_stored():
    result = RunResult()
    reader = _FrameReader(n_cells=2, n_probes=2, max_bytes=1 << 20)
    stream = (
        frame(b"E", 0, b"ValueError\0bad\x1b[2J\nnews")
        + frame(b"C", 2)
        + frame(b"E", 1, b"NameError\0after the inputs")  # a cell error after C: ignored
        + value_frame(0, "<f8;2", np.array([1.5, 2.5]).tobytes())
        + value_frame(0, "<f8;1", np.array([9.0]).tobytes())  # a second value: ignored
        + value_frame(1, "<f8;3", np.zeros(2).tobytes())  # 16 bytes for 3 values
    )
    for i in range(0, len(stream), 7):  # in pieces, as a pipe delivers it
        assert reader.feed(stream[i : i + 7], result) is None
    assert result.cell_errors == {0: "ValueError: bad?[2J news"}
    assert result.probes[0].value.tolist() == [1.5, 2.5]
    assert result.probes[1].value is None and result.probes[1].error_type == "malformed"
    assert reader.cells_done and reader.setup_done


@pytest.mark.parametrize(
    "data",
    [
        frame(b"X", 0),  # unknown kind
        struct.pack("<cII", b"E", 0, 10**6),  # a message longer than any error text
        struct.pack("<cII", b"V", 0, 2**31),  # a value larger than the cap, declared
        struct.pack("<cII", b"D", 0, 5),  # a marker with a payload
    ],
)
def test_malformed_or_oversized_frames_end_the_run(data):
    reader = _FrameReader(n_cells=1, n_probes=1, max_bytes=1 << 20)
    assert "malformed" in reader.feed(data, RunResult())


def test_the_total_sent_is_capped():
    reader = _FrameReader(n_cells=1, n_probes=1, max_bytes=1 << 16)
    result = RunResult()
    chunk = frame(b"E", 0, b"x" * 4000)
    problem = None
    for _ in range(100):
        problem = problem or reader.feed(chunk, result)
    assert problem is not None and "more than" in problem


@pytest.mark.parametrize(
    "head, raw",
    [
        ("|O;1", b"\0" * 8),  # objects
        ("<U3;1", b"\0" * 12),  # text
        ("<f8;99999999999999", b""),  # a shape that does not match the bytes
        ("<f8;" + ",".join(["1"] * 40), b"\0" * 8),  # too many dimensions
        ("<f8;-1", b"\0" * 8),
        ("<f8;1e3", b"\0" * 8),
        (">f8;1", b"\0" * 8),  # big-endian: not what the driver sends
    ],
)
def test_values_are_plain_numeric_arrays_of_the_declared_size(head, raw):
    out = _decode_value(head.encode() + b"\0" + raw)
    assert out.value is None and out.error_type == "malformed"


def test_zero_d_and_empty_values_round_trip():
    assert _decode_value(b"<f8;\0" + np.float64(2.5).tobytes()).value.shape == ()
    assert _decode_value(b"<i8;0,3\0").value.shape == (0, 3)


# --------------------------------------------------------------------------
# The clock: no message from the process extends it
# --------------------------------------------------------------------------

FORGER = """
import os, signal, struct, time
signal.signal(signal.SIGALRM, signal.SIG_IGN)
fds = range(3, 64)  # every descriptor it might have (there is no /proc in the jail to list them)
while True:
    time.sleep(0.05)  # slowly: far below the cap on what the grader reads
    for fd in fds:
        for kind in (b'S', b'C', b'E'):
            try:
                os.write(fd, struct.pack('<cII', kind, 0, 0))
            except OSError:
                pass
"""


@pytest.mark.parametrize("jail", [pytest.param(True, marks=needs_jail), False])
def test_forged_markers_do_not_extend_the_time_limit(jail):
    start = time.monotonic()
    res = flags(FORGER, limits=Limits(cell_seconds=1.0, notebook_seconds=120.0, jail=jail))
    elapsed = time.monotonic() - start
    assert res.failure is not None and "time limit" in res.failure, res.failure
    # the student's part may take 1 cell + 1 check + 2 s of slack; far less than the 120 s it asked for
    assert elapsed < 30, elapsed


# --------------------------------------------------------------------------
# No jail: refuse, unless the instructor says otherwise
# --------------------------------------------------------------------------


def test_grading_refuses_without_a_jail_and_says_how_to_enable_it(tmp_path):
    env = {**os.environ, "CE_GRADER_BWRAP": str(tmp_path / "no-bwrap"), "CE_GRADER_LANDLOCK": "off"}
    done = subprocess.run(
        [sys.executable, "-m", "ce_grader", "grade", str(ROOT / "homework/hw1_softmax.md"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 4, done.stderr
    assert "refusing to grade" in done.stderr and "--unsafe-no-jail" in done.stderr
    assert "user namespaces" in done.stderr
    assert not list(tmp_path.glob("gradebook*"))
