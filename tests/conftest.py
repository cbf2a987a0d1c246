"""Hermetic test set-up: no test touches the real home, real qrexec or a real keyring."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf.lab.lab import Lab, init_lab
from tests.labkit import setup_lab

_SCRUB = (
    "GNUPGHOME",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_CONFIG_GLOBAL",
    "QGITCONF_REPO",
    "QGITCONF_QUBE_NAME",
    "QGITCONF_LAB",
    "QGITCONF_SYSCONFDIR",
    "QREXEC_REMOTE_DOMAIN",
    "DISPLAY",
)


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)


def _short_dir() -> Path:
    # gpg-agent sockets live in the GnuPG home: keep lab paths short (sun_path limit).
    return Path(tempfile.mkdtemp(prefix="qgl-", dir="/tmp"))


@pytest.fixture(scope="session")
def lab_template() -> Iterator[Path]:
    """A lab set up once per session: repo, targets personal and work, keys pinned."""
    base = _short_dir()
    lab = init_lab(base / "lab")
    setup_lab(lab)
    yield lab.root
    lab.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lab(lab_template: Path) -> Iterator[Lab]:
    """A fresh copy of the set-up lab for one test."""
    base = _short_dir()
    shutil.copytree(
        lab_template, base / "lab", symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*")
    )
    copy = Lab(base / "lab")
    yield copy
    copy.close()
    shutil.rmtree(base, ignore_errors=True)


def _fuzz_profile() -> None:
    """`make fuzz`: the property tests with a large example budget and no deadline."""
    import os

    from hypothesis import settings

    seconds = int(os.environ.get("QGITCONF_FUZZ_SECONDS", "60"))
    settings.register_profile("fuzz", max_examples=max(1000, seconds * 200), deadline=None)


_fuzz_profile()
