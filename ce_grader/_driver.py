"""Runs inside the jail: setup cells, answer cells, then one probe per hidden check.

This file is not imported by the grader: ``_confine.py`` and this text are
passed to ``python -I -S -B -c``. The process reads its job from standard input
(a length-prefixed JSON document written by the grader), confines itself (seccomp:
no new processes; resource limits), runs the cells, and reports on a pipe in
binary frames ``kind (1 byte) | step (u32) | length (u32) | payload``:

* ``S`` -- the trusted setup cells are done and the student's code starts
  (sent before any of it runs, so the grader can trust the first one and start
  the clock of the student's part);
* ``E`` -- the cell or probe ``step`` raised: payload ``type name NUL message``;
* ``C`` -- every cell has run; only now does the grader send the hidden checks
  and their inputs (two more length-prefixed blocks on standard input: the
  checks as JSON, then the arrays' bytes), so nothing of the hidden tests is in
  this process while the answer cells run;
* ``V`` -- the value of probe ``step``: payload ``dtype;d1,d2,... NUL raw bytes``;
* ``D`` -- finished.

Nothing here is trusted by the grader: the student's code runs in this process
and can rewrite anything in it, write any bytes to the pipe, or stop at any
time. The grader reads frames with its own size limits, keeps its own clock,
labels and list of questions, and compares values itself.
"""


class CellTimeout(BaseException):
    """Raised by SIGALRM when a cell or a probe exceeds its time limit."""


def main():
    import builtins
    import json
    import os
    import resource
    import signal
    import struct
    import sys

    fd = int(sys.argv[1])
    read, write, pack = os.read, os.write, struct.pack

    def read_exact(n):
        parts, left = [], n
        while left:
            chunk = read(0, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the job ended early")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def read_block():
        return read_exact(struct.unpack("<Q", read_exact(8))[0])

    def send(kind, step, payload=b""):
        data = pack("<cII", kind, step, len(payload)) + payload
        while data:
            data = data[write(fd, data) :]

    job = json.loads(read_block())
    limits = job["limits"]
    mem = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    fsize = int(limits["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # few descriptors: without the jail's tmpfs, an unlinked open file is disk the grader cannot see
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    # without the jail's size-limited scratch folder, the run may not write any file
    confine(no_writes=not job["scratch"])  # noqa: F821 -- defined by _confine.py, prepended to this text
    if job["landlock"] is not None:  # no bubblewrap jail: Landlock limits what it reads instead
        restrict_files(job["landlock"]["read"], [])  # noqa: F821 -- from _confine.py

    sys.path[:0] = job["paths"]
    sys.dont_write_bytecode = True
    import numpy as np

    asarray, frombuffer = np.asarray, np.frombuffer

    allowed = [float(limits["cell_seconds"])]

    def on_alarm(signum, frame):
        raise CellTimeout(f"exceeded the time limit of {allowed[0]:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    setitimer, real = signal.setitimer, signal.ITIMER_REAL

    class _IPythonStub:
        """Enough of get_ipython() for transformed magics to do nothing."""

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _IPythonStub}

    def report(step, exc):
        try:  # an exception may have a non-string name, a __str__ that raises, a huge message
            kind, text = type(exc).__name__, str(exc)
            if not isinstance(kind, str) or not isinstance(text, str):
                raise TypeError
            payload = (kind[:80] + "\0" + text[:400]).encode("utf-8", "replace")
        except BaseException:
            payload = b"Exception\0an exception that cannot be printed"
        send(b"E", step, payload)

    def timed(seconds, fn):
        allowed[0] = float(seconds)
        setitimer(real, allowed[0])
        try:
            return fn()
        finally:
            setitimer(real, 0)

    for step, (source, seconds) in enumerate(job["cells"]):
        if step == job["setup"]:
            send(b"S", step)  # before the first line of the student's code: the grader's clock starts
        try:
            code = compile(source, f"<cell {step + 1}>", "exec")
            timed(seconds, lambda code=code: exec(code, namespace))
        except BaseException as exc:  # SystemExit and timeouts included: the next cell still runs
            report(step, exc)
    first = len(job["cells"])
    if first == job["setup"]:
        send(b"S", first)
    send(b"C", first)

    probes = json.loads(read_block())  # the hidden checks and their inputs arrive only now
    inputs = read_block()
    timed_out = False
    offset = 0
    for j, probe in enumerate(probes):
        local = dict(probe["scalars"])
        for name, dtype, shape in probe["arrays"]:
            count = int(np.prod(shape, dtype=np.int64))
            array = frombuffer(inputs, dtype=dtype, count=count, offset=offset)
            local[name] = array.reshape(shape).copy()
            offset += count * array.itemsize
        try:
            if timed_out:  # all or nothing: do not wait for the same loop again
                raise CellTimeout("not run: an earlier check exceeded the time limit")
            scope = dict(namespace)  # one dict for globals, so that a lambda sees the inputs too
            scope.update(local)
            code = compile(probe["expr"], "<check>", "eval")
            value = asarray(timed(limits["cell_seconds"], lambda code=code, scope=scope: eval(code, scope)))
            if value.dtype.kind not in "biufc":
                raise TypeError(f"the result has dtype {value.dtype}, not a number")
            value = asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")
            head = f"{value.dtype.str};{','.join(str(n) for n in value.shape)}\0".encode("ascii")
            send(b"V", j, head + value.tobytes())
        except BaseException as exc:
            timed_out = timed_out or isinstance(exc, CellTimeout)
            report(first + j, exc)
    send(b"D", 0)
    os._exit(0)  # no atexit handlers, no lingering threads


main()
