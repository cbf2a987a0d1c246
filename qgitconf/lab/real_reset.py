"""The real lab's baseline and reset(): homes, volumes, QubesDB, tags, power and the ask
answer back as they were after boot, between tests."""

from __future__ import annotations

import json
import os
import shutil

from qgitconf.errors import UsageError
from qgitconf.lab.real_domains import LabDomains
from qgitconf.lab.real_qubes import atomic_write
from qgitconf.lab.real_roots import cp_a, cp_a_new, tree_state


class LabReset(LabDomains):
    """A lab that can be put back as it was: save_baseline() after boot, reset() after
    each test."""

    # the parts of a qube's volumes reset() restores when they changed ("rw" without
    # "home": the homes are restored on their own, in place)
    _VOLUME_PARTS = ("rw", "root/upper", "root/tpl", "root.saved", "rw.saved")

    def _volume_state(self, name: str) -> dict[str, list[tuple[object, ...]]]:
        q = self.qube(name)
        return {
            part: tree_state(q / part, frozenset({"home"}) if part == "rw" else frozenset())
            for part in self._VOLUME_PARTS
        }

    def save_baseline(self) -> None:
        """Remember every home, root and private volume, QubesDB, tags, power state and
        ask answer for reset()."""
        base = self.root / "baseline"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir()
        self._request(op="killusers", uids=list(self._uids.values()))
        for name in self.vms:
            cp_a(self.home(name), base / name)
            q, vol = self.qube(name), base / "vol" / name
            vol.mkdir(parents=True)
            for part in self._VOLUME_PARTS:
                if not (q / part).exists():
                    continue
                if part == "rw":
                    (vol / "rw").mkdir()
                    for child in (q / "rw").iterdir():
                        if child.name != "home":
                            cp_a_new(child, vol / "rw" / child.name)
                else:
                    (vol / part).parent.mkdir(parents=True, exist_ok=True)
                    cp_a_new(q / part, vol / part)
        shutil.copytree(self.policy_dir, base / "policy.d")
        self._baseline = {
            "vms": list(self.vms),
            "qubesdb": json.loads(json.dumps(self._qubesdb)),
            "running": dict(self._running),
            "tags": {n: list(t) for n, t in self._tags.items()},
            "ask": self._ask,
            "volumes": {n: self._volume_state(n) for n in self.vms},
        }

    def _restore_volumes(self, name: str) -> None:
        """Qube ``name``'s volumes as save_baseline() saw them (the qube is halted)."""
        q, vol = self.qube(name), self.root / "baseline/vol" / name
        for part in self._VOLUME_PARTS:
            if part == "rw":
                for child in list((q / "rw").iterdir()):
                    if child.name == "home":
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
                if (vol / "rw").exists():
                    cp_a(vol / "rw", q / "rw")
                continue
            shutil.rmtree(q / part, ignore_errors=True)
            if (vol / part).exists():
                cp_a_new(vol / part, q / part)
        shutil.rmtree(q / "root/work", ignore_errors=True)
        self._lay_root(name, fresh=False)

    def reset(self) -> None:
        """Back to the state save_baseline() saw: homes byte for byte, volumes, QubesDB,
        power, ask.

        Each home directory keeps its inode (it is bind-mounted into its qube); its
        contents are replaced.  Leftover processes of the qubes' users go first.  A
        qube whose root or private volume changed (a root write, a reboot) is halted,
        its volumes restored, and started again (``reset_rebooted`` names them);
        disposables started since are removed.
        """
        if self._baseline is None:
            raise UsageError("reset() before save_baseline()")
        b = self._baseline
        for name in [n for n in self.vms if n not in b["vms"]]:
            self.set_running(name, False)  # a disposable: removed
        for name in self.vms:
            if self._running[name] != b["running"][name]:
                self.set_running(name, b["running"][name])
        self._request(op="killusers", uids=list(self._uids.values()))
        self.reset_rebooted = []
        for name in self.vms:
            if self._volume_state(name) == b["volumes"][name]:
                continue
            up = self._running[name]
            if up:
                self._domain_down(name)
            self._restore_volumes(name)
            if up:
                self._domain_up(name)
            b["volumes"][name] = self._volume_state(name)
            self.reset_rebooted.append(name)
        for name in self.vms:
            home = self.home(name)
            for child in list(home.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            cp_a(self.root / "baseline" / name, home)
            st = (self.root / "baseline" / name).stat()
            os.chown(home, st.st_uid, st.st_gid)
            home.chmod(st.st_mode & 0o7777)
        # the policy files (the include/ directory is left as it is)
        base = self.root / "baseline/policy.d"
        saved = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
        for p in self.policy_dir.iterdir():
            if p.is_file() and saved.get(p.name) != p.read_bytes():
                p.unlink()
        for name, data in saved.items():
            if not (self.policy_dir / name).exists():
                (self.policy_dir / name).write_bytes(data)
        for name in self.vms:
            if self._qubesdb[name] != b["qubesdb"][name]:
                self._qubesdb[name] = dict(b["qubesdb"][name])
                self._write_qubesdb(name)
        if self._tags != b["tags"]:
            self._tags = {n: list(t) for n, t in b["tags"].items()}
            self._write_system_info()
        if self._ask != b["ask"]:
            self._ask = b["ask"]
            atomic_write(self.root / "dom0/state/ask", f"{self._ask}\n".encode())
        self.grant_gpg_consent("config-mgmt")
