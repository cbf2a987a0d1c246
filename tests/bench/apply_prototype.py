"""The least crash-safe apply into an empty home, as a whole process (issue 21, third
round): what this disk allows a Python process that does the work ``qgitconf apply``
must do and nothing else.  Not collected by pytest, not part of the package.

Run as the home's user, with ``HOME`` set to a home whose update is staged (the homes
``bench_apply`` makes): ``python3 -I tests/bench/apply_prototype.py``.  It reads the
staged commit's tree and blobs from the agent's packs (``PackReader``), writes a
compact plan (fsynced), creates every directory and file in place through directory
fds (``O_EXCL | O_NOFOLLOW``, one ``write``), one ``syncfs``, the commit marker (one
flush), the manifest and generation records (temps, one ``syncfs``, renames), and
removes the plan: six flushes whatever the number of files.  No config, lock, path
rules, drift check, undo phase, refs, or the thread that inflates while planning.
Its figures are in docs/benchmarks.md ("Third round: apply").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from qgitconf.durable import syncfs
from qgitconf.gitpack.packread import PackReader
from qgitconf.gitpack.store import walk_tree
from qgitconf.limits import Limits

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_new(path: str, data: bytes) -> None:
    fd = os.open(path, NEW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def main() -> None:
    home = os.environ["HOME"]
    state = home + "/.local/share/qgitconf"
    with open(state + "/state.json", "rb") as f:
        commit = json.loads(f.read())["staged"]["commit"]
    with PackReader(Path(state) / "repo/objects") as packs:
        tree = packs.get_raw(commit)[1][5:45].decode()
        entries = walk_tree(packs, tree, Limits())
        files = [e for e in entries if not e.is_tree]
        dirs = [e.path.decode() for e in entries if e.is_tree]
        blobs = packs.bulk(e.sha for e in files)
    journal = state + "/journal"
    os.mkdir(journal, 0o700)
    plan = {"dirs": dirs, "files": [e.path.decode() for e in files]}
    fd = os.open(journal + "/plan.json", NEW, 0o600)
    os.write(fd, json.dumps(plan, separators=(",", ":")).encode())
    os.fsync(fd)  # flush 1
    os.close(fd)
    sfd = os.open(state, DIR)
    os.fsync(sfd)  # flush 2
    root = os.open(home, DIR)
    fds = {"": root}
    for d in dirs:
        parent, _, name = d.rpartition("/")
        with contextlib.suppress(FileExistsError):  # ~/.config holds qgitconf's own
            os.mkdir(name, 0o755, dir_fd=fds[parent])
        fds[d] = os.open(name, DIR, dir_fd=fds[parent])
    manifest = {}
    for e in files:
        path = e.path.decode()
        parent, _, name = path.rpartition("/")
        data = blobs[e.sha][1]
        mode = 0o755 if e.mode == 0o100755 else 0o644
        fd = os.open(name, NEW, mode, dir_fd=fds[parent])
        os.write(fd, data)
        st = os.fstat(fd)
        os.close(fd)
        manifest[path] = {
            "type": "file",
            "mode": mode,
            "sha256": hashlib.sha256(data).hexdigest(),
            "stat": [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns],
        }
    syncfs(root)  # flush 3: every file, every directory
    os.close(os.open(journal + "/committing", NEW, 0o600))
    jfd = os.open(journal, DIR)
    os.fsync(jfd)  # flush 4: the commit point
    write_new(state + "/.manifest.json.t", json.dumps(manifest, separators=(",", ":")).encode())
    record = [{"number": 1, "commit": commit, "written": list(manifest)}]
    write_new(state + "/.generations.json.t", json.dumps(record, separators=(",", ":")).encode())
    syncfs(root)  # flush 5
    os.rename(state + "/.manifest.json.t", state + "/manifest.json")
    os.rename(state + "/.generations.json.t", state + "/generations.json")
    os.unlink(journal + "/plan.json")
    os.fsync(sfd)  # flush 6 (the renames; the plan's removal)
    os.fsync(jfd)


if __name__ == "__main__":
    main()
