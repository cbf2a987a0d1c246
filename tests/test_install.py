"""`make install` / `make install-dom0` into a temporary DESTDIR produce the expected tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"


def _has_build_backend() -> bool:
    py = VENV_PY if VENV_PY.exists() else Path(sys.executable)
    proc = subprocess.run([str(py), "-c", "import setuptools, wheel"], capture_output=True)
    return proc.returncode == 0


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
needs_wheel = pytest.mark.skipif(
    not _has_build_backend(), reason="no `wheel` in the venv: run `make build-deps` (CI does)"
)


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAKEFLAGS="")
    proc = subprocess.run(
        ["make", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@needs_make
def test_install_vm_and_dom0_tree(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    _make("install-vm", "install-dom0", f"DESTDIR={dest}", "PREFIX=/usr")
    for name in ("qgitconf.Receive", "qgitconf.Fetch", "qgitconf.Export"):
        rpc = dest / "etc/qubes-rpc" / name
        assert rpc.read_bytes() == (ROOT / "rpc" / name).read_bytes()
        assert _mode(rpc) == 0o755
        conf = dest / "etc/qubes/rpc-config" / name
        assert "wait-for-session=0" in conf.read_text().splitlines()
        assert _mode(conf) == 0o644
    policies = sorted((ROOT / "policy").glob("*.policy"))
    assert policies
    for src in policies:
        assert (dest / "etc/qubes/policy.d" / src.name).read_bytes() == src.read_bytes()
        # the template's copy, for `qgitconf policy check` and copying to dom0 (issue 19.14)
        shipped = dest / "usr/share/qgitconf/policy" / src.name
        assert shipped.read_bytes() == src.read_bytes() and _mode(shipped) == 0o644
    preset = dest / "usr/lib/systemd/user-preset/50-qgitconf.preset"
    assert preset.read_bytes() == (ROOT / "systemd/50-qgitconf.preset").read_bytes()
    assert (dest / "usr/share/bash-completion/completions/qgitconf").is_file()
    assert (dest / "usr/share/zsh/site-functions/_qgitconf").is_file()
    assert (dest / "usr/share/fish/vendor_completions.d/qgitconf.fish").is_file()
    assert (dest / "usr/share/man/man1/qgitconf.1").is_file()
    units = sorted(p.name for p in (ROOT / "systemd").glob("*.service")) + sorted(
        p.name for p in (ROOT / "systemd").glob("*.timer")
    )
    for unit in units:
        assert (dest / "usr/lib/systemd/user" / unit).is_file()


@needs_make
def test_install_dom0_installs_only_policy(tmp_path: Path) -> None:
    dest = tmp_path / "dom0"
    _make("install-dom0", f"DESTDIR={dest}")
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    want = sorted(f"etc/qubes/policy.d/{p.name}" for p in (ROOT / "policy").glob("*.policy"))
    assert want and files == want


@needs_make
@needs_wheel
def test_make_install_full_tree_runs(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    _make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    bin_ = dest / "usr/bin"
    for script in ("qgitconf", "qgitconf-service"):
        # Isolated mode (DESIGN rule 12): no user site-packages, no PYTHON* variables.
        assert (bin_ / script).read_text().splitlines()[0] == "#!/usr/bin/python3 -I"
        assert _mode(bin_ / script) & 0o111
    sites = list(dest.glob("usr/lib/python3*/site-packages"))
    assert len(sites) == 1
    site = sites[0]
    assert (site / "qgitconf" / "cli" / "__init__.py").is_file()
    assert (site / "qgitconf" / "py.typed").is_file()
    assert list(site.glob("qgitconf-*.dist-info/entry_points.txt"))
    assert (dest / "etc/qubes-rpc/qgitconf.Receive").is_file()
    for svc in ("Receive", "Fetch", "Export"):
        text = (dest / f"etc/qubes-rpc/qgitconf.{svc}").read_text()
        assert f"/usr/bin/qgitconf-service {svc.lower()}" in text
        assert "exec /usr/bin/env -i" in text
    # The installed copy runs (with the venv's dependencies) and reports the version.
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", "import qgitconf, sys; print(qgitconf.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.startswith(str(site))
    # Nothing escaped DESTDIR, and the venv's own (editable) copy was not uninstalled.
    assert not (ROOT / "usr").exists()
    assert (VENV_PY.parent / "qgitconf").exists() or not VENV_PY.exists()
