"""The lab's Qubes components: the pinned upstream sources verified, built once (cached)
and staged as file layers, as their packages install them."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from qgitconf.errors import ConfigError

HERE = Path(__file__).resolve().parent


PROJECT = HERE.parent.parent


SUMS_FILE = HERE / "qubes-src.sha256"


LAB_BASE = Path(os.environ.get("QGITCONF_REAL_LAB_DIR", "/var/tmp/qgitconf-lab"))  # noqa: S108


SYSTEM_PYTHON = "/usr/bin/python3"


SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


BUILD_TOOLS = ("gcc", "make", "pkg-config", "unshare", "nsenter", "gpg", "git", "tar")


@dataclass(frozen=True)
class Tarball:
    """One pinned upstream source."""

    name: str
    sha256: str
    commit: str

    @property
    def repo(self) -> str:
        return self.name.removesuffix(".tar.gz")

    @property
    def url(self) -> str:
        return f"https://github.com/QubesOS/{self.repo}/archive/{self.commit}.tar.gz"


def pinned() -> list[Tarball]:
    """The sources the lab is built from, with the SHA-256 sums the project pins."""
    out = []
    for line in SUMS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name, commit = line.split()
            out.append(Tarball(name, digest, commit))
    return out


def source_dir() -> Path | None:
    """Where the tarballs are: ``$QUBES_SRC_DIR``, else ``<project>/../shared/qubes-src``."""
    env = os.environ.get("QUBES_SRC_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(PROJECT.parent / "shared" / "qubes-src")
    for c in candidates:
        if all((c / t.name).is_file() for t in pinned()):
            return c
    return None


def available() -> tuple[bool, str]:
    """Whether the real lab can be built and booted here, and if not, why."""
    if sys.platform != "linux":
        return False, "the real lab needs Linux namespaces"
    if os.geteuid() != 0:
        return False, "the real lab needs root (mount and PID namespaces, overlays)"
    if source_dir() is None:
        return (
            False,
            "Qubes sources not found ($QUBES_SRC_DIR or ../shared/qubes-src; make qubes-src)",
        )
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    if missing:
        return False, f"missing build tools: {', '.join(missing)}"
    if not Path("/usr/include/security/pam_appl.h").exists():
        return False, "missing PAM headers (apt-get install libpam0g-dev)"
    if not Path(SYSTEM_PYTHON).exists():
        return False, f"no system Python at {SYSTEM_PYTHON}"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", "import pyinotify"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return False, "qrexec-policy-daemon needs pyinotify (apt-get install python3-pyinotify)"
    return True, "ok"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sh(argv: Sequence[str], log: IO[bytes], env: Mapping[str, str] | None = None) -> None:
    log.write(f"$ {shlex.join(argv)}\n".encode())
    log.flush()
    full_env = {"PATH": SYS_PATH, "LANG": "C.UTF-8", **(env or {})}
    proc = subprocess.run(list(argv), stdout=log, stderr=log, env=full_env, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"real lab: `{shlex.join(argv)}` failed (see {log.name})")


def install_file(src: Path, dest: Path, mode: int = 0o755) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def link(target: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(target)


def build(src: Path) -> Path:
    """Verify, unpack and build the Qubes components; stage them as file layers.

    Cached under ``LAB_BASE/build-HASH`` (sources' sums + this file), so a rebuild
    happens only when either changes.  Layers: ``vm/{usr,etc}`` (what the template
    packages qubes-core-qrexec-vm and qubes-gpg-split install), ``dom0/{usr,etc}``
    (qubes-core-qrexec-dom0 and python3-qrexec).
    """
    tarballs = pinned()
    for t in tarballs:
        got = _sha256(src / t.name)
        if got != t.sha256:
            raise ConfigError(f"{src / t.name}: SHA-256 {got}, pinned {t.sha256}")
    key = hashlib.sha256()
    for t in tarballs:
        key.update(f"{t.name} {t.sha256}\n".encode())
    key.update(Path(__file__).read_bytes())
    out = LAB_BASE / f"build-{key.hexdigest()[:16]}"
    if (out / "done").exists():
        return out
    LAB_BASE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-tmp-", dir=LAB_BASE))
    try:
        with (tmp / "build.log").open("wb") as log:
            _build_into(tmp, src, tarballs, log)
        (tmp / "done").write_text("ok\n")
        try:
            tmp.rename(out)
        except OSError:  # another process built it meanwhile
            if not (out / "done").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _build_into(b: Path, src: Path, tarballs: list[Tarball], log: IO[bytes]) -> None:
    for t in tarballs:
        d = b / "src" / t.repo
        d.mkdir(parents=True)
        sh(["tar", "-xzf", str(src / t.name), "--strip-components=1", "-C", str(d)], log)
    s = b / "src"
    vchan, qrexec, gpg = (
        s / "qubes-core-vchan-socket",
        s / "qubes-core-qrexec",
        s / "qubes-app-linux-split-gpg",
    )
    p = b / "prefix"
    sh(
        ["make", "-C", str(vchan / "vchan"), f"PREFIX={p}", f"LIBDIR={p}/lib",
         f"INCLUDEDIR={p}/include", "libvchan-socket.so", "vchan-socket.pc"],
        log,
    )  # fmt: skip
    install_file(vchan / "vchan/libvchan.h", p / "include/vchan-socket/libvchan.h", 0o644)
    install_file(vchan / "vchan/vchan-socket.pc", p / "lib/pkgconfig/vchan-socket.pc", 0o644)
    install_file(vchan / "vchan/libvchan-socket.so", p / "lib/libvchan-socket.so")
    env = {"PKG_CONFIG_PATH": f"{p}/lib/pkgconfig", "LIBRARY_PATH": f"{p}/lib"}
    jobs = f"-j{min(2, os.cpu_count() or 1)}"
    sh(["make", jobs, "-C", str(qrexec / "libqrexec"), "BACKEND_VMM=socket", "all"], log, env)
    # not `all` in agent/: that also builds the man page with pandoc
    sh(
        ["make", jobs, "-C", str(qrexec / "agent"), "BACKEND_VMM=socket", "qrexec-agent",
         "qrexec-client-vm", "qrexec-fork-server"],
        log, env,
    )  # fmt: skip
    sh(["make", jobs, "-C", str(qrexec / "daemon"), "BACKEND_VMM=socket", "all"], log, env)
    sh(["make", jobs, "-C", str(gpg / "src"), "all"], log, env)
    libs = [qrexec / "libqrexec/libqrexec-utils.so.4", p / "lib/libvchan-socket.so"]
    _vm_layer(b, s, libs)
    _dom0_layer(b, qrexec, libs)


def _vm_layer(b: Path, s: Path, libs: list[Path]) -> None:
    """The VM template layer: qubes-core-qrexec-vm, qubes-gpg-split, qubes.VMShell and
    the boot pieces of qubes-core-agent-linux, as their packages install them."""
    qrexec, gpg = s / "qubes-core-qrexec", s / "qubes-app-linux-split-gpg"
    u, e = b / "vm/usr", b / "vm/etc"
    install_file(qrexec / "agent/qrexec-agent", u / "lib/qubes/qrexec-agent")
    for prog in ("qrexec-client-vm", "qrexec-fork-server"):
        install_file(qrexec / "agent" / prog, u / "bin" / prog)
    link("../../bin/qrexec-client-vm", u / "lib/qubes/qrexec-client-vm")
    link("../../bin/qrexec-client-vm", u / "lib/qubes/qrexec_client_vm")
    for lib in libs:
        install_file(lib, u / "lib" / lib.name)
    install_file(qrexec / "agent/qrexec.pam.debian", e / "pam.d/qrexec", 0o644)
    install_file(qrexec / "qubes-rpc-config/README", e / "qubes/rpc-config/README", 0o644)
    install_file(gpg / "src/gpg-server", u / "lib/qubes-gpg-split/gpg-server")
    install_file(gpg / "src/gpg-client", u / "bin/qubes-gpg-client")
    install_file(gpg / "gpg-client-wrapper", u / "bin/qubes-gpg-client-wrapper")
    install_file(gpg / "gpg-import-key", u / "bin/qubes-gpg-import-key")
    install_file(gpg / "qubes.Gpg.service", e / "qubes-rpc/qubes.Gpg")
    install_file(gpg / "qubes.GpgImportKey.service", e / "qubes-rpc/qubes.GpgImportKey")
    install_file(gpg / "qubes-gpg.sh", e / "profile.d/qubes-gpg.sh", 0o644)
    agent = s / "qubes-core-agent-linux"
    install_file(agent / "qubes-rpc/qubes.VMShell", e / "qubes-rpc/qubes.VMShell")
    # qubes-core-agent's boot pieces the lab runs unchanged in each qube at its boot:
    # bind-dirs.sh and the library it sources
    install_file(agent / "init/functions", u / "lib/qubes/init/functions", 0o644)
    install_file(agent / "vm-systemd/bind-dirs.sh", u / "lib/qubes/init/bind-dirs.sh")
    # qubes.Gpg runs /usr/bin/gpg2, which Debian's gnupg2 package (a dependency of
    # qubes-gpg-split) provides as a link to gpg; stand in for that package
    link("gpg", u / "bin/gpg2")


def _dom0_layer(b: Path, qrexec: Path, libs: list[Path]) -> None:
    """The dom0 layer: qubes-core-qrexec-dom0 and python3-qrexec."""
    u, e = b / "dom0/usr", b / "dom0/etc"
    install_file(qrexec / "daemon/qrexec-daemon", u / "sbin/qrexec-daemon")
    install_file(qrexec / "daemon/qrexec-client", u / "bin/qrexec-client")
    link("../../bin/qrexec-client", u / "lib/qubes/qrexec-client")
    for lib in libs:
        install_file(lib, u / "lib" / lib.name)
    site = u / "lib/python3/dist-packages"
    site.mkdir(parents=True)
    shutil.copytree(qrexec / "qrexec", site / "qrexec", ignore=shutil.ignore_patterns("tests"))
    for tool in sorted((qrexec / "qrexec/tools").glob("*.py")):
        if tool.stem == "__init__":
            continue
        # the scripts setup.py's CustomInstall writes
        script = u / "bin" / tool.stem.replace("_", "-")
        script.write_text(
            f"#!/usr/bin/python3\nfrom qrexec.tools.{tool.stem} import main\nimport sys\n"
            'if __name__ == "__main__":\n\tsys.exit(main())\n'
        )
        script.chmod(0o755)
    shutil.copytree(qrexec / "policy.d", e / "qubes/policy.d")
    (e / "qubes-rpc/policy/include").mkdir(parents=True)
    for svc in ("policy.Ask", "policy.Notify"):  # as qubes-core-qrexec's Makefile links them
        link("/var/run/qubes/policy-agent.sock", e / "qubes-rpc" / svc)
