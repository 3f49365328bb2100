"""Honest output and collected submissions: what hostile names, links and special files cannot do.

:mod:`ce_grader.output` turns untrusted text into one printable line and inert
spreadsheet cells, and writes the grader's own files atomically without ever
following a planted link. :mod:`ce_grader.collect` reads every submission into
memory without following links, refuses named pipes, oversized files, hard links
to a file outside the folder and files beyond its memory budget without reading
them, notices a file or folder replaced between its walk and its read, grades a
file hard-linked inside the folder under each name with a note, and shows
hostile file names safely. Tests that
involve a named pipe run in a thread with a timeout, so a regression makes
them fail instead of hanging the suite.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ce_grader import collect as collect_module
from ce_grader.collect import MAX_DEPTH, CollectError, Entry, collect, read_one
from ce_grader.output import (
    OutputError,
    atomic_write,
    check_writable_target,
    csv_cell,
    escape_name,
    safe_text,
    write_gradebook_csv,
)

TIMEOUT = 3.0


def _unblock(fifo: Path) -> None:
    """Open both ends of a FIFO without blocking, so that a thread stuck on it can go on."""
    for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
        try:
            os.close(os.open(fifo, flags))
        except OSError:
            pass


def _run_briefly(fn: Callable[[], object], fifo: Path) -> object:
    """Call `fn` in a thread; fail the test (after unblocking it) if it is stuck on `fifo`."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        _unblock(fifo)
        thread.join(TIMEOUT)
        pytest.fail(f"blocked for more than {TIMEOUT} s on the named pipe {fifo}")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


# --- safe_text, escape_name, csv_cell ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("a\x1b[2J\x1b[31mred\x1b[0m", "\x1b"),  # ANSI: clear screen, colours
        ("ok\x07\x08\x00", "\x07\x08\x00"),  # bell, backspace, NUL
        ("abc\u202eexe.ipynb", "\u202e"),  # right-to-left override
        ("a\u2066b\u2069c", "\u2066\u2069"),  # bidi isolates
        ("zero\u200bwidth\ufeff", "\u200b\ufeff"),  # zero-width space, BOM
        ("line\nbreak\rcarriage", "\n\r"),
        ("sep\u2028par\u2029", "\u2028\u2029"),  # line and paragraph separators
        ("\ud800lone surrogate", "\ud800"),
        ("private\ue000use", "\ue000"),
        ("unassigned\u0378", "\u0378"),
        ("next line\x85c1\x9b31m", "\x85\x9b"),  # C1 controls, including the 8-bit CSI
    ],
)
def test_safe_text_removes_controls_escapes_bidi_and_newlines(text, forbidden):
    line = safe_text(text)
    assert line.isprintable()
    assert not set(forbidden) & set(line)
    assert "\n" not in line and "\r" not in line


def test_safe_text_keeps_ordinary_text_and_collapses_whitespace():
    assert safe_text("  Crème brûlée:\t 2π\n\n ≈ 6.28  ") == "Crème brûlée: 2π ≈ 6.28"
    assert safe_text("a\tb\nc") == "a b c"
    assert safe_text("ESC\x1b[31m") == "ESC?[31m"


def test_safe_text_truncates_to_the_limit():
    line = safe_text("x" * 1000, limit=50)
    assert len(line) == 50 and line.endswith("...")
    assert safe_text("x" * 50, limit=50) == "x" * 50
    huge = " " * 10_000_000 + "tail"  # cheap: only a prefix is examined, and the cut is marked
    assert safe_text(huge, limit=20) == "..."


def test_safe_text_never_raises_for_bytes_or_objects():
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    class Sneaky(str):
        def __str__(self) -> str:
            return "\x1b[2J"

        def __getitem__(self, key):
            raise RuntimeError("no slicing")

        def split(self, *args):
            raise RuntimeError("no splitting")

    assert safe_text(b"caf\xc3\xa9 \xff\x1b") == "café \ufffd?"
    assert safe_text(Hostile()) == "<unprintable>"

    class Disguised:
        def __str__(self) -> str:
            return Sneaky("inner\x1b[2J")

    assert safe_text(Sneaky("plain")) == "plain"
    assert safe_text(Disguised()) == "inner?[2J"
    assert safe_text(ValueError("bad\nvalue")) == "bad value"
    assert safe_text(None) == "None"


@given(st.text(alphabet=st.characters(exclude_categories=())), st.integers(4, 400))
def test_safe_text_is_always_one_printable_line_within_the_limit(text, limit):
    line = safe_text(text, limit=limit)
    assert line.isprintable()
    assert len(line) <= limit


_ESCAPE = re.compile(r"\\(\\|n|t|r|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unescape(shown: str) -> str:
    """Decode :func:`escape_name` (``\\xNN`` of 0x80 or more is a byte that was not UTF-8)."""

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code in ("\\", "n", "t", "r"):
            return {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}[code]
        value = int(code[1:], 16)
        return chr(0xDC00 + value) if code[0] == "x" and value >= 0x80 else chr(value)

    return _ESCAPE.sub(one, shown)


NAMES = st.text(
    alphabet=st.characters(exclude_categories=()) | st.sampled_from("\\ \udc85\x85\n"), max_size=20
)


@given(NAMES)
def test_escape_name_is_printable_and_never_merges_two_names(name):
    shown = escape_name(name)
    assert shown.isprintable()
    assert safe_text(shown, limit=1000) == shown
    assert _unescape(shown) == name  # decodable, so two different names never look alike


def test_escape_name_examples():
    assert escape_name("alice/hw1 final.ipynb") == "alice/hw1 final.ipynb"
    assert escape_name("a\nb\x1b[31m\u202e.ipynb") == "a\\nb\\x1b[31m\\u202e.ipynb"
    assert escape_name("\udcff\udcfe.ipynb") == "\\xff\\xfe.ipynb"  # bytes that were not UTF-8
    assert escape_name("a\\nb") == "a\\\\nb"  # a real backslash is not an escape
    assert escape_name(" a  b ") == "\\x20a \\x20b\\x20"
    assert escape_name("a\u00a0b\x85") == "a\\u00a0b\\u0085"  # not \\x85, which is a byte


@pytest.mark.parametrize(
    "text", ["=1+1", "+1", "-1", "@SUM(A1)", "  =cmd|' /C calc'!A0", "\t=x", "\r=x", "\n=x"]
)
def test_csv_cell_neutralises_formulas(text):
    cell = csv_cell(text)
    assert cell.startswith("'")
    assert cell.isprintable()


@pytest.mark.parametrize("text", ["alice.ipynb", "q1: wrong shape", "3.5", "a=b", "x - y"])
def test_csv_cell_leaves_plain_text_alone(text):
    assert csv_cell(text) == text


def test_gradebook_round_trips_hostile_names_as_single_inert_rows(tmp_path):
    path = tmp_path / "gradebook.csv"
    rows = [
        ['evil\nname,"quoted".ipynb', 1.5, 2, "ok", ""],
        ['=HYPERLINK("http://x")', 0.0, 2, "error", "-1 points\r\n@import"],
    ]
    write_gradebook_csv(rows, ["submission", "total", "max", "status", "reason"], path)
    read = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert read == [
        ["submission", "total", "max", "status", "reason"],
        ['evil name,"quoted".ipynb', "1.5", "2", "ok", ""],
        ['\'=HYPERLINK("http://x")', "0", "2", "error", "'-1 points @import"],
    ]
    assert path.read_bytes().count(b"\n") == 3


# --- atomic_write and check_writable_target ---------------------------------------------------------


def test_atomic_write_replaces_a_regular_file_atomically(tmp_path):
    path = tmp_path / "gradebook.csv"
    path.write_bytes(b"old")
    before = os.stat(path)
    with open(path, "rb") as old:
        assert atomic_write(path, b"new contents", what="gradebook") == path
        assert old.read() == b"old"  # a new file was renamed into place; the old one was never rewritten
    assert path.read_bytes() == b"new contents"
    assert os.stat(path).st_ino != before.st_ino
    assert os.listdir(tmp_path) == ["gradebook.csv"]  # no temporary file left behind


def test_atomic_write_creates_a_missing_file(tmp_path):
    path = tmp_path / "new.csv"
    atomic_write(path, b"x", what="gradebook")
    assert path.read_bytes() == b"x"
    assert os.stat(path).st_mode & 0o022 == 0  # not writable by others
    assert os.listdir(tmp_path) == ["new.csv"]


def test_atomic_write_refuses_a_symlink_and_leaves_its_target_alone(tmp_path):
    victim = tmp_path / "instructor-notes.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / "gradebook.csv"
    link.symlink_to(victim)
    with pytest.raises(OutputError, match=r"gradebook.csv.*symbolic link \(to .*instructor-notes.txt\)"):
        atomic_write(link, b"overwritten", what="gradebook")
    assert victim.read_bytes() == b"precious"
    assert link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["gradebook.csv", "instructor-notes.txt"]


def test_atomic_write_refuses_a_dangling_symlink(tmp_path):
    link = tmp_path / "gradebook.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write(link, b"x", what="gradebook")
    assert not (tmp_path / "elsewhere.csv").exists()


def test_atomic_write_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "gradebook.csv"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"gradebook.csv.*named pipe"):
        _run_briefly(lambda: atomic_write(fifo, b"x", what="gradebook"), fifo)


def test_atomic_write_refuses_a_socket(tmp_path):
    path = tmp_path / "g.csv"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(path))
        with pytest.raises(OutputError, match="socket"):
            atomic_write(path, b"x", what="gradebook")


def test_atomic_write_refuses_a_directory(tmp_path):
    folder = tmp_path / "gradebook.csv"
    folder.mkdir()
    (folder / "inside").write_bytes(b"kept")
    with pytest.raises(OutputError, match=r"gradebook.csv: it is a folder"):
        atomic_write(folder, b"x", what="gradebook")
    assert (folder / "inside").read_bytes() == b"kept"


def test_atomic_write_refuses_a_hard_linked_file(tmp_path):
    other = tmp_path / "other-name.csv"
    other.write_bytes(b"original")
    path = tmp_path / "gradebook.csv"
    os.link(other, path)
    with pytest.raises(OutputError, match="hard link"):
        atomic_write(path, b"x", what="gradebook")
    assert other.read_bytes() == b"original"
    assert path.read_bytes() == b"original"


def test_atomic_write_refuses_a_missing_or_symlinked_folder(tmp_path):
    with pytest.raises(OutputError, match="folder does not exist"):
        atomic_write(tmp_path / "missing" / "g.csv", b"x", what="gradebook")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputError, match="folder is a symbolic link"):
        atomic_write(tmp_path / "link" / "g.csv", b"x", what="gradebook")
    assert os.listdir(real) == []


def test_atomic_write_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "gradebook.csv"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError, match=r"gradebook\.csv: No space left on device"):
        atomic_write(path, b"new", what="gradebook")
    assert os.listdir(tmp_path) == ["gradebook.csv"]
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "folder", "hardlink"])
def test_check_writable_target_refuses_before_any_write(tmp_path, kind):
    path = tmp_path / "gradebook.csv"
    other = tmp_path / "other"
    other.write_bytes(b"other")
    if kind == "symlink":
        path.symlink_to(other)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.link(other, path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputError, match=r"refusing to write the gradebook .*gradebook\.csv"):
        _run_briefly(lambda: check_writable_target(path, "gradebook"), path)
    assert sorted(os.listdir(tmp_path)) == before
    assert other.read_bytes() == b"other"


def test_check_writable_target_accepts_a_new_or_plain_file_without_writing(tmp_path):
    assert check_writable_target(tmp_path / "new.csv", "gradebook") == tmp_path / "new.csv"
    assert os.listdir(tmp_path) == []
    (tmp_path / "old.csv").write_bytes(b"old")
    check_writable_target(tmp_path / "old.csv", "gradebook")
    assert (tmp_path / "old.csv").read_bytes() == b"old"


# --- collect ----------------------------------------------------------------------------------------


def _by_name(entries: list[Entry]) -> dict[str, Entry]:
    return {e.name: e for e in entries}


def _count_reads(monkeypatch, most: int = 10_000_000) -> list[int]:
    """Record the size of every :func:`os.read`; refuse to read more than `most` bytes in all."""
    sizes: list[int] = []
    real_read = os.read

    def counting_read(fd, n):
        if sum(sizes) + n > most + collect_module._CHUNK:
            raise MemoryError(f"the test refuses to read more than {most} bytes")
        data = real_read(fd, n)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    return sizes


def test_collect_reads_a_normal_folder_completely(tmp_path):
    (tmp_path / "alice.ipynb").write_bytes(b'{"alice": 1}')
    (tmp_path / "group b").mkdir()
    (tmp_path / "group b" / "bob.ipynb").write_bytes(b"\x00bob" * 1000)
    (tmp_path / "group b" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "group b" / ".ipynb_checkpoints" / "bob-checkpoint.ipynb").write_bytes(b"old")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.ipynb").write_bytes(b"hidden")
    (tmp_path / "notes.txt").write_bytes(b"not a submission")
    (tmp_path / "gradebook-hw1.csv").write_bytes(b"old gradebook")
    entries = collect(tmp_path)
    assert [e.name for e in entries] == ["alice.ipynb", "group b/bob.ipynb"]
    assert [e.data for e in entries] == [b'{"alice": 1}', b"\x00bob" * 1000]
    assert all(e.problem is None for e in entries)
    assert "data=" not in repr(entries[1])  # the bytes stay out of reprs and logs


def test_collect_other_suffixes(tmp_path):
    (tmp_path / "a.md").write_bytes(b"md")
    (tmp_path / "b.ipynb").write_bytes(b"nb")
    assert [e.name for e in collect(tmp_path, suffixes=(".md",))] == ["a.md"]


def test_entry_has_exactly_one_of_data_and_problem():
    with pytest.raises(ValueError, match="exactly one"):
        Entry("x.ipynb")
    with pytest.raises(ValueError, match="exactly one"):
        Entry("x.ipynb", data=b"", problem="both")
    with pytest.raises(ValueError, match="a note goes only with data"):
        Entry("x.ipynb", problem="not graded", note="the same file as y.ipynb")
    assert Entry("x.ipynb", data=b"", note="n").note == "n"


def test_collect_refuses_symlinked_files_inside_and_outside(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "alice.ipynb").write_bytes(b"alice's work")
    (folder / "mallory.ipynb").symlink_to("alice.ipynb")
    secret = tmp_path / "solutions.ipynb"
    secret.write_bytes(b"the solution")
    (folder / "eve.ipynb").symlink_to(secret)
    entries = _by_name(collect(folder))
    assert entries["alice.ipynb"].data == b"alice's work"
    for name, target in [("mallory.ipynb", "alice.ipynb"), ("eve.ipynb", "solutions.ipynb")]:
        assert entries[name].data is None
        assert entries[name].problem.startswith("not graded: a symbolic link (to ")
        assert target in entries[name].problem


def test_collect_does_not_block_on_a_fifo(tmp_path):
    fifo = tmp_path / "bob.ipynb"
    os.mkfifo(fifo)
    (tmp_path / "carol.ipynb").write_bytes(b"carol")
    entries = _by_name(_run_briefly(lambda: collect(tmp_path), fifo))
    assert entries["bob.ipynb"].problem == "not graded: a named pipe (FIFO), not a regular file"
    assert entries["carol.ipynb"].data == b"carol"


def test_collect_grades_a_file_whose_names_are_all_inside_under_each_name(tmp_path, monkeypatch):
    (tmp_path / "alice.ipynb").write_bytes(b"alice's work")
    (tmp_path / "mallory").mkdir()
    os.link(tmp_path / "alice.ipynb", tmp_path / "mallory" / "copy.ipynb")
    (tmp_path / ".stash").mkdir()  # names that are not submissions are inside the folder too
    os.link(tmp_path / "alice.ipynb", tmp_path / ".stash" / "x.ipynb")
    os.link(tmp_path / "alice.ipynb", tmp_path / "mallory" / "notes.txt")
    (tmp_path / "bob.ipynb").write_bytes(b"bob")
    read = _count_reads(monkeypatch)
    entries = _by_name(collect(tmp_path))
    assert sorted(entries) == ["alice.ipynb", "bob.ipynb", "mallory/copy.ipynb"]
    assert entries["alice.ipynb"].data == entries["mallory/copy.ipynb"].data == b"alice's work"
    assert entries["alice.ipynb"].note == (
        "the same file as mallory/copy.ipynb: graded under each name; decide who wrote it"
    )
    assert entries["mallory/copy.ipynb"].note == (
        "the same file as alice.ipynb: graded under each name; decide who wrote it"
    )
    assert entries["bob.ipynb"].note is None
    assert sum(read) == len(b"alice's work") + len(b"bob")  # the hard-linked file was read once


def test_collect_note_lists_a_few_names_and_escapes_them(tmp_path):
    (tmp_path / "a\x1b.ipynb").write_bytes(b"a")
    for i in range(7):
        os.link(tmp_path / "a\x1b.ipynb", tmp_path / f"{i}\n.ipynb")
    entries = _by_name(collect(tmp_path))
    assert entries["a\\x1b.ipynb"].note == (
        "the same file as 0\\n.ipynb, 1\\n.ipynb, 2\\n.ipynb, 3\\n.ipynb, 4\\n.ipynb and 2 more: "
        "graded under each name; decide who wrote it"
    )
    assert all(e.data == b"a" for e in entries.values())


def test_collect_refuses_a_hard_link_to_a_file_outside_the_folder(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    secret = tmp_path / "solutions.ipynb"
    secret.write_bytes(b"the solution")
    os.link(secret, folder / "mallory.ipynb")
    os.link(secret, folder / "eve.ipynb")  # two names inside, a third outside
    (folder / "alice.ipynb").write_bytes(b"alice")
    entries = _by_name(collect(folder))
    for name in ("mallory.ipynb", "eve.ipynb"):
        assert entries[name].problem == "not graded: a hard link to a file outside the submissions folder"
    assert entries["alice.ipynb"].data == b"alice"
    assert secret.read_bytes() == b"the solution"


def test_collect_refuses_oversized_files_without_reading_them(tmp_path, monkeypatch):
    huge = tmp_path / "huge.ipynb"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB that take no disk space
    (tmp_path / "small.ipynb").write_bytes(b"12345")
    (tmp_path / "limit.ipynb").write_bytes(b"1234")
    read_sizes = _count_reads(monkeypatch)
    entries = _by_name(collect(tmp_path, max_bytes=4))
    assert entries["huge.ipynb"].problem == "not graded: 2147483648 bytes, more than the limit of 4"
    assert entries["small.ipynb"].problem == "not graded: 5 bytes, more than the limit of 4"
    assert entries["limit.ipynb"].data == b"1234"
    assert sum(read_sizes) == 4  # only limit.ipynb was read
    read_sizes.clear()
    entries = _by_name(collect(tmp_path))  # the default limit, 20 MB
    assert entries["huge.ipynb"].problem.startswith("not graded: 2147483648 bytes, more than the limit")
    assert sum(read_sizes) == 4 + 5


def test_collect_notices_a_file_swapped_between_listing_and_reading(tmp_path, monkeypatch):
    (tmp_path / "alice.ipynb").write_bytes(b"alice")
    (tmp_path / "swap").write_bytes(b"someone else's")
    real_open = os.open

    def swapping_open(path, flags, mode=0o777, *, dir_fd=None):
        if path == "alice.ipynb":
            os.replace(tmp_path / "swap", tmp_path / "alice.ipynb")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", swapping_open)
    (entry,) = collect(tmp_path)
    assert entry.problem == (
        "not graded: the file or a folder above it was replaced while the folder was being read"
    )


def test_collect_refuses_a_symlinked_root(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.ipynb").write_bytes(b"a")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(CollectError, match=r"link.*symbolic link \(to .*real\)"):
        collect(tmp_path / "link")
    with pytest.raises(CollectError, match="not a folder"):
        collect(real / "a.ipynb")
    with pytest.raises(CollectError, match="No such file"):
        collect(tmp_path / "missing")


def test_collect_does_not_follow_a_symlinked_subfolder(tmp_path):
    outside = tmp_path / "instructor"
    outside.mkdir()
    (outside / "solution.ipynb").write_bytes(b"the solution")
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "alice.ipynb").write_bytes(b"alice")
    (folder / "mallory").symlink_to(outside)
    (folder / ".cache").symlink_to(outside)  # hidden: skipped like a hidden folder
    entries = collect(folder)
    assert [e.name for e in entries] == ["alice.ipynb", "mallory"]
    assert entries[1].problem.startswith("not searched: a symbolic link to a folder (to ")
    assert all(e.data != b"the solution" for e in entries)


def test_collect_reports_folders_nested_too_deep(tmp_path):
    deep = tmp_path.joinpath(*["d"] * (MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep / "x.ipynb").write_bytes(b"x")
    (tmp_path / "d" / "ok.ipynb").write_bytes(b"ok")
    entries = collect(tmp_path)
    assert [(e.name, e.problem) for e in entries] == [
        ("/".join(["d"] * (MAX_DEPTH + 1)), f"not searched: nested deeper than {MAX_DEPTH} folders"),
        ("d/ok.ipynb", None),
    ]


def test_collect_shows_hostile_names_safely(tmp_path):
    evil = "evil\n\x1b[2J\x1b[31m\u202egpj.ipynb"
    (tmp_path / evil).write_bytes(b"evil bytes")
    os.close(os.open(os.fsencode(tmp_path) + b"/\xff\xfe.ipynb", os.O_WRONLY | os.O_CREAT, 0o644))
    entries = collect(tmp_path)
    names = [e.name for e in entries]
    assert names == ["\\xff\\xfe.ipynb", "evil\\n\\x1b[2J\\x1b[31m\\u202egpj.ipynb"]
    assert all(n.isprintable() for n in names)
    assert entries[1].data == b"evil bytes"
    assert entries[0].data == b""


def test_collect_refuses_too_many_entries(tmp_path):
    for i in range(4):
        (tmp_path / f"{i}.ipynb").write_bytes(b"x")
    assert len(collect(tmp_path, max_entries=4)) == 4
    with pytest.raises(CollectError, match="more than 3 submissions"):
        collect(tmp_path, max_entries=3)


def test_collect_unreadable_file_costs_its_own_row(tmp_path, monkeypatch):
    (tmp_path / "locked.ipynb").write_bytes(b"x")
    (tmp_path / "ok.ipynb").write_bytes(b"ok")
    real_open = os.open

    def denying_open(path, flags, mode=0o777, *, dir_fd=None):
        if path == "locked.ipynb":  # what chmod 0 does for anyone but root
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", denying_open)
    entries = _by_name(collect(tmp_path))
    assert entries["locked.ipynb"].problem == "not graded: cannot open it (Permission denied)"
    assert entries["ok.ipynb"].data == b"ok"


@pytest.mark.parametrize("phase", ["walk", "read"])
def test_collect_an_unexpected_error_costs_its_own_row(tmp_path, monkeypatch, phase):
    (tmp_path / "a.ipynb").write_bytes(b"a")
    (tmp_path / "b.ipynb").write_bytes(b"b")
    if phase == "walk":
        real_visit = collect_module._Walk.visit

        def broken_visit(self, dir_fd, name, *args):
            if name == "a.ipynb":
                raise RuntimeError("surprise\x1b[2J")
            return real_visit(self, dir_fd, name, *args)

        monkeypatch.setattr(collect_module._Walk, "visit", broken_visit)
    else:
        real_read = collect_module._read_checked

        def broken_read(fd, seen, *args):
            if seen.st_size == 1 and os.read(fd, 1) == b"a":
                raise RuntimeError("surprise\x1b[2J")
            os.lseek(fd, 0, os.SEEK_SET)
            return real_read(fd, seen, *args)

        monkeypatch.setattr(collect_module, "_read_checked", broken_read)
    entries = _by_name(collect(tmp_path))
    assert entries["a.ipynb"].problem == "not graded: cannot read it (surprise?[2J)"
    assert entries["b.ipynb"].data == b"b"


# --- collect: the memory budget ---------------------------------------------------------------------


def test_collect_reads_the_smallest_files_that_fit_the_memory_budget(tmp_path, monkeypatch):
    for name in ("alice.ipynb", "bob.ipynb", "carol/hw.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"s" * 100_000)
    (tmp_path / "mallory").mkdir()
    for name in ("big2.ipynb", "big1.ipynb"):
        (tmp_path / "mallory" / name).write_bytes(b"B" * 600_000)
    with open(tmp_path / "mallory" / "huge.ipynb", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB that take no disk space, and that the test would not hold
    read = _count_reads(monkeypatch, most=1_000_000)
    entries = _by_name(collect(tmp_path, max_bytes=3 * 1024**3, max_total_bytes=1_000_000))
    graded = {name for name, e in entries.items() if e.data is not None}
    assert graded == {"alice.ipynb", "bob.ipynb", "carol/hw.ipynb", "mallory/big1.ipynb"}  # 900 KB
    assert entries["mallory/big1.ipynb"].data == b"B" * 600_000
    budget = "not graded: the class's files exceed the grader's memory budget of 1 MB; "
    assert entries["mallory/big2.ipynb"].problem == budget + "this file (0.6 MB) is among the largest"
    assert entries["mallory/huge.ipynb"].problem == budget + "this file (2147.5 MB) is among the largest"
    assert sum(read) == 900_000  # the files beyond the budget were never read


def test_collect_memory_budget_takes_the_smallest_first_and_ties_by_name(tmp_path):
    for name, size in [("a.ipynb", 500), ("b.ipynb", 300), ("c.ipynb", 300), ("d.ipynb", 300)]:
        (tmp_path / name).write_bytes(b"x" * size)
    entries = collect(tmp_path, max_total_bytes=700)
    assert [e.name for e in entries if e.data is not None] == ["b.ipynb", "c.ipynb"]


def test_collect_memory_budget_costs_rows_never_the_class(tmp_path):
    for i in range(4):
        (tmp_path / f"{i}.ipynb").write_bytes(b"x")
    entries = collect(tmp_path, max_total_bytes=2)
    assert [e.data for e in entries[:2]] == [b"x", b"x"]
    assert [e.problem for e in entries[2:]] == [
        "not graded: the class's files exceed the grader's memory budget of less than 0.1 MB; "
        "this file (less than 0.1 MB) is among the largest"
    ] * 2
    assert inspect.signature(collect).parameters["max_total_bytes"].default == 256_000_000


def test_collect_a_hard_linked_file_counts_once_against_the_budget(tmp_path):
    (tmp_path / "a.ipynb").write_bytes(b"a" * 600)
    os.link(tmp_path / "a.ipynb", tmp_path / "b.ipynb")
    (tmp_path / "c.ipynb").write_bytes(b"c" * 400)
    entries = _by_name(collect(tmp_path, max_total_bytes=1000))
    assert all(e.data is not None for e in entries.values())


# --- collect: changes between the walk and the read -------------------------------------------------


def _between_phases(monkeypatch, change: Callable[[], None]) -> None:
    """Call `change` after collect's walk and before it reads any file."""
    real_choose = collect_module._choose

    def choose_then_change(*args):
        chosen = real_choose(*args)
        change()
        return chosen

    monkeypatch.setattr(collect_module, "_choose", choose_then_change)


def _record_opens(monkeypatch) -> set[tuple[int, int]]:
    """Record ``(st_dev, st_ino)`` of everything :func:`os.open` opens."""
    opened: set[tuple[int, int]] = set()
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        st = os.fstat(fd)
        opened.add((st.st_dev, st.st_ino))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    return opened


def _identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


def _replace_with(path: Path, replacement: Path) -> None:
    """Rename `path` away and put `replacement` in its place."""
    path.rename(path.with_name(path.name + ".old"))
    replacement.rename(path)


@pytest.mark.parametrize(
    "change",
    [
        "folder becomes a link to a folder outside",
        "folder becomes another folder",
        "file becomes a link",
        "file becomes another file",
    ],
)
def test_collect_notices_a_file_or_folder_replaced_between_walk_and_read(tmp_path, monkeypatch, change):
    folder = tmp_path / "subs"
    (folder / "mallory" / "hw").mkdir(parents=True)
    (folder / "mallory" / "hw" / "m.ipynb").write_bytes(b"mallory's work")
    (folder / "alice").mkdir()
    (folder / "alice" / "a.ipynb").write_bytes(b"alice")
    outside = tmp_path / "instructor" / "hw"
    outside.mkdir(parents=True)
    (outside / "m.ipynb").write_bytes(b"THE SOLUTION!!")  # the same size as mallory's work
    decoy = folder / ".decoy"  # hidden, and inside the folder so that a rename can put it in place
    decoy.mkdir()
    (decoy / "m.ipynb").write_bytes(b"THE SOLUTION!!")

    def swap() -> None:
        if change == "folder becomes a link to a folder outside":
            (folder / "link").symlink_to(outside)
            _replace_with(folder / "mallory" / "hw", folder / "link")
        elif change == "folder becomes another folder":
            _replace_with(folder / "mallory" / "hw", decoy)
        elif change == "file becomes a link":
            (folder / "link").symlink_to(outside / "m.ipynb")
            _replace_with(folder / "mallory" / "hw" / "m.ipynb", folder / "link")
        else:
            _replace_with(folder / "mallory" / "hw" / "m.ipynb", decoy / "m.ipynb")

    never_opened = {_identity(outside), _identity(outside / "m.ipynb")}
    if change != "file becomes another file":  # only fstat can tell a file put in place by a rename
        never_opened.add(_identity(decoy / "m.ipynb"))
    _between_phases(monkeypatch, swap)
    opened = _record_opens(monkeypatch)
    entries = _by_name(collect(folder))
    assert entries["mallory/hw/m.ipynb"].problem == (
        "not graded: the file or a folder above it was replaced while the folder was being read"
    )
    assert entries["alice/a.ipynb"].data == b"alice"
    assert all(e.data != b"THE SOLUTION!!" for e in entries.values())
    assert not opened & never_opened  # no link followed, no file in a replacement folder even opened


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("grows", "not graded: the file changed size while the folder was being read"),
        (
            "linked outside",
            "not graded: the file gained or lost a name (a hard link) while the folder was being read",
        ),
    ],
)
def test_collect_notices_a_file_changed_between_walk_and_read(tmp_path, monkeypatch, change, problem):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "m.ipynb").write_bytes(b"small")
    (folder / "a.ipynb").write_bytes(b"alice")

    def modify() -> None:
        if change == "grows":
            (folder / "m.ipynb").write_bytes(b"x" * 100)
        else:
            os.link(folder / "m.ipynb", tmp_path / "outside.ipynb")

    _between_phases(monkeypatch, modify)
    entries = _by_name(collect(folder))
    assert entries["m.ipynb"].problem == problem
    assert entries["a.ipynb"].data == b"alice"


# --- read_one ---------------------------------------------------------------------------------------


def test_read_one_reads_a_plain_file_and_refuses_links_and_special_files(tmp_path):
    (tmp_path / "alice.ipynb").write_bytes(b"alice")
    (tmp_path / "shared.ipynb").write_bytes(b"shared")
    os.link(tmp_path / "shared.ipynb", tmp_path / "mallory.ipynb")
    (tmp_path / "eve.ipynb").symlink_to(tmp_path / "alice.ipynb")
    (tmp_path / "folder.ipynb").mkdir()
    os.mkfifo(tmp_path / "fifo.ipynb")
    assert read_one(tmp_path / "alice.ipynb") == Entry("alice.ipynb", data=b"alice")
    for name in ("shared.ipynb", "mallory.ipynb"):
        assert read_one(tmp_path / name).problem == "not graded: a hard link (the same file has another name)"
    assert read_one(tmp_path / "eve.ipynb").problem.startswith("not graded: a symbolic link (to ")
    assert read_one(tmp_path / "folder.ipynb").problem == "not graded: a folder, not a regular file"
    fifo = _run_briefly(lambda: read_one(tmp_path / "fifo.ipynb"), tmp_path / "fifo.ipynb")
    assert fifo.problem == "not graded: a named pipe (FIFO), not a regular file"
    assert read_one(tmp_path / "missing.ipynb").problem == "not graded: the file does not exist"
    assert read_one(tmp_path / "alice.ipynb", max_bytes=4).problem == (
        "not graded: 5 bytes, more than the limit of 4"
    )
