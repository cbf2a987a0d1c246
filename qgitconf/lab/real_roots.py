"""Each domain's file system in the real lab: the run tree, every qube's /etc layer and
volumes, its root's overlays, and the shell that lays a domain's root out."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qgitconf.errors import ConfigError
from qgitconf.lab.build import HERE, install_file, sh
from qgitconf.lab.install import install_qgitconf, qgitconf_files
from qgitconf.lab.real_qubes import QUBES_GID, LabQubes

# A qube's root volume: the parts of its root its root user can write, each an
# overlay whose upper directory is in the qube's ``root/upper`` on the host (discarded
# at each boot of an AppVM or disposable, kept by a TemplateVM); ``root`` has the
# lab's empty directory beneath it instead of the host's /root.
ROOT_DIRS = ("usr", "etc", "opt", "srv", "root", "var/lib", "var/cache", "var/log", "var/spool")
NO_HOST_LOWER = frozenset({"root"})
SPLIT_GPG_POLICY = (
    "# The lab's split-GPG rule, as docs/setup.md has the user write it in dom0.\n"
    "qubes.Gpg * config-mgmt vault allow\n"
)


def _passwd_lines(path: str, drop: set[str]) -> list[str]:
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    return [ln for ln in lines if ln.split(":", 1)[0] not in drop]


@dataclass(frozen=True)
class Overlay:
    """One overlay mount of a domain's root: ``target`` (relative to the root) shows
    ``lowers`` (the first on top); with an ``upper`` (and its ``work`` directory on the
    same file system) root can write it there, without one it is read-only."""

    target: str
    lowers: tuple[str, ...]
    upper: str | None = None
    work: str | None = None

    def options(self) -> str:
        lower = "lowerdir=" + ":".join(self.lowers)
        if self.upper is None or self.work is None:
            return f"ro,{lower}"
        # index=off: a rebooted template mounts the same upper again while the old
        # namespace may still be going away; nothing here needs the inode index
        return f"index=off,{lower},upperdir={self.upper},workdir={self.work}"


# What a qube's boot runs after its root is laid out and before its qrexec-agent starts,
# as systemd orders it in a qube: qubes-sysinit's /run/qubes-service flags from QubesDB
# (the lines of qubes-sysinit.sh that need no Xen), then upstream bind-dirs.sh unchanged.
# A failing bind-dirs.sh does not stop the boot (qubes-bind-dirs.service failing does not).
VM_BOOT_STEPS = (
    "mkdir -p /run/qubes /run/qubes-service",
    "qubesdb-multiread /qubes-service/ | while read -r srv _eq on; do "
    'case $srv in ""|.*|*/*) continue;; esac; '
    'if [ "$on" = 1 ]; then touch "/run/qubes-service/$srv"; fi; done',
    "echo > /run/qubes-service-environment",
    '/usr/lib/qubes/init/bind-dirs.sh >&2 || echo "lab: bind-dirs.sh exited $?" >&2',
)


def holder_script(
    mnt: Path,
    kind: str,
    binds: Mapping[str, str],
    overlays: Sequence[Overlay],
    hostname: str,
    boot_steps: Sequence[str] = (),
) -> str:
    """The shell that lays out one domain's root and becomes its namespace holder.

    The holder has its own mount and UTS namespaces: its hostname is the domain's
    name, as qubes-sysinit sets it from QubesDB ``/name`` in a qube.  ``overlays``
    are mounted after ``/var`` (the host's, read-only), so some may lie over parts of
    it; ``binds`` after them, in order; ``boot_steps`` run as root in the new root
    before the holder says ``ready``.
    """
    q = shlex.quote
    lines = [
        "set -e",
        f"hostname {q(hostname)}",
        f"mount -t tmpfs -o mode=0755 lab-root {q(str(mnt))}",
        f"cd {q(str(mnt))}",
        "mkdir -p usr etc home/user run tmp var proc dev sys rw root opt srv .old",
        "chmod 0700 root",
        "for d in bin sbin lib lib64; do if [ -L /$d ]; then ln -s usr/$d $d; fi; done",
        "mount --bind /var var && mount -o remount,bind,ro var",
    ]
    for o in overlays:
        lines.append(f"mount -t overlay overlay -o {q(o.options())} {q(o.target)}")
    lines += [
        "mount --rbind /dev dev",
        "mount -t tmpfs -o mode=1777 tmpfs dev/shm",
        "mount --rbind /proc proc",
        "mount --rbind /sys sys",
        "mount -t tmpfs -o mode=1777 tmpfs var/tmp",
        "mount -t tmpfs -o mode=1777 tmpfs tmp",
        "mount -t tmpfs -o mode=0755 tmpfs run",
        "mkdir -p run/vchan run/qubes run/lock run/qubes-rpc run/qubesdb run/qgitconf-lab",
    ]
    for target, source in binds.items():
        ro = target.startswith("ro:")
        target = target.removeprefix("ro:")
        lines.append(f"mount --bind {q(source)} {q(target)}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {q(target)}")
    if kind == "dom0":
        # qubes-core-qrexec-dom0's tmpfiles: /run/qubes 2770 root:qubes
        lines += [
            f"chgrp {QUBES_GID} run/qubes",
            "chmod 2770 run/qubes",
            "mkdir -p run/qubes/policy.d run/qubes/rpc-config",
        ]
    else:
        # qubes-gpg-split.tmpfiles: /run/qubes-gpg-split 775 root:qubes
        lines.append(f"install -d -m 0775 -o root -g {QUBES_GID} run/qubes-gpg-split")
    lines += [
        "pivot_root . .old",
        "cd /",
        "umount -l /.old",
        "rmdir /.old",
        *boot_steps,
        "echo ready",
        "exec sleep infinity >/dev/null",
    ]
    return "\n".join(lines) + "\n"


class LabRoots(LabQubes):
    """The lab's run tree laid out: dom0's files, each qube's /etc layer, private
    volume, QubesDB and root volume, and the overlays and binds of each qube's root."""

    def _prepare(self) -> None:
        r = self.root
        for d in ("log", "layers", "mnt", "dom0/state", "dom0/etc"):
            (r / d).mkdir(parents=True)
        # the upper directories of the qubes' roots are in the run tree: an overlay
        # refuses an upper inside one of its lower layers (the host's directories)
        for d in ROOT_DIRS:
            if d not in NO_HOST_LOWER and r.resolve().is_relative_to(Path("/", d).resolve()):
                raise ConfigError(f"the lab's run tree {r} must not be under /{d}")
        (r / "layers/empty").mkdir(mode=0o700)
        vchan = r / "vchan"
        vchan.mkdir()
        # socket vchan: the caller (qrexec-client-vm, as the qube's user) creates the
        # data vchan's socket here, so the shared directory is world-writable + sticky
        vchan.chmod(0o1777)
        with (r / "log/install.log").open("wb") as log:
            install_qgitconf(r / "layers/qgitconf", log)
            # lab stand-ins in the VMs: QubesDB's readers, in C as the real client is
            bin_dir = r / "layers/lab-vm/usr/bin"
            bin_dir.mkdir(parents=True, exist_ok=True)
            source = HERE / "real_qubesdb.c"
            sh(["gcc", "-O2", "-o", str(bin_dir / "qubesdb-cmd"), str(source)], log)
            for prog in ("qubesdb-read", "qubesdb-list", "qubesdb-multiread"):
                (bin_dir / prog).symlink_to("qubesdb-cmd")
        # dom0: the stand-ins, the project's policy unchanged, the split-GPG rule
        d0 = r / "dom0/etc"
        install_file(
            HERE / "real_dom0.py", r / "layers/lab-dom0/usr/lib/qgitconf-lab/real_dom0.py", 0o644
        )
        # dom0's /etc/qubes/policy.d: a writable directory bound over the layer, so that
        # tests can add a rule and the policy daemon's inotify watch sees it.
        pol = self.policy_dir
        shutil.copytree(self.build_dir / "dom0/etc/qubes/policy.d", pol)
        for f in sorted(qgitconf_files().policy.glob("*.policy")):
            shutil.copy2(f, pol / f.name)
        (pol / "30-split-gpg.policy").write_text(SPLIT_GPG_POLICY)
        drop = {"qubes", "user"}
        (d0 / "group").write_text(
            "\n".join([*_passwd_lines("/etc/group", drop), f"qubes:x:{QUBES_GID}:"]) + "\n"
        )
        (d0 / "hostname").write_text("dom0\n")
        self._write_system_info()
        self.set_ask_answer(self._ask)
        for name in self.vms:
            self._prepare_vm(name)
        # config-mgmt signs through the vault (docs/setup.md: /rw/config/gpg-split-domain)
        (self.qube("config-mgmt") / "rw/config/gpg-split-domain").write_text("vault\n")
        for name in self.vms:
            self._lay_root(name, fresh=True)

    def _prepare_vm(self, name: str) -> None:
        """Qube ``name``'s directories: its /etc layer, private volume, QubesDB."""
        drop = {"qubes", "user"}
        shadow_gid = next(
            (int(ln.split(":")[2]) for ln in _passwd_lines("/etc/group", set())
             if ln.startswith("shadow:")),
            0,
        )  # fmt: skip
        env_lines = _passwd_lines("/etc/environment", set())
        uid, q = self._uids[name], self.qube(name)
        etc = q / "etc"
        etc.mkdir(parents=True)
        users = _passwd_lines("/etc/passwd", {"user"})
        (etc / "passwd").write_text(
            "\n".join([*users, f"user:x:{uid}:{uid}:Qube user:/home/user:/bin/bash"]) + "\n"
        )
        groups = _passwd_lines("/etc/group", drop)
        (etc / "group").write_text(
            "\n".join([*groups, f"user:x:{uid}:", f"qubes:x:{QUBES_GID}:user"]) + "\n"
        )
        shadow = etc / "shadow"
        shadow.write_text(
            "\n".join([*_passwd_lines("/etc/shadow", {"user"}), "user:!:19000:0:99999:7:::"]) + "\n"
        )
        shadow.chmod(0o640)
        os.chown(shadow, 0, shadow_gid)
        (etc / "hostname").write_text(f"{name}\n")
        # socket vchan has no hypervisor to tell a process its domain id; pam_env
        # passes /etc/environment to every service the agent starts
        (etc / "environment").write_text(
            "\n".join([*env_lines, f"VCHAN_DOMAIN={self._domids[name]}"]) + "\n"
        )
        # the private volume as setup-rw.sh leaves it at a qube's first boot
        for d in ("rw/config", "rw/usrlocal", "rw/home"):
            (q / d).mkdir(parents=True, mode=0o755)
        home = self.home(name)
        home.mkdir()
        os.chown(home, uid, uid)
        home.chmod(0o700)
        (q / "qubesdb").mkdir()
        self._write_qubesdb(name)
        if self.qubes[name]["class"] == "TemplateVM":
            for d in ROOT_DIRS:  # no earlier session: an empty root volume
                (q / "root.saved" / d).mkdir(parents=True)

    def _lay_root(self, name: str, fresh: bool) -> None:
        """Make qube ``name``'s root volume ready for its boot.

        ``fresh`` (a boot): an AppVM's or disposable's upper directories are new and
        empty (Qubes' volatile volume), and a qube based on a lab template gets that
        template's root as of its last shutdown (``root.saved``) as its ``tpl`` layer;
        a template keeps its upper.  Without ``fresh`` (reset() restored the volume)
        everything stays.
        """
        vol = self.qube(name) / "root"
        vol.mkdir(exist_ok=True)
        volatile = self.qubes[name]["class"] != "TemplateVM"
        if fresh and volatile:
            shutil.rmtree(vol / "upper", ignore_errors=True)
            shutil.rmtree(vol / "work", ignore_errors=True)
        tpl = self.template_of(name)
        if fresh and tpl is not None:
            shutil.rmtree(vol / "tpl", ignore_errors=True)
            cp_a_new(self.qube(tpl) / "root.saved", vol / "tpl")
        for d in ROOT_DIRS:
            (vol / "upper" / d).mkdir(parents=True, exist_ok=True)
            (vol / "work" / d).mkdir(parents=True, exist_ok=True)
            if tpl is not None:
                (vol / "tpl" / d).mkdir(parents=True, exist_ok=True)
        (vol / "upper/root").chmod(0o700)

    def _overlays(self, name: str) -> list[Overlay]:
        """The overlays of qube ``name``'s root, each writable into its root volume."""
        r, b, q = self.root, self.build_dir, self.qube(name)
        layers, vol = r / "layers", q / "root"
        tpl = self.template_of(name) is not None
        out = []
        for d in ROOT_DIRS:
            top = {"usr": [layers / "lab-vm/usr"], "etc": [q / "etc"]}.get(d, [])
            pkgs = {
                "usr": [layers / "qgitconf/usr", b / "vm/usr"],
                "etc": [layers / "qgitconf/etc", b / "vm/etc"],
            }.get(d, [])
            host = Path("/", d)
            base = host if d not in NO_HOST_LOWER and host.is_dir() else layers / "empty"
            lowers = [*top, *([vol / "tpl" / d] if tpl else []), *pkgs, base]
            out.append(
                Overlay(d, tuple(map(str, lowers)), str(vol / "upper" / d), str(vol / "work" / d))
            )
        return out

    def _holder_argv(self, name: str) -> list[str]:
        r, q = self.root, self.qube(name)
        mnt = r / "mnt" / name
        mnt.mkdir(exist_ok=True)
        binds = {
            "run/vchan": str(r / "vchan"),
            "rw": str(q / "rw"),
            # mount-dirs.sh: /rw/home on /home, /rw/usrlocal on /usr/local
            "home": str(q / "rw/home"),
            "usr/local": str(q / "rw/usrlocal"),
            "ro:run/qubesdb": str(q / "qubesdb"),
        }
        script = holder_script(mnt, "vm", binds, self._overlays(name), name, VM_BOOT_STEPS)
        return ["unshare", "-m", "-u", "--propagation", "private", "--", "/bin/sh", "-c", script]


def cp_a_new(src: Path, dest: Path) -> None:
    """``cp -a SRC DEST`` for a new DEST: SRC's tree, owners, modes, xattrs (an overlay
    upper's whiteouts and opaque marks) and times."""
    proc = subprocess.run(["cp", "-a", "--", str(src), str(dest)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"cp -a {src} {dest}: {proc.stderr.decode(errors='replace')}")


def tree_state(path: Path, skip: frozenset[str] = frozenset()) -> list[tuple[object, ...]]:
    """What tells whether the tree at ``path`` changed: each entry's path, type, mode,
    owner, size, times and link target (``skip``: names left out at the top)."""
    out: list[tuple[object, ...]] = []
    if not path.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        if here == path:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        links = [d for d in dirnames if (here / d).is_symlink()]  # os.walk does not enter
        for p in [here, *(here / f for f in filenames), *(here / d for d in links)]:
            st = p.lstat()
            link = os.readlink(p) if p.is_symlink() else ""
            out.append(
                (str(p.relative_to(path)), st.st_mode, st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_ctime_ns, link)
            )  # fmt: skip
    return sorted(out, key=lambda e: str(e[0]))


def cp_a(src: Path, dest: Path) -> None:
    """``cp -a SRC/. DEST``: contents with owners, modes, links and times (DEST may exist)."""
    proc = subprocess.run(
        ["cp", "-a", "--", f"{src}/.", str(dest)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise ConfigError(f"cp -a {src} {dest}: {proc.stderr.decode(errors='replace')}")
