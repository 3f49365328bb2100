"""Runs inside the sandbox process: setup cells, answer cells, then probes.

This file is not imported by the grader; its text is passed to ``python -I -c``.
It reports on a pipe that the grader created, one JSON object per line:

* ``{"ev": "start", "step": k}`` and ``{"ev": "end", "step": k, "error": ...}``
  around every cell and probe (the grader's watchdog uses them);
* ``{"ev": "probe", "id": j, "npy": <base64 .npy>}`` or ``{..., "error": ...}``;
* ``{"ev": "done"}``.

Nothing here is trusted by the grader: the student's code runs in this process
and can rewrite anything in it. The grader only reads raw values from the
pipe and compares them with its own reference values.
"""

import base64
import builtins
import io
import json
import os
import resource
import signal
import sys


class CellTimeout(BaseException):
    """Raised by SIGALRM when a cell or a probe exceeds its time limit."""


def _mini_init():
    """As PID 1 of a fresh PID namespace, fork the real worker and wait for it.

    PID 1 ignores signals it has no handler for, so the worker (PID 2) cannot
    kill it; when it exits, the kernel kills whatever is left in the namespace.
    """
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)


def main():
    job_path, fd = sys.argv[1], int(sys.argv[2])
    if os.getpid() == 1:
        _mini_init()
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    blobs = {}
    for j, probe in enumerate(job["probes"]):
        for name, ref in probe["arrays"].items():
            with open(ref, "rb") as f:
                blobs[(j, name)] = f.read()
    for p in [job_path, *[ref for probe in job["probes"] for ref in probe["arrays"].values()]]:
        os.unlink(p)  # the hidden inputs leave the disk before any student code runs

    write, dumps, b64 = os.write, json.dumps, base64.b64encode

    def send(obj):
        data = (dumps(obj) + "\n").encode()
        while data:
            data = data[write(fd, data) :]

    limits = job["limits"]
    mem = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = int(limits["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    allowed = [float(limits["cell_seconds"])]

    def on_alarm(signum, frame):
        raise CellTimeout(f"exceeded the time limit of {allowed[0]:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    setitimer, real = signal.setitimer, signal.ITIMER_REAL
    sys.path.insert(0, job["lib"])
    sys.dont_write_bytecode = True
    import numpy as np

    asarray, save, load = np.asarray, np.save, np.load

    class _IPythonStub:
        """Enough of get_ipython() for transformed magics to do nothing."""

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _IPythonStub}

    def describe(exc):
        try:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException:
            text = "an exception that cannot be printed"
        return text[:400]

    step = 0
    for label, source, seconds in job["cells"]:
        send({"ev": "start", "step": step, "label": label})
        error = None
        try:
            allowed[0] = float(seconds)
            setitimer(real, allowed[0])
            try:
                exec(compile(source, f"<{label}>", "exec"), namespace)
            finally:
                setitimer(real, 0)
        except BaseException as exc:  # SystemExit and timeouts included: the next cell still runs
            error = describe(exc)
        send({"ev": "end", "step": step, "error": error})
        step += 1

    timed_out = False
    for j, probe in enumerate(job["probes"]):
        send({"ev": "start", "step": step, "label": probe["expr"]})
        message = {"ev": "probe", "id": j}
        try:
            if timed_out:  # all or nothing: do not wait for the same loop again
                raise CellTimeout("not run: an earlier check exceeded the time limit")
            local = dict(probe["scalars"])
            for name in probe["arrays"]:
                local[name] = load(io.BytesIO(blobs[(j, name)]), allow_pickle=False)
            allowed[0] = float(limits["cell_seconds"])
            setitimer(real, allowed[0])
            try:
                # One dict for globals, so that a lambda in the expression sees the inputs too.
                scope = dict(namespace)
                scope.update(local)
                value = asarray(eval(compile(probe["expr"], "<check>", "eval"), scope))
            finally:
                setitimer(real, 0)
            buf = io.BytesIO()
            save(buf, value, allow_pickle=False)
            message["npy"] = b64(buf.getvalue()).decode("ascii")
        except BaseException as exc:
            timed_out = timed_out or isinstance(exc, CellTimeout)
            message["error"] = describe(exc)
        send({"ev": "end", "step": step, "error": message.get("error")})
        send(message)
        step += 1
    send({"ev": "done"})
    os._exit(0)  # no atexit handlers, no lingering threads


main()
