"""Honest, safe output: printable text, inert spreadsheet cells, files that cannot be redirected.

Everything a submission touches is hostile: its file name, the text of its
exceptions, the labels it prints. Before any of it reaches a terminal or a
spreadsheet it passes through :func:`safe_text` (one printable line: no
terminal escapes, no bidirectional overrides, no newlines that forge rows) and,
for the gradebook, :func:`csv_cell` (no formula a spreadsheet would run).

The grader's own files are written with :func:`atomic_write`: a link or special
file planted where the gradebook will go is refused, never followed, and a
crash half-way leaves the old file intact instead of a truncated one.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "OutputError",
    "atomic_write",
    "check_writable_target",
    "csv_cell",
    "escape_name",
    "safe_text",
    "write_gradebook_csv",
]

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
"""Unicode categories that are never shown: controls (``Cc``, which holds the
terminal escape ``ESC``), format characters (``Cf``: bidirectional overrides
such as U+202E, zero-width characters), line and paragraph separators,
surrogates, private-use and unassigned code points."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet treat a cell as a formula (OWASP, CSV injection)."""

_LINE_BREAKS = frozenset("\t\n\r")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


class OutputError(Exception):
    """The grader refuses to write one of its own files (the message names the file and why)."""


def safe_text(text: object, limit: int = 300) -> str:
    """One printable line made from untrusted text.

    Every character in :data:`UNSAFE_CATEGORIES` becomes ``?`` (tab, newline
    and carriage return become a space), runs of whitespace become one space,
    and the ends are stripped. The result has at most `limit` characters; a
    longer text is cut and ends with ``...``. The result always satisfies
    :meth:`str.isprintable`.

    Parameters
    ----------
    text : object
        Usually a ``str``. ``bytes`` are decoded as UTF-8 with replacement;
        any other object is converted with :func:`str`, and an object whose
        conversion raises is shown as ``<unprintable>``.
    limit : int, default 300
        Maximal length of the result, at least 4.

    Returns
    -------
    str
        The printable line.

    Raises
    ------
    ValueError
        If `limit` is smaller than 4 (a bug of the caller, never of the text).
    """
    if limit < 4:
        raise ValueError(f"safe_text: limit must be at least 4, got {limit}")
    if isinstance(text, str):
        raw = str.__str__(text)  # a str subclass cannot run its own __str__ here
    elif isinstance(text, bytes | bytearray):
        raw = bytes(text).decode("utf-8", errors="replace")
    else:
        try:
            raw = str.__str__(str(text))  # an exact str, even if __str__ returned a subclass
        except Exception:
            return "<unprintable>"
    # Only a bounded prefix is examined, so that a huge text costs little; a
    # prefix this long still fills `limit` unless it is mostly whitespace, and
    # a cut text is marked with "..." in every case.
    window = raw[: 4 * limit + 16]
    chars = []
    for ch in window:
        if ch in _LINE_BREAKS:
            chars.append(" ")
        elif unicodedata.category(ch) in UNSAFE_CATEGORIES:
            chars.append("?")
        else:
            chars.append(ch)
    line = " ".join("".join(chars).split())
    if len(line) > limit or len(raw) > len(window):
        line = line[: limit - 3].rstrip() + "..."
    return line


def _escape_char(ch: str) -> str:
    """A Python escape for one character: ``\\n``, ``\\x1b`` (ASCII only), ``\\u202e``, ``\\U000e0001``."""
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if code < 0x80:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_name(name: str) -> str:
    """A file name written so that it is printable and two different names never look alike.

    Backslashes are doubled; bytes that are not UTF-8 (the surrogates of
    :func:`os.fsdecode`, always 0x80 or more) become ``\\xNN``; characters in
    :data:`UNSAFE_CATEGORIES`, whitespace other than a plain space, and spaces
    at either end or after another space become Python escapes (``\\n``,
    ``\\x1b`` for ASCII, ``\\u0085`` or ``\\u202e`` beyond). So ``\\x85`` is
    always the byte 0x85 and ``\\u0085`` always the character U+0085, and the
    escaped form can be decoded back: two different names never look alike. An
    ordinary name is returned unchanged.

    Parameters
    ----------
    name : str
        A file name or a ``/``-separated relative path, as :func:`os.fsdecode` gives it.

    Returns
    -------
    str
        The escaped name; :func:`safe_text` leaves it unchanged (up to its length limit).
    """
    out = []
    last = len(name) - 1
    for i, ch in enumerate(name):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == " ":
            out.append("\\x20" if i in (0, last) or name[i - 1] == " " else " ")
        elif ch.isspace() or unicodedata.category(ch) in UNSAFE_CATEGORIES:
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(text: object) -> str:
    """A spreadsheet cell made from untrusted text: :func:`safe_text`, then no formula.

    A cell that starts (after any leading whitespace) with one of
    :data:`FORMULA_STARTS` gets a leading single quote, so that a spreadsheet
    shows it as text instead of evaluating it. Numbers that the grader computed
    itself are not passed through here.

    Parameters
    ----------
    text : object
        As for :func:`safe_text`.

    Returns
    -------
    str
        The cell.
    """
    cell = safe_text(text)
    if cell.lstrip(" ").startswith(FORMULA_STARTS):
        cell = "'" + cell
    return cell


def _describe(st: os.stat_result) -> str | None:
    """Why an existing file of this kind must not be replaced (None for a lone regular file)."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if stat.S_ISFIFO(mode):
        return "it is a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "it is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device"
    if not stat.S_ISREG(mode):
        return "it is not a regular file"
    if st.st_nlink > 1:
        return f"it is a hard link (the same file has {st.st_nlink - 1} other name(s))"
    return None


def check_writable_target(path: str | Path, what: str) -> Path:
    """Refuse, before any work is done, a place where the grader must not write its file.

    The target may be missing or a regular file with a single name; anything
    else (a symbolic link, even a dangling one; a folder; a FIFO, socket or
    device; a hard-linked file) was put there by someone and is refused, and so
    is a missing parent folder or a parent that is a symbolic link. Nothing is
    written.

    Parameters
    ----------
    path : str or Path
        The file the grader is about to write.
    what : str
        What the file is, for the message (``"gradebook"``).

    Returns
    -------
    Path
        `path` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        Naming the file and why it is refused.
    """
    path = Path(path)
    shown = safe_text(os.fspath(path), limit=1000)
    parent = path.parent
    try:
        pst = os.lstat(parent)
    except FileNotFoundError:
        raise OutputError(f"cannot write the {what} {shown}: its folder does not exist") from None
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {shown}: its folder: {safe_text(exc.strerror)}") from None
    if stat.S_ISLNK(pst.st_mode):
        raise OutputError(f"refusing to write the {what} {shown}: its folder is a symbolic link")
    if not stat.S_ISDIR(pst.st_mode):
        raise OutputError(f"cannot write the {what} {shown}: its parent is not a folder")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {shown}: {safe_text(exc.strerror)}") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = safe_text(os.readlink(path))
        except OSError:
            target = "?"
        raise OutputError(f"refusing to write the {what} {shown}: it is a symbolic link (to {target})")
    reason = _describe(st)
    if reason is not None:
        raise OutputError(f"refusing to write the {what} {shown}: {reason}")
    return path


def atomic_write(path: str | Path, data: bytes, *, what: str) -> Path:
    """Write a file of the grader's own, atomically, never through a link or into a special file.

    After the checks of :func:`check_writable_target`, the data goes to a new
    file with a random name in the same folder (created with ``O_EXCL`` and
    ``O_NOFOLLOW``, so it cannot be a planted link), is flushed to disk, and
    is renamed onto `path`. The rename replaces whatever is at `path` (even a
    link planted after the check) and never writes through it. On any error
    the temporary file is removed and the old file is left as it was.

    Parameters
    ----------
    path : str or Path
        The file to write.
    data : bytes
        Its complete contents.
    what : str
        What the file is, for messages (``"gradebook"``).

    Returns
    -------
    Path
        `path` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        Naming the file and why it was not written.
    """
    path = check_writable_target(path, what)
    shown = safe_text(os.fspath(path), limit=1000)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    tmp = fd = None
    try:
        for _ in range(100):
            candidate = path.parent / f".ce_grader-{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(candidate, flags, 0o644)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise OutputError(f"cannot write the {what} {shown}: no free temporary name in its folder")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
        tmp = None
        _sync_folder(path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {shown}: {safe_text(exc.strerror or exc)}") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so that a rename survives a crash (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cell(value: object) -> str | int | float:
    """A gradebook cell: numbers as computed by the grader, everything else through :func:`csv_cell`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if isinstance(value, int) else format(value, "g")
    return csv_cell(value)


def write_gradebook_csv(rows: Iterable[Sequence[object]], header: Sequence[object], path: str | Path) -> Path:
    """Write a gradebook: every text cell made safe, the file written with :func:`atomic_write`.

    Parameters
    ----------
    rows : iterable of sequences
        One sequence of cells per row. ``int`` and ``float`` cells are the
        grader's own numbers and are written as they are (floats with ``g``
        format); every other cell, strings included, is untrusted and goes
        through :func:`csv_cell`.
    header : sequence
        The column names (also through :func:`csv_cell`).
    path : str or Path
        The CSV file.

    Returns
    -------
    Path
        `path` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        If the file cannot or must not be written.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    for row in rows:
        writer.writerow([_cell(c) for c in row])
    return atomic_write(path, buffer.getvalue().encode("utf-8"), what="gradebook")
