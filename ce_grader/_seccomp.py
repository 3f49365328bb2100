"""A seccomp filter that lets a process run threads but never start another process.

This file is not imported by the grader's own process: its text is prepended to
the driver (``_driver.py``) and to the inspector (``_inspect.py``), which call
:func:`confine` before they touch any untrusted byte. A seccomp filter cannot be
removed by the code that runs after it, so the limits of one process
(``RLIMIT_AS`` for memory, ``RLIMIT_CPU`` for CPU time) become the limits of the
whole submission: it has no second process to spread over, and nothing can
outlive the run.

Denied with ``EPERM``: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``,
``execve``/``execveat`` (no other program runs), ``ptrace``, the
``process_vm_*`` calls, ``unshare``/``setns``/``mount``, ``bpf``,
``userfaultfd``, ``io_uring_setup``, ``perf_event_open`` and the key-ring
calls. ``clone3`` gets ``ENOSYS`` so that the C library falls back to
``clone`` for a new thread, which the filter can inspect. A system call of
another architecture (or of the x32 ABI) kills the process.
"""

import ctypes
import platform
import struct

_ERRNO_EPERM = 0x00050000 | 1
_ERRNO_ENOSYS = 0x00050000 | 38
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_CLONE_THREAD = 0x00010000

# architecture: (AUDIT_ARCH value, denied calls, clone, clone3)
_TABLES = {
    "x86_64": (
        0xC000003E,
        # fork vfork execve ptrace unshare setns mount execveat bpf userfaultfd
        # io_uring_setup perf_event_open process_vm_readv process_vm_writev add_key request_key keyctl
        (57, 58, 59, 101, 272, 308, 165, 322, 321, 323, 425, 298, 310, 311, 248, 249, 250),
        56,
        435,
    ),
    "aarch64": (
        0xC00000B7,
        # execve ptrace unshare setns mount execveat bpf userfaultfd
        # io_uring_setup perf_event_open process_vm_readv process_vm_writev add_key request_key keyctl
        (221, 117, 97, 268, 40, 281, 280, 282, 425, 241, 270, 271, 217, 218, 219),
        220,
        435,
    ),
}


def _insn(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k)


def _program(machine):
    arch, denied, clone, clone3 = _TABLES[machine]
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog = [
        _insn(ld_abs, 0, 0, 4),  # seccomp_data.arch
        _insn(jeq, 1, 0, arch),
        _insn(ret, 0, 0, _KILL_PROCESS),
        _insn(ld_abs, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":  # the x32 ABI numbers its calls from 0x40000000
        prog += [_insn(jge, 0, 1, 0x40000000), _insn(ret, 0, 0, _KILL_PROCESS)]
    for nr in denied:
        prog += [_insn(jeq, 0, 1, nr), _insn(ret, 0, 0, _ERRNO_EPERM)]
    prog += [
        _insn(jeq, 0, 1, clone3),
        _insn(ret, 0, 0, _ERRNO_ENOSYS),
        _insn(jeq, 0, 3, clone),
        _insn(ld_abs, 0, 0, 16),  # low 32 bits of the first argument: the clone flags
        _insn(jset, 1, 0, _CLONE_THREAD),
        _insn(ret, 0, 0, _ERRNO_EPERM),
        _insn(ret, 0, 0, _ALLOW),
    ]
    return b"".join(prog)


def confine():
    """Install the filter in this process (and every thread it starts later).

    Raises
    ------
    OSError
        When the machine's architecture has no table here or the kernel
        refuses the filter: the caller must not run untrusted code then.
    """
    machine = platform.machine()
    if machine not in _TABLES:
        raise OSError(f"no seccomp table for the {machine} architecture")
    code = _program(machine)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(code) // 8, code)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
