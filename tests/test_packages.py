"""Packaging files agree with each other and with the code; `make packages` builds.

The package build runs dpkg-buildpackage (and rpmbuild where present) on a copy of
the tree: about a minute.  It is skipped, with the reason, when the tools are not
installed; `.ci/run` installs them so CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from qgitconf import __version__
from qgitconf.cli import cli
from qgitconf.manpage import render

ROOT = Path(__file__).resolve().parent.parent


def test_version_file_matches_package() -> None:
    assert (ROOT / "version").read_text().strip() == __version__


def test_debian_changelog_version() -> None:
    first = (ROOT / "debian/changelog").read_text().splitlines()[0]
    assert first.startswith(f"qgitconf ({__version__}-")


def test_qubesbuilder_layout() -> None:
    text = (ROOT / ".qubesbuilder").read_text()
    # A tiny structural check (no YAML dependency): host rpm, vm rpm + deb.
    assert re.search(r"^host:\n  rpm:\n    build:\n    - rpm_spec/qgitconf.spec$", text, re.M)
    assert re.search(r"^vm:\n  rpm:\n    build:\n    - rpm_spec/qgitconf.spec\n", text, re.M)
    assert re.search(r"^  deb:\n    build:\n    - debian$", text, re.M)
    assert (ROOT / "rpm_spec/qgitconf.spec.in").is_file()


def test_spec_lists_every_rpc_and_rpc_config_file() -> None:
    spec = (ROOT / "rpm_spec/qgitconf.spec.in").read_text()
    for f in (ROOT / "rpc").iterdir():
        assert f"%{{_sysconfdir}}/qubes-rpc/{f.name}" in spec
    for f in (ROOT / "rpc-config").iterdir():
        assert f"%{{_sysconfdir}}/qubes/rpc-config/{f.name}" in spec
    assert "%package dom0" in spec and "policy.d/30-qgitconf.policy" in spec


def test_rpc_config_files_are_valid() -> None:
    # key=value lines or comments; wait-for-session only with the values qrexec accepts.
    for f in (ROOT / "rpc-config").iterdir():
        assert (ROOT / "rpc" / f.name).is_file(), f"{f.name} configures no service"
        for line in f.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = (s.strip() for s in line.partition("="))
            assert key in ("wait-for-session", "force-user", "skip-service-descriptor")
            if key == "wait-for-session":
                assert value in ("0", "1", "true", "false")


def test_rpc_files_exec_fixed_argv() -> None:
    """One command, programs by absolute path, nothing from the caller in argv."""
    for f in (ROOT / "rpc").iterdir():
        code = "\n".join(x for x in f.read_text().splitlines() if x and not x.startswith("#"))
        words = code.replace("\\\n", " ").split()
        assert words[:3] == ["exec", "/usr/bin/env", "-i"], f
        assert re.fullmatch(r"/usr/bin/qgitconf-service [a-z]+", " ".join(words[-2:])), f
        assert "$@" not in code and "$1" not in code, f


def test_man_page_is_current() -> None:
    assert (ROOT / "docs/qgitconf.1").read_text() == render(cli), "run `make man`"


def test_man_page_covers_every_command() -> None:
    page = (ROOT / "docs/qgitconf.1").read_text()
    for name in ("policy check", "doctor", "persist", "publish", "target init"):
        assert f".SS qgitconf {name.replace('-', chr(92) + '-')}" in page


@pytest.mark.parametrize(
    ("shell", "file"),
    [("bash", "qgitconf.bash"), ("zsh", "_qgitconf"), ("fish", "qgitconf.fish")],
)
def test_completion_is_current(shell: str, file: str) -> None:
    result = CliRunner().invoke(
        cli, [], prog_name="qgitconf", env={"_QGITCONF_COMPLETE": f"{shell}_source"}
    )
    assert result.output == (ROOT / "completion" / file).read_text(), "run `make completion`"


def test_completion_completes_new_commands() -> None:
    env = dict(
        os.environ, _QGITCONF_COMPLETE="bash_complete", COMP_WORDS="qgitconf do", COMP_CWORD="1"
    )
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qgitconf")], env=env, capture_output=True, text=True
    ).stdout
    assert "plain,doctor" in out


_TOOLS = [t for t in ("dpkg-buildpackage", "dh", "make") if shutil.which(t) is None]
_PYBUILD = Path("/usr/share/perl5/Debian/Debhelper/Buildsystem/pybuild.pm").exists()
_PYPROJECT = Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").exists()


@pytest.mark.skipif(bool(_TOOLS), reason=f"not installed: {', '.join(_TOOLS)} (.ci/run installs)")
@pytest.mark.skipif(
    not (_PYBUILD and _PYPROJECT), reason="dh-python / pybuild-plugin-pyproject not installed"
)
def test_make_packages_builds_deb_and_rpm() -> None:
    """Slow (about a minute) but run: the packages really build from this tree."""
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "packages"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MAKEFLAGS=""),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    debs = list((ROOT / "dist").glob(f"qgitconf_{__version__}-*_all.deb"))
    assert len(debs) == 1
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(debs[0])], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./etc/qubes-rpc/qgitconf.Receive",
        "./etc/qubes/rpc-config/qgitconf.Receive",
        "./usr/bin/qgitconf",
        "./usr/lib/python3/dist-packages/qgitconf/cli.py",
        "./usr/share/man/man1/qgitconf.1",
        "./usr/share/bash-completion/completions/qgitconf",
    ):
        assert path in listing, path
    assert "policy.d" not in listing  # dom0 files never go into the template package
    # The installed scripts run isolated (DESIGN rule 12: no user site-packages).
    unpacked = ROOT / "build" / "deb-contents"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
    for script in ("qgitconf", "qgitconf-service"):
        first = (unpacked / "usr/bin" / script).read_text().splitlines()[0]
        assert first.replace(" ", "") == "#!/usr/bin/python3-I", (script, first)
    receive = (unpacked / "etc/qubes-rpc/qgitconf.Receive").read_text()
    assert "/usr/bin/qgitconf-service receive" in receive
    if shutil.which("rpmbuild"):
        rpms = {p.name for p in (ROOT / "dist").glob(f"qgitconf*-{__version__}-1*.noarch.rpm")}
        assert any(n.startswith("qgitconf-dom0-") for n in rpms), rpms
        assert any(n.startswith(f"qgitconf-{__version__}") for n in rpms), rpms
    assert tarfile  # the tarball is built inside make
