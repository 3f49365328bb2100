"""Reading a folder of submissions into memory, before any grading, without being fooled.

A submission must be the student's own regular file inside the submissions
folder. Whatever is not gets an :class:`Entry` whose ``problem`` says why, and
costs that row only, never the whole class:

* a symbolic link (even to a classmate's file), a named pipe that would block
  the grader, a socket, a device, or a file larger than ``max_bytes``;
* a hard link to a file that also has a name outside the submissions folder
  (that file could be the instructor's source). A file whose every name is
  inside the folder is read once and graded under each of its names, with a
  ``note`` naming the others, so that a student who hard-links a classmate's
  file cannot get the classmate's own file refused;
* a file that does not fit in the memory budget ``max_total_bytes``. Files
  are taken smallest first, so a student who submits huge files loses those
  rows, and every honest small submission is read;
* a file, or a folder above it, that was replaced between the walk and the read.

:func:`collect` works in three phases:

1. **Walk.** Every folder is opened relative to the descriptor of its parent
   with ``O_NOFOLLOW``; no link is ever followed. Nothing is read: each
   candidate file is recorded with its path, its :func:`os.lstat` and the
   identity ``(st_dev, st_ino)`` of every folder on its path. Hidden folders
   (``.ipynb_checkpoints`` among them) hold no submissions, but they are
   searched too, only to count the names of hard-linked files.
2. **Choose.** Hard links are grouped, and the files that fit the memory budget
   are chosen, without opening any of them.
3. **Read.** Each chosen file is opened again from the submissions folder,
   one folder at a time, without following a link, and each folder and the
   file itself are checked (:func:`os.fstat`) against what the walk saw.
   Only then is the file read, completely, once, so that nothing a student
   process does later can change what is graded.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .output import escape_name, safe_text

__all__ = ["MAX_DEPTH", "CollectError", "Entry", "collect", "read_one"]

MAX_DEPTH = 32
"""Folders nested deeper than this below the submissions folder are reported, not searched."""

NAME_LIMIT = 1000
"""Longest name shown; longer (hostile) names are cut."""

NOTE_NAMES = 5
"""Most other names listed in the note of a hard-linked file (the rest are counted)."""

REPLACED = "not graded: the file or a folder above it was replaced while the folder was being read"
OUTSIDE = "not graded: a hard link to a file outside the submissions folder"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20
_Ids = tuple[tuple[int, int], ...]
"""``(st_dev, st_ino)`` of each folder on a path."""
_GONE = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)
"""Errors of an open without following links that mean: no longer what the walk saw."""


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
    note : str or None
        Something the instructor should know about a graded entry (the same
        file under several names); only with `data`.
    """

    name: str
    data: bytes | None = field(default=None, repr=False)
    problem: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.problem is None):
            raise ValueError(f"Entry {self.name!r}: exactly one of data and problem must be set")
        if self.note is not None and self.data is None:
            raise ValueError(f"Entry {self.name!r}: a note goes only with data")


@dataclass(frozen=True)
class _Candidate:
    """A regular file found by the walk, not yet read.

    Attributes
    ----------
    parts : tuple of str
        Its path below the submissions folder, one name per level.
    st : os.stat_result
        Its :func:`os.lstat` during the walk.
    folders : tuple of (int, int)
        ``(st_dev, st_ino)`` of each folder between the submissions folder and the file.
    name : str
        The escaped name of its :class:`Entry`.
    """

    parts: tuple[str, ...]
    st: os.stat_result
    folders: _Ids
    name: str

    @property
    def identity(self) -> tuple[int, int]:
        """``(st_dev, st_ino)``: the same for every name of a hard-linked file."""
        return (self.st.st_dev, self.st.st_ino)


class _Refused(Exception):
    """A file that must not be graded; the message is the entry's problem."""


def _shown(rel: str) -> str:
    """The name of an entry: escaped, printable and at most :data:`NAME_LIMIT` characters."""
    return safe_text(escape_name(rel), limit=NAME_LIMIT)


def _megabytes(n: int) -> str:
    """`n` bytes in megabytes (10**6 bytes), in words."""
    text = f"{n / 1_000_000:.1f}".removesuffix(".0")
    return "less than 0.1" if text == "0" and n > 0 else text


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


def _refusal(st: os.stat_result, max_bytes: int) -> str | None:
    """Why a file with this status is not graded, whatever its name (None if it may be read)."""
    if not stat.S_ISREG(st.st_mode):
        return f"not graded: {_kind(st.st_mode)}, not a regular file"
    if st.st_size > max_bytes:
        return f"not graded: {st.st_size} bytes, more than the limit of {max_bytes}"
    return None


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


def _read_checked(fd: int, seen: os.stat_result, replaced: str, during: str) -> bytes:
    """The whole open file, after checking that it is still the file `seen` describes.

    Parameters
    ----------
    fd : int
        The open file.
    seen : os.stat_result
        Its :func:`os.lstat` before it was opened.
    replaced : str
        The problem when it is another file, or not a regular file.
    during : str
        When it changed, in words, for the other problems.

    Raises
    ------
    _Refused
        If it is another file, gained or lost a name (a hard link), or changed size.
    """
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
        raise _Refused(replaced)
    if now.st_nlink != seen.st_nlink:
        raise _Refused(f"not graded: the file gained or lost a name (a hard link) while {during}")
    resized = f"not graded: the file changed size while {during}"
    if now.st_size != seen.st_size:
        raise _Refused(resized)
    data = _read_at_most(fd, seen.st_size + 1)  # one byte more, to notice a file that grows
    if len(data) != seen.st_size:
        raise _Refused(resized)
    return data


# --- phase 1: the walk ------------------------------------------------------------------------------


class _Walk:
    """Phase 1: the submissions found in the folder, without reading any of them.

    Attributes
    ----------
    entries : list of Entry
        Entries already refused (links, special files, oversized files, folders not searched).
    candidates : list of _Candidate
        Regular files that may be read.
    names : Counter
        For every regular file with more than one name, by ``(st_dev, st_ino)``:
        how many of its names are inside the folder (submissions or not, hidden or not).
    """

    def __init__(self, suffixes: Sequence[str], max_bytes: int, max_entries: int):
        self.suffixes = tuple(suffixes)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: list[Entry] = []
        self.candidates: list[_Candidate] = []
        self.names: Counter[tuple[int, int]] = Counter()

    def _check_room(self) -> None:
        """Refuse the folder if it holds more than `max_entries` submissions."""
        if len(self.entries) + len(self.candidates) >= self.max_entries:
            raise CollectError(
                f"more than {self.max_entries} submissions in the folder; "
                "raise the limit if this is really one class"
            )

    def refuse(self, rel: str, problem: str) -> None:
        """Record an entry that is not graded (or a folder not searched), with the reason."""
        self._check_room()
        self.entries.append(Entry(_shown(rel), problem=problem))

    def scan(self, dir_fd: int, parts: tuple[str, ...], folders: _Ids, hidden: bool) -> None:
        """Search the open folder `dir_fd`, whose path is `parts`.

        In a `hidden` folder nothing is recorded but the names of hard-linked files.
        """
        try:
            with os.scandir(dir_fd) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            if not parts:
                raise CollectError(f"cannot list the submissions folder: {safe_text(exc.strerror)}") from None
            if not hidden:
                reason = safe_text(exc.strerror)
                self.refuse("/".join(parts), f"not searched: cannot list this folder ({reason})")
            return
        for name in names:
            try:
                self.visit(dir_fd, name, parts, folders, hidden)
            except CollectError:
                raise
            except Exception as exc:  # one hostile entry costs its own row, never the whole class
                if not hidden and name.endswith(self.suffixes):
                    self.refuse("/".join((*parts, name)), f"not graded: cannot read it ({safe_text(exc)})")

    def visit(self, dir_fd: int, name: str, parts: tuple[str, ...], folders: _Ids, hidden: bool) -> None:
        """Record one entry of the open folder `dir_fd`."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            self.names[(st.st_dev, st.st_ino)] += 1
        if stat.S_ISDIR(st.st_mode):
            self.descend(dir_fd, name, parts, folders, st, hidden or name.startswith("."))
            return
        if hidden:
            return
        matches = name.endswith(self.suffixes)
        rel = "/".join((*parts, name))
        if stat.S_ISLNK(st.st_mode):
            target = safe_text(os.readlink(name, dir_fd=dir_fd))
            if matches:
                self.refuse(rel, f"not graded: a symbolic link (to {target}), not the student's own file")
            elif not name.startswith(".") and self._is_folder(dir_fd, name):
                self.refuse(rel, f"not searched: a symbolic link to a folder (to {target})")
            return
        if not matches:
            return
        problem = _refusal(st, self.max_bytes)
        if problem is not None:
            self.refuse(rel, problem)
            return
        self._check_room()
        self.candidates.append(_Candidate((*parts, name), st, folders, _shown(rel)))

    @staticmethod
    def _is_folder(dir_fd: int, name: str) -> bool:
        """Whether a symbolic link leads to a folder (looked up, never opened)."""
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=True).st_mode)
        except OSError:
            return False

    def descend(
        self,
        dir_fd: int,
        name: str,
        parts: tuple[str, ...],
        folders: _Ids,
        st: os.stat_result,
        hidden: bool,
    ) -> None:
        """Search the subfolder `name`, opened without following a link."""
        rel = "/".join((*parts, name))
        if len(parts) >= MAX_DEPTH:
            if not hidden:
                self.refuse(rel, f"not searched: nested deeper than {MAX_DEPTH} folders")
            return
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if not hidden:
                self.refuse(rel, f"not searched: cannot open this folder ({safe_text(exc.strerror)})")
            return
        try:
            fst = os.fstat(sub)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                if not hidden:
                    self.refuse(rel, "not searched: the folder was replaced while it was being searched")
                return
            self.scan(sub, (*parts, name), (*folders, (fst.st_dev, fst.st_ino)), hidden)
        finally:
            os.close(sub)


# --- phase 2: what to read --------------------------------------------------------------------------


def _choose(
    candidates: Sequence[_Candidate], names: Counter[tuple[int, int]], max_total_bytes: int
) -> tuple[list[Entry], list[list[_Candidate]]]:
    """Phase 2: group hard links and choose the files that fit the memory budget.

    Parameters
    ----------
    candidates : sequence of _Candidate
        From the walk.
    names : Counter
        From the walk: how many names of each hard-linked file are inside the folder.
    max_total_bytes : int
        The memory budget.

    Returns
    -------
    refused : list of Entry
        Hard links to a file with a name outside the folder, and files beyond the budget.
    chosen : list of list of _Candidate
        The files to read, each as the list of its names inside the folder (one
        name unless it is hard-linked), in the order of their first names.
    """
    groups: dict[tuple[int, int], list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate.identity].append(candidate)
    refused: list[Entry] = []
    files: list[list[_Candidate]] = []
    for identity, group in groups.items():
        group.sort(key=lambda c: c.name)
        links = max(c.st.st_nlink for c in group)
        if links > 1 and names[identity] < links:  # some name of the file is outside the folder
            refused.extend(Entry(c.name, problem=OUTSIDE) for c in group)
        else:
            files.append(group)
    files.sort(key=lambda group: (group[0].st.st_size, group[0].name))
    total = 0
    chosen: list[list[_Candidate]] = []
    for group in files:
        size = group[0].st.st_size
        if total + size <= max_total_bytes:
            total += size
            chosen.append(group)
        else:
            problem = (
                f"not graded: the class's files exceed the grader's memory budget of "
                f"{_megabytes(max_total_bytes)} MB; this file ({_megabytes(size)} MB) is among the largest"
            )
            refused.extend(Entry(c.name, problem=problem) for c in group)
    chosen.sort(key=lambda group: group[0].name)
    return refused, chosen


# --- phase 3: the read ------------------------------------------------------------------------------


def _reopen(root_fd: int, candidate: _Candidate) -> int:
    """Open a candidate again from the submissions folder, checking every folder on the way.

    At most two descriptors besides `root_fd` are open at any time.

    Raises
    ------
    _Refused
        If a folder on the path is no longer the one the walk saw (or is now a link).
    OSError
        If the file cannot be opened for another reason.
    """
    dir_fd = root_fd
    try:
        for name, seen in zip(candidate.parts[:-1], candidate.folders, strict=True):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    raise _Refused(REPLACED) from None
                raise
            if dir_fd != root_fd:
                os.close(dir_fd)
            dir_fd = sub
            now = os.fstat(dir_fd)
            if (now.st_dev, now.st_ino) != seen:
                raise _Refused(REPLACED)
        try:
            return os.open(candidate.parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _GONE:
                raise _Refused(REPLACED) from None
            raise
    finally:
        if dir_fd != root_fd:
            os.close(dir_fd)


def _read_group(root_fd: int, group: list[_Candidate]) -> list[Entry]:
    """Read one chosen file, once, and make an entry for each of its names."""
    first = group[0]
    try:
        fd = _reopen(root_fd, first)
        try:
            data = _read_checked(fd, first.st, REPLACED, "the folder was being read")
        finally:
            os.close(fd)
    except _Refused as exc:
        return [Entry(c.name, problem=str(exc)) for c in group]
    except OSError as exc:
        return [
            Entry(c.name, problem=f"not graded: cannot open it ({safe_text(exc.strerror)})") for c in group
        ]
    except Exception as exc:  # one hostile file costs its own rows, never the whole class
        return [Entry(c.name, problem=f"not graded: cannot read it ({safe_text(exc)})") for c in group]
    if len(group) == 1:
        return [Entry(first.name, data=data)]
    entries = []
    for candidate in group:
        others = [c.name for c in group if c is not candidate]
        listed = ", ".join(others[:NOTE_NAMES])
        if len(others) > NOTE_NAMES:
            listed += f" and {len(others) - NOTE_NAMES} more"
        note = f"the same file as {listed}: graded under each name; decide who wrote it"
        entries.append(Entry(candidate.name, data=data, note=note))
    return entries


def _read_chosen(root_fd: int, chosen: Sequence[list[_Candidate]]) -> list[Entry]:
    """Phase 3: read every chosen file, one at a time."""
    entries: list[Entry] = []
    for group in chosen:
        entries.extend(_read_group(root_fd, group))
    return entries


def collect(
    folder: str | Path,
    *,
    suffixes: Sequence[str] = (".ipynb",),
    max_bytes: int = 20_000_000,
    max_entries: int = 10_000,
    max_total_bytes: int = 256_000_000,
) -> list[Entry]:
    """Every submission in a folder and its subfolders, read into memory, sorted by name.

    See the module's description for the rules. A file that is not graded
    becomes an entry with a ``problem`` and is never read (a named pipe is
    never even opened). A file graded under several names (hard links, all
    inside the folder) has a ``note``. Hidden folders (``.ipynb_checkpoints``
    among them) hold no submissions; a symbolic link to a folder is reported,
    not searched.

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
    max_total_bytes : int, default 256_000_000
        The memory budget: most bytes read in total. Files are read smallest
        first; those that do not fit are not graded (and never read).

    Returns
    -------
    list of Entry
        Sorted by name.

    Raises
    ------
    CollectError
        If the folder is missing, is a link or not a folder, cannot be listed,
        or holds more than `max_entries` entries. A single hostile entry never
        raises: it gets an entry with a problem.
    """
    path = Path(folder)
    shown = _shown(os.fsdecode(path))
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
        root_fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise CollectError(f"cannot open the submissions folder {shown}: {safe_text(exc.strerror)}") from None
    try:
        fst = os.fstat(root_fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise CollectError(f"the submissions folder {shown} was replaced while it was being opened")
        walk = _Walk(suffixes, max_bytes, max_entries)
        walk.scan(root_fd, (), (), hidden=False)
        refused, chosen = _choose(walk.candidates, walk.names, max_total_bytes)
        read = _read_chosen(root_fd, chosen)
    finally:
        os.close(root_fd)
    return sorted([*walk.entries, *refused, *read], key=lambda e: e.name)


def read_one(path: str | Path, *, max_bytes: int = 20_000_000) -> Entry:
    """One submission file named on the command line, read with the same checks as :func:`collect`.

    A file with more than one name (a hard link) is always refused here: its
    other names cannot be searched for.

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
    name = _shown(path.name)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return Entry(name, problem=f"not graded: {safe_text(exc.strerror)}")
    try:
        st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = safe_text(os.readlink(path.name, dir_fd=parent))
            raise _Refused(f"not graded: a symbolic link (to {target}), not the student's own file")
        problem = _refusal(st, max_bytes)
        if problem is not None:
            raise _Refused(problem)
        if st.st_nlink > 1:
            raise _Refused("not graded: a hard link (the same file has another name)")
        fd = os.open(path.name, _FILE_FLAGS, dir_fd=parent)
        try:
            replaced = "not graded: the file was replaced while it was being read"
            return Entry(name, data=_read_checked(fd, st, replaced, "it was being read"))
        finally:
            os.close(fd)
    except _Refused as exc:
        return Entry(name, problem=str(exc))
    except FileNotFoundError:
        return Entry(name, problem="not graded: the file does not exist")
    except OSError as exc:
        return Entry(name, problem=f"not graded: {safe_text(exc.strerror)}")
    finally:
        os.close(parent)
