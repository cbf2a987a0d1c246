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
