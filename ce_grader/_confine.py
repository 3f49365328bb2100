"""Confinement from inside: a seccomp filter (one process, no sockets, no signals) and Landlock.

This file is not imported by the grader's own process: its text is prepended to
the driver (``_driver.py``) and to the inspector's start-up code, which call
:func:`confine` before they touch any untrusted byte. A seccomp filter cannot be
removed by the code that runs after it, so the limits of one process
(``RLIMIT_AS`` for memory, ``RLIMIT_CPU`` for CPU time) become the limits of the
whole submission: it has no second process to spread over, and nothing can
outlive the run.

Denied with ``EPERM``: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``,
``execve``/``execveat`` (no other program runs), ``ptrace``, the
``process_vm_*`` calls, ``unshare``/``setns``/``mount``, ``bpf``,
``userfaultfd``, ``io_uring_setup``, ``perf_event_open``, the key-ring
calls, System V IPC, ``memfd_create`` and POSIX message queues (memory the
address-space limit would not count), ``socket`` (no network, whatever the
namespaces) and every call that
sends a signal (``kill``, ``tkill``, ``tgkill``, ``rt_*sigqueueinfo``,
``pidfd_send_signal``: without a PID namespace, the grader is another process
of the same user). ``clone3`` gets ``ENOSYS`` so that the C library falls back to
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
#: prlimit64, allowed only on the calling process itself (pid 0): without a PID namespace, a run
#: could otherwise lower the limits of the grader or of a classmate's run.
_PRLIMIT = {"x86_64": 302, "aarch64": 261}
_TABLES = {
    "x86_64": (
        0xC000003E,
        # fork vfork execve ptrace unshare setns mount execveat bpf userfaultfd
        # io_uring_setup perf_event_open process_vm_readv process_vm_writev add_key request_key keyctl
        (
            *(57, 58, 59, 101, 272, 308, 165, 322, 321, 323, 425, 298, 310, 311, 248, 249, 250),
            # socket kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal
            *(41, 62, 200, 234, 129, 297, 424),
            # memory outside the address-space limit: System V shared memory, semaphores and
            # message queues, POSIX message queues, memfd_create, memfd_secret
            *(29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71, 240, 319, 447),
            # calls that act on another process: setpriority sched_setparam sched_setscheduler
            # sched_setaffinity sched_setattr ioprio_set pidfd_open migrate_pages move_pages kcmp
            # process_madvise process_mrelease
            *(141, 142, 144, 203, 314, 251, 434, 256, 279, 312, 440, 448),
        ),
        56,
        435,
    ),
    "aarch64": (
        0xC00000B7,
        # execve ptrace unshare setns mount execveat bpf userfaultfd
        # io_uring_setup perf_event_open process_vm_readv process_vm_writev add_key request_key keyctl
        (
            *(221, 117, 97, 268, 40, 281, 280, 282, 425, 241, 270, 271, 217, 218, 219),
            # socket kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal
            *(198, 129, 130, 131, 138, 240, 424),
            # System V shared memory, semaphores, message queues; mq_open, memfd_create, memfd_secret
            *(194, 195, 196, 197, 190, 191, 192, 193, 186, 187, 188, 189, 180, 279, 447),
            # setpriority sched_setparam sched_setscheduler sched_setaffinity sched_setattr ioprio_set
            # pidfd_open migrate_pages move_pages kcmp process_madvise process_mrelease
            *(140, 118, 119, 122, 274, 30, 434, 238, 239, 272, 440, 448),
        ),
        220,
        435,
    ),
}


# Without the jail's size-limited scratch folder (Landlock, or no confinement), a run may not
# change the file system at all: (call number, index of its flags argument) of open calls that
# are refused when they ask to write or create; and the calls that create, remove or change files.
_WRITE_FLAGS = 1 | 2 | 0o100 | 0o1000 | 0o2000 | 0o20000000  # O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND
_NO_WRITES = {  # __O_TMPFILE
    "x86_64": (
        ((2, 1), (257, 2)),  # open, openat
        # creat openat2 truncate mkdir mkdirat mknod mknodat link linkat symlink symlinkat rename
        # renameat renameat2 unlink unlinkat rmdir chmod fchmod fchmodat chown fchown lchown fchownat
        (
            *(85, 437, 76, 83, 258, 133, 259, 86, 265, 88, 266, 82, 264, 316, 87, 263),
            *(84, 90, 91, 268, 92, 93, 94, 260),
            # utime utimes futimesat utimensat setxattr lsetxattr fsetxattr removexattr
            # lremovexattr fremovexattr
            *(132, 235, 261, 280, 188, 189, 190, 197, 198, 199),
        ),
    ),
    "aarch64": (
        ((56, 2),),  # openat
        # openat2 truncate mkdirat mknodat linkat symlinkat renameat renameat2 unlinkat fchmod
        # fchmodat fchown fchownat utimensat setxattr lsetxattr fsetxattr removexattr
        # lremovexattr fremovexattr
        (437, 45, 34, 33, 37, 36, 38, 276, 35, 52, 53, 55, 54, 88, 5, 6, 7, 14, 15, 16),
    ),
}


def _insn(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k)


def _program(machine, no_writes=False):
    arch, denied, clone, clone3 = _TABLES[machine]
    if no_writes:
        opens, changes = _NO_WRITES[machine]
        denied = (*denied, *changes)
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
        _insn(jeq, 0, 4, _PRLIMIT[machine]),
        _insn(ld_abs, 0, 0, 16),  # the pid
        _insn(jeq, 1, 0, 0),
        _insn(ret, 0, 0, _ERRNO_EPERM),
        _insn(ret, 0, 0, _ALLOW),
    ]
    for nr, arg in opens if no_writes else ():
        prog += [
            _insn(jeq, 0, 4, nr),
            _insn(ld_abs, 0, 0, 16 + 8 * arg),  # low 32 bits of the flags
            _insn(jset, 0, 1, _WRITE_FLAGS),
            _insn(ret, 0, 0, _ERRNO_EPERM),
            _insn(ret, 0, 0, _ALLOW),  # an open for reading
        ]
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


def _drop_capabilities(libc):
    """No capability at all (a grader run as root would otherwise lend its own to the run)."""
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(b"\0" * 24, 24)  # effective, permitted, inheritable: x 2
    if libc.capset(ctypes.create_string_buffer(header, 8), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def confine(no_writes=False):
    """Make this process non-dumpable, drop its capabilities, install the filter.

    Non-dumpable: no other process of the same user can read or write its
    memory or descriptors through ``/proc``, and it leaves no core file. The
    filter holds for this process and every thread it starts later. With
    ``no_writes`` (the modes without the jail's scratch folder), no file may be
    opened for writing, created, removed, renamed or changed in its mode.

    Raises
    ------
    OSError
        When the machine's architecture has no table here or the kernel
        refuses the filter: the caller must not run untrusted code then.
    """
    machine = platform.machine()
    if machine not in _TABLES:
        raise OSError(f"no seccomp table for the {machine} architecture")
    code = _program(machine, no_writes)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(code) // 8, code)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    _drop_capabilities(libc)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


# Landlock (Linux 5.13+): which files a process may open, for the modes without a
# mount namespace. The calls have the same numbers on every architecture.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read directory
_LL_READ_FILE = (1 << 0) | (1 << 2)
_LL_FILE_RW = (1 << 1) | (1 << 2)  # write file, read file (for /dev/null)


def landlock_abi():
    """The Landlock ABI version of this kernel (0 when it has none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return max(int(version), 0)


def restrict_files(read, write):
    """Allow reading only below the paths ``read`` and writing only below ``write``.

    With ABI 4 or newer TCP connect and bind are denied too; with ABI 6 or newer,
    signals and abstract sockets outside the process's own domain. Raises
    ``OSError`` when the kernel has no Landlock.
    """
    import os

    abi = landlock_abi()
    if abi < 1:
        raise OSError("this kernel has no Landlock")
    # every file-system right this ABI knows: 13 in ABI 1, then refer (2), truncate (3), ioctl (5)
    fs_rights = (1 << {1: 13, 2: 14, 3: 15, 4: 15}.get(abi, 16)) - 1
    attr = struct.pack("=Q", fs_rights)
    if abi >= 4:
        attr += struct.pack("=Q", 3)  # handled_access_net: bind and connect TCP
    if abi >= 6:
        attr += struct.pack("=Q", 3)  # scoped: abstract unix sockets and signals
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_LL_CREATE, buf, len(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rules = ((read, _LL_READ, _LL_READ_FILE), (write, fs_rights, _LL_FILE_RW))
        for paths, dir_rights, file_rights in rules:
            for path in paths:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    rights = dir_rights if os.path.isdir(path) else file_rights
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
                    if libc.syscall(_LL_ADD_RULE, ruleset, 1, rule, 0) != 0:  # LANDLOCK_RULE_PATH_BENEATH
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
                finally:
                    os.close(fd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_LL_RESTRICT, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
