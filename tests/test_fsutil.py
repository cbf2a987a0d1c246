"""``fsutil``'s stand-ins for ``tempfile`` (issue 21: the Receive service and publish
import neither ``tempfile`` nor ``random``): a private directory, a nameless file."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from qgitconf import fsutil


def test_private_dir_is_new_and_of_this_user_only(tmp_path: Path) -> None:
    made = {fsutil.private_dir(tmp_path, "quarantine-") for _ in range(20)}
    assert all(d.parent == tmp_path for d in made)
    assert len(made) == 20
    for d in made:
        st = d.lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0
        assert d.name.startswith("quarantine-") and d.parent == tmp_path


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named-then-removed"])
def test_anonymous_file_has_no_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpfile: bool
) -> None:
    if not tmpfile:  # a file system without O_TMPFILE
        real_open = os.open

        def no_tmpfile(path: object, flags: int, *args: object, **kw: object) -> int:
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, "not supported")
            return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", no_tmpfile)
    where = tmp_path / "spool"
    where.mkdir()
    with fsutil.anonymous_file(where) as f:
        assert os.listdir(where) == []
        f.write(b"x" * 100_000)
        f.seek(0)
        assert f.read() == b"x" * 100_000
        assert stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077 == 0
    assert os.listdir(where) == []


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_mode) for p in [root, *root.rglob("*")])


def test_remove_tree_never_follows_a_symlink(tmp_path: Path) -> None:
    """``remove_tree`` (the journal, GnuPG homes no longer kept) removes links, never
    what they point at: a link to a directory and a link to a file outside stay
    links removed, the outside byte-identical."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "f").write_bytes(b"keep")
    (outside / "g").write_bytes(b"keep too")
    before = _tree(outside)
    doomed = tmp_path / "doomed"
    (doomed / "a" / "b").mkdir(parents=True)
    (doomed / "a" / "b" / "x").write_bytes(b"x")
    (doomed / "a" / "to-dir").symlink_to(outside)
    (doomed / "a" / "b" / "to-sub").symlink_to(outside / "sub")
    (doomed / "to-file").symlink_to(outside / "g")
    (doomed / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(doomed / "fifo")
    fsutil.remove_tree(doomed)
    assert not doomed.exists() and not doomed.is_symlink()
    assert _tree(outside) == before
    assert (outside / "sub" / "f").read_bytes() == b"keep"


def test_remove_tree_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.remove_tree(tmp_path / "missing")
    fsutil.remove_tree(tmp_path / "missing", ignore_errors=True)  # nothing raised
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_bytes(b"f")
    (locked / "inner").chmod(0o500)  # its entries cannot be removed (as a user)
    try:
        if os.geteuid() != 0:
            with pytest.raises(PermissionError):
                fsutil.remove_tree(locked)
            fsutil.remove_tree(locked, ignore_errors=True)
            assert (locked / "inner" / "f").exists()  # left, not raised
        else:  # root removes it regardless
            fsutil.remove_tree(locked)
            assert not locked.exists()
    finally:
        if (locked / "inner").exists():
            (locked / "inner").chmod(0o700)
