"""Hermetic test set-up: no test touches the real home, real qrexec or a real keyring."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf.lab.build import available
from qgitconf.lab.real import RealLab
from tests.labkit import Lab, setup_lab

_SCRUB = (
    "GNUPGHOME",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_CONFIG_GLOBAL",
    "QGITCONF_REPO",
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


@pytest.fixture(scope="session", autouse=True)
def no_gpg_agent_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop the gpg-agents the host's gpg started in this session's temporary GnuPG
    homes (key generation and signing start one per home): they would outlive the run."""
    yield
    gpgconf = shutil.which("gpgconf")
    if gpgconf is None:
        return
    for ring in tmp_path_factory.getbasetemp().rglob("pubring.kbx"):
        subprocess.run(
            [gpgconf, "--homedir", str(ring.parent), "--kill", "all"],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="session")
def real_lab() -> Iterator[Lab]:
    """The real lab (Qubes' own qrexec and split-GPG, built from the pinned sources),
    booted once per session and set up once: repo, targets personal and work, keys
    pinned.  Skipped, with the reason, where it cannot run (not root, no sources)."""
    ok, why = available()
    if not ok:
        pytest.skip(f"real lab unavailable: {why}")
    lab = RealLab.boot()
    try:
        setup_lab(lab)
        lab.save_baseline()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(real_lab: Lab) -> Lab:
    """The real lab, reset to the set-up state: every home byte for byte, QubesDB,
    tags, power state and the ask answer."""
    real_lab.reset()
    return real_lab


def _fuzz_profile() -> None:
    """`make fuzz`: the property tests with a large example budget and no deadline."""
    import os

    from hypothesis import settings

    seconds = int(os.environ.get("QGITCONF_FUZZ_SECONDS", "60"))
    settings.register_profile("fuzz", max_examples=max(1000, seconds * 200), deadline=None)


_fuzz_profile()
