"""qgitconf installed into the lab's template layer at every boot, as the packages
install it: the package byte-compiled, the services, rpc-config and policy files."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click

from qgitconf.errors import ConfigError
from qgitconf.lab.build import HERE, PROJECT, SYSTEM_PYTHON, install_file, sh


def _venv_site() -> Path:
    """The site directory the running qgitconf's dependencies come from (click's): the
    venv's runtime deps stand in for distro packages."""
    return Path(click.__file__).resolve().parent.parent


def source_copy_ignore(dest: Path) -> Callable[[str, list[str]], set[str]]:
    """What the copy of the checkout into ``dest`` leaves out: caches, builds, and ``dest``.

    A lab directory inside the checkout (``qgitconf lab up ./lab``) holds ``dest``:
    copying it into itself would never end.
    """
    excluded = (".git", ".venv", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache")
    patterns = shutil.ignore_patterns(
        *excluded, "__pycache__", "*.egg-info", ".hypothesis", ".fuzz"
    )
    inside = dest.resolve()

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = set(patterns(directory, names))
        for n in names:
            p = Path(directory, n)
            if p.is_dir() and not p.is_symlink() and inside.is_relative_to(p.resolve()):
                skip.add(n)
        return skip

    return ignore


INSTALLED_RPC_DIRS = ("/etc/qubes-rpc", "/usr/local/etc/qubes-rpc")


INSTALLED_RPC_CONFIG_DIRS = ("/etc/qubes/rpc-config", "/usr/local/etc/qubes/rpc-config")


INSTALLED_POLICY_DIRS = ("/usr/share/qgitconf/policy", "/usr/local/share/qgitconf/policy")


SERVICES = ("qgitconf.Receive", "qgitconf.Fetch", "qgitconf.Export")


@dataclass(frozen=True)
class QgitconfFiles:
    """What the lab installs into its qubes and dom0: this checkout, or the installed
    package (``qgitconf lab demo`` from a package has no source tree).

    Attributes:
        source: The checkout (built with pip and ``make install-vm``), or None when
            qgitconf runs from an installed package.
        rpc: The directory holding the ``qgitconf.*`` qrexec services.
        rpc_config: The directory holding their ``/etc/qubes/rpc-config`` files.
        policy: The directory holding the dom0 policy (``*.policy``).
    """

    source: Path | None
    rpc: Path
    rpc_config: Path
    policy: Path


def qgitconf_files(
    project: Path | None = None,
    rpc_dirs: Sequence[str] = INSTALLED_RPC_DIRS,
    rpc_config_dirs: Sequence[str] = INSTALLED_RPC_CONFIG_DIRS,
    policy_dirs: Sequence[str] = INSTALLED_POLICY_DIRS,
) -> QgitconfFiles:
    """The source tree when qgitconf runs from one, else the installed files.

    A source tree is the directory above the running ``qgitconf`` package when it has
    ``pyproject.toml`` and ``rpc/``; otherwise each installed directory is the first
    of its list that holds every file the lab needs (never a mix of the two).

    Raises:
        ConfigError: neither a source tree nor an installed package.
    """
    project = PROJECT if project is None else project
    if (project / "pyproject.toml").is_file() and (project / "rpc").is_dir():
        return QgitconfFiles(project, project / "rpc", project / "rpc-config", project / "policy")

    def first(dirs: Sequence[str], names: Sequence[str], what: str) -> Path:
        for d in dirs:
            if names and all((Path(d) / n).is_file() for n in names):
                return Path(d)
        raise ConfigError(
            f"qgitconf runs from {project}, which is no source tree, and its {what} are not "
            f"installed (looked in {', '.join(dirs)}): install the package, or run from a "
            "checkout"
        )

    policies = sorted({p.name for d in policy_dirs for p in Path(d).glob("*qgitconf*.policy")})
    return QgitconfFiles(
        None,
        first(rpc_dirs, SERVICES, "qrexec services"),
        first(rpc_config_dirs, SERVICES, "rpc-config files"),
        first(policy_dirs, policies, "dom0 policy files"),
    )


def _install_files(files: QgitconfFiles, layer: Path) -> None:
    """The installed package's qrexec files and policy into ``layer``, as the packages
    lay them out (what ``make install-vm`` does from a checkout)."""
    for src_dir, dest, mode in (
        (files.rpc, "etc/qubes-rpc", 0o755),
        (files.rpc_config, "etc/qubes/rpc-config", 0o644),
    ):
        for name in SERVICES:
            install_file(src_dir / name, layer / dest / name, mode)
    for f in sorted(files.policy.glob("*.policy")):
        install_file(f, layer / "usr/share/qgitconf/policy" / f.name, 0o644)


def install_qgitconf(layer: Path, log: IO[bytes]) -> None:
    """Install qgitconf into ``layer`` as the packages do, for the system python3.

    From a checkout: the Python package goes to ``/usr/lib/python3/dist-packages``
    (pip from a clean copy of the tree, so the checkout's ``build/`` is not touched),
    the two console scripts as dh_python3 writes them, the rest by ``make
    install-vm``.  From an installed package (:func:`qgitconf_files`): the running
    ``qgitconf`` package is copied as it is, with the installed services,
    rpc-config files and policy.  dulwich, click and python-gnupg come from where the
    running qgitconf finds them (a venv's copies stand in for distro packages).
    """
    files = qgitconf_files()
    site = layer / "usr/lib/python3/dist-packages"
    clean = layer.parent / "qgitconf-src"
    if files.source is not None:
        shutil.copytree(files.source, clean, ignore=source_copy_ignore(clean))
        sh(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--no-index", "--no-compile", "--target", str(site),
             str(clean)],
            log, {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(clean)},
        )  # fmt: skip
        shutil.rmtree(site / "bin", ignore_errors=True)
    else:
        shutil.copytree(
            HERE.parent, site / "qgitconf", ignore=shutil.ignore_patterns("__pycache__")
        )
        _install_files(files, layer)
    venv = _venv_site()
    for dep in ("dulwich", "click", "gnupg.py"):
        s = venv / dep
        if s.is_dir():
            shutil.copytree(s, site / dep, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(s, site / dep)
    for info in venv.glob("*.dist-info"):
        if info.name.split("-")[0].lower() in ("dulwich", "click", "python_gnupg"):
            shutil.copytree(info, site / info.name)
    for script, target in (
        ("qgitconf", "qgitconf.entry"),
        ("qgitconf-service", "qgitconf.service"),
    ):
        path = layer / "usr/bin" / script
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "#!/usr/bin/python3 -I\nimport sys\n"
            f"from {target} import main\n"
            "if __name__ == '__main__':\n    sys.exit(main())\n"
        )
        path.chmod(0o755)
    if files.source is not None:
        sh(
            ["make", "--no-print-directory", "-C", str(clean), "install-vm",
             f"DESTDIR={layer}", "PREFIX=/usr"],
            log,
        )  # fmt: skip
        shutil.rmtree(clean, ignore_errors=True)
    # byte-compiled for the system python3, as py3compile does when the packages are
    # installed: /usr is read-only in a qube, so without this every qgitconf process
    # would compile every module it imports again
    sh([SYSTEM_PYTHON, "-I", "-m", "compileall", "-q", "-j", "0", str(site)], log)
