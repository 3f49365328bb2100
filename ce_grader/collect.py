"""Reading a folder of submissions into memory, before any grading, without being fooled.

A submission must be the student's own file inside the submissions folder. A
symbolic link (even to a classmate's file), a hard link (the same file under
two names), a named pipe that would block the grader, a device or an oversized
file is not graded: it gets an :class:`Entry` whose ``problem`` says why, and
it costs that row only. Every accepted file is read completely here, once, so
that nothing a student process does later can change what is graded.

The walk never follows a link: every folder is opened relative to the
descriptor of its parent with ``O_NOFOLLOW``, and every file is opened the
same way and checked again (:func:`os.fstat`) against what the listing showed,
so that a file swapped between the check and the read is noticed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .output import escape_name, safe_text

__all__ = ["MAX_DEPTH", "CollectError", "Entry", "collect", "read_one"]

MAX_DEPTH = 32
"""Folders nested deeper than this below the submissions folder are reported, not searched."""

NAME_LIMIT = 1000
"""Longest name shown; longer (hostile) names are cut."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20


class CollectError(Exception):
    """The submissions folder as a whole cannot be collected (the message says why)."""


@dataclass(frozen=True)
class Entry:
    """One submission found in the folder: its bytes, or why it is not graded.

    Attributes
    ----------
    name : str
        Path relative to the folder, ``/``-separated, escaped with
        :func:`~ce_grader.output.escape_name` and safe to print.
    data : bytes or None
        The complete file, read before grading; None when `problem` is set.
    problem : str or None
        Why the entry is not graded (``"not graded: ..."``); None when `data` is set.
    """

    name: str
    data: bytes | None = field(default=None, repr=False)
    problem: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.problem is None):
            raise ValueError(f"Entry {self.name!r}: exactly one of data and problem must be set")


def _kind(mode: int) -> str:
    """What a file that is not regular is, in words."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def _read_at_most(fd: int, n: int) -> bytes:
    """At most `n` bytes from a descriptor, up to end of file."""
    chunks = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Collector:
    """The state of one walk: the limits and the entries found so far."""

    def __init__(self, suffixes: Sequence[str], max_bytes: int, max_entries: int, max_total_bytes: int):
        self.suffixes = tuple(suffixes)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self.entries: list[Entry] = []

    def add(self, rel: str, *, data: bytes | None = None, problem: str | None = None) -> None:
        if len(self.entries) >= self.max_entries:
            raise CollectError(
                f"more than {self.max_entries} submissions in the folder; "
                "raise the limit if this is really one class"
            )
        if data is not None:
            self.total_bytes += len(data)
            if self.total_bytes > self.max_total_bytes:
                raise CollectError(
                    f"the submissions hold more than {self.max_total_bytes} bytes in total; "
                    "raise the limit if this is really one class"
                )
        name = safe_text(escape_name(rel), limit=NAME_LIMIT)
        self.entries.append(Entry(name, data=data, problem=problem))

    def scan(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        """Collect the entries of the open folder `dir_fd`, whose path is `parts`."""
        try:
            with os.scandir(dir_fd) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            if not parts:
                raise CollectError(f"cannot list the submissions folder: {safe_text(exc.strerror)}") from None
            reason = safe_text(exc.strerror)
            self.add("/".join(parts), problem=f"not searched: cannot list this folder ({reason})")
            return
        for name in names:
            rel = "/".join((*parts, name))
            try:
                self.visit(dir_fd, name, rel, parts)
            except CollectError:
                raise
            except Exception as exc:  # one hostile entry costs its own row, never the whole class
                if name.endswith(self.suffixes):
                    self.add(rel, problem=f"not graded: cannot read it ({safe_text(exc)})")

    def visit(self, dir_fd: int, name: str, rel: str, parts: tuple[str, ...]) -> None:
        """Collect one entry of the open folder `dir_fd`."""
        matches = name.endswith(self.suffixes)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if not name.startswith("."):  # hidden folders, .ipynb_checkpoints among them
                self.descend(dir_fd, name, rel, parts, st)
        elif stat.S_ISLNK(st.st_mode):
            target = safe_text(os.readlink(name, dir_fd=dir_fd))
            if matches:
                problem = f"not graded: a symbolic link (to {target}), not the student's own file"
                self.add(rel, problem=problem)
            elif not name.startswith(".") and self._is_folder(dir_fd, name):
                self.add(rel, problem=f"not searched: a symbolic link to a folder (to {target})")
        elif matches:
            self.read(dir_fd, name, rel, st)

    @staticmethod
    def _is_folder(dir_fd: int, name: str) -> bool:
        """Whether a symbolic link leads to a folder (looked up, never opened)."""
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=True).st_mode)
        except OSError:
            return False

    def descend(self, dir_fd: int, name: str, rel: str, parts: tuple[str, ...], st: os.stat_result) -> None:
        """Search the subfolder `name`, opened without following a link."""
        if len(parts) >= MAX_DEPTH:
            self.add(rel, problem=f"not searched: nested deeper than {MAX_DEPTH} folders")
            return
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.add(rel, problem=f"not searched: cannot open this folder ({safe_text(exc.strerror)})")
            return
        try:
            fst = os.fstat(sub)
            if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
                self.add(rel, problem="not searched: the folder was replaced while it was being searched")
                return
            self.scan(sub, (*parts, name))
        finally:
            os.close(sub)

    def read(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        """Read one regular file completely, or record why it is not graded."""
        problem = self.refusal(st)
        if problem is not None:
            self.add(rel, problem=problem)
            return
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.add(rel, problem=f"not graded: cannot open it ({safe_text(exc.strerror)})")
            return
        data = b""
        try:
            fst = os.fstat(fd)
            if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
                problem = "not graded: the file was replaced while it was being read"
            else:
                problem = self.refusal(fst)
            if problem is None:
                data = _read_at_most(fd, self.max_bytes + 1)
                if len(data) > self.max_bytes:
                    problem = f"not graded: the file grew beyond the limit of {self.max_bytes} bytes"
        finally:
            os.close(fd)
        if problem is not None:
            self.add(rel, problem=problem)
        else:
            self.add(rel, data=data)

    def refusal(self, st: os.stat_result) -> str | None:
        """Why a file with this status is not graded (None if it may be read)."""
        if not stat.S_ISREG(st.st_mode):
            return f"not graded: {_kind(st.st_mode)}, not a regular file"
        if st.st_nlink > 1:
            return "not graded: a hard link (the same file has another name)"
        if st.st_size > self.max_bytes:
            return f"not graded: {st.st_size} bytes, more than the limit of {self.max_bytes}"
        return None


def collect(
    folder: str | Path,
    *,
    suffixes: Sequence[str] = (".ipynb",),
    max_bytes: int = 20_000_000,
    max_entries: int = 10_000,
    max_total_bytes: int = 2_000_000_000,
) -> list[Entry]:
    """Every submission in a folder and its subfolders, read into memory, sorted by name.

    Links are never followed: a file that is a symbolic or hard link, or not
    a regular file, or larger than `max_bytes`, becomes an entry with a
    ``problem`` and is never read (a named pipe is never even opened). Hidden
    folders (``.ipynb_checkpoints`` among them) are skipped; a symbolic link
    to a folder is reported, not searched.

    Parameters
    ----------
    folder : str or Path
        The submissions folder; it must not itself be a symbolic link.
    suffixes : sequence of str, default (".ipynb",)
        File names that end with one of these are submissions.
    max_bytes : int, default 20_000_000
        Largest submission read.
    max_entries : int, default 10_000
        Most entries (graded or not) in one folder.
    max_total_bytes : int, default 2_000_000_000
        Most bytes read in total, so that the class fits in memory.

    Returns
    -------
    list of Entry
        Sorted by name.

    Raises
    ------
    CollectError
        If the folder is missing, is a link or not a folder, cannot be listed,
        or holds more than `max_entries` entries or `max_total_bytes` bytes.
        A single hostile entry never raises: it gets an entry with a problem.
    """
    path = Path(folder)
    shown = safe_text(escape_name(os.fsdecode(path)), limit=NAME_LIMIT)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise CollectError(f"cannot use the submissions folder {shown}: {safe_text(exc.strerror)}") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = safe_text(os.readlink(path))
        except OSError:
            target = "?"
        raise CollectError(
            f"refusing the submissions folder {shown}: it is a symbolic link (to {target}); "
            "give the real folder"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CollectError(f"the submissions folder {shown} is not a folder")
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise CollectError(f"cannot open the submissions folder {shown}: {safe_text(exc.strerror)}") from None
    collector = _Collector(suffixes, max_bytes, max_entries, max_total_bytes)
    try:
        fst = os.fstat(fd)
        if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
            raise CollectError(f"the submissions folder {shown} was replaced while it was being opened")
        collector.scan(fd, ())
    finally:
        os.close(fd)
    return sorted(collector.entries, key=lambda e: e.name)


def read_one(path: str | Path, *, max_bytes: int = 20_000_000) -> Entry:
    """One submission file named on the command line, read with the same checks as :func:`collect`.

    Parameters
    ----------
    path : str or Path
        The notebook. A link, a special file or an oversized file is refused.
    max_bytes : int, default 20_000_000
        Largest submission read.

    Returns
    -------
    Entry
        Named by the file's name; with ``problem`` set when it is not graded.
    """
    path = Path(path)
    name = path.name
    collector = _Collector(("",), max_bytes, 1, max_bytes)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return Entry(safe_text(escape_name(name)), problem=f"not graded: {safe_text(exc.strerror)}")
    try:
        collector.visit(parent, name, name, ())
    except FileNotFoundError:
        return Entry(safe_text(escape_name(name)), problem="not graded: the file does not exist")
    except OSError as exc:
        return Entry(safe_text(escape_name(name)), problem=f"not graded: {safe_text(exc.strerror)}")
    finally:
        os.close(parent)
    if not collector.entries:
        return Entry(safe_text(escape_name(name)), problem="not graded: not a notebook file")
    return collector.entries[0]
