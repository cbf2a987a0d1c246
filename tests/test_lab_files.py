"""Where the real lab takes qgitconf from: this checkout, or the installed package (issue 20).

`make test-install --lab-demo` (tests/cleaninstall/run.py) runs `qgitconf lab demo` from
the .deb in a clean Debian 12; these are the lookups it relies on, on this host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qgitconf.errors import ConfigError
from qgitconf.lab.build import PROJECT
from qgitconf.lab.install import SERVICES, QgitconfFiles, qgitconf_files

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_is_used_as_the_source_tree() -> None:
    files = qgitconf_files()
    assert PROJECT == ROOT
    assert files.source == ROOT
    assert (files.rpc, files.rpc_config, files.policy) == (
        ROOT / "rpc",
        ROOT / "rpc-config",
        ROOT / "policy",
    )


def _installed(base: Path, services: tuple[str, ...] = SERVICES, policy: bool = True) -> None:
    for d, names in (("etc/qubes-rpc", services), ("etc/qubes/rpc-config", services)):
        (base / d).mkdir(parents=True)
        for n in names:
            (base / d / n).write_text(n)
    (base / "share/qgitconf/policy").mkdir(parents=True)
    if policy:
        (base / "share/qgitconf/policy/90-qgitconf.policy").write_text("")


def _lookup(tmp: Path, project: Path, *bases: str) -> QgitconfFiles:
    return qgitconf_files(
        project,
        rpc_dirs=[str(tmp / b / "etc/qubes-rpc") for b in bases],
        rpc_config_dirs=[str(tmp / b / "etc/qubes/rpc-config") for b in bases],
        policy_dirs=[str(tmp / b / "share/qgitconf/policy") for b in bases],
    )


def test_an_installed_package_uses_the_installed_files(tmp_path: Path) -> None:
    site = tmp_path / "dist-packages"  # the package's parent: no pyproject, no rpc/
    site.mkdir()
    # /usr/local lacks qgitconf.Export: a partial install is never mixed with another
    _installed(tmp_path / "local", services=SERVICES[:2])
    _installed(tmp_path / "usr")
    files = _lookup(tmp_path, site, "local", "usr")
    assert files == QgitconfFiles(
        None,
        tmp_path / "usr/etc/qubes-rpc",
        tmp_path / "usr/etc/qubes/rpc-config",
        tmp_path / "local/share/qgitconf/policy",
    )


def test_a_source_tree_wins_over_installed_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "rpc").mkdir(parents=True)
    (tree / "pyproject.toml").write_text("")
    _installed(tmp_path / "usr")
    assert _lookup(tmp_path, tree, "usr").source == tree


@pytest.mark.parametrize(
    ("services", "policy", "what"),
    [
        ((), True, "qrexec services"),
        (SERVICES, False, "dom0 policy files"),
    ],
)
def test_neither_a_tree_nor_installed_says_so(
    tmp_path: Path, services: tuple[str, ...], policy: bool, what: str
) -> None:
    _installed(tmp_path / "usr", services=services, policy=policy)
    with pytest.raises(ConfigError, match=f"its {what} are not installed"):
        _lookup(tmp_path, tmp_path, "usr")
