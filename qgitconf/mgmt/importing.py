"""``qgitconf import``: a config file out of another qube, through quarantine.

config-mgmt calls ``qgitconf.Export`` in the qube (dom0 policy: ``ask``).  The answer
is untrusted: read up to a cap, parsed strictly (:func:`parse_export`), and stored as
a commit on ``refs/qgitconf/import/<ID>`` — never on a branch, and never signed.

dom0's ``ask`` dialog lists every tagged target and preselects none (qubes-doc
``developer/services/qrexec.rst``: "By default no VM is selected, even if the caller
provided some"), so the user may send the call to another qube than the one named
here.  The answer names the qube that answered (its QubesDB ``/name``) and an answer
from any other qube is refused (:class:`ExportWrongQubeError`): nothing is stored.
The name is the answering qube's own word: it catches the wrong pick at the prompt,
not a compromised qube that lies (that one can send any content anyway).
``--review ID`` shows the change against the target branch (sanitised, with notes on
what can run code or looks like a secret); ``--accept ID`` writes the file onto the
current tip of the branch as a new signed commit; ``--drop ID`` deletes the ref.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qgitconf.core.envelope import QUBE_NAME
from qgitconf.core.exportfmt import MAGIC, parse_export
from qgitconf.core.paths import MODE_FILE, PathRules, check_tree_entry
from qgitconf.core.risks import FileChange, assess, tree_of
from qgitconf.errors import (
    ExportWrongQubeError,
    GitError,
    PolicyDeniedError,
    TransportError,
    UsageError,
)
from qgitconf.fsutil import read_json, write_json
from qgitconf.limits import MAX_EXPORT_BYTES, MAX_EXPORT_HEADER_BYTES
from qgitconf.mgmt.hooks import scan_secrets
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.qubes.qrexec import QREXEC_REFUSED, Transport
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.core.risks import Tree
    from qgitconf.mgmt.records import ImportEntry, ImportReview, ListedImport

EXPORT = "qgitconf.Export"
REF_PREFIX = "refs/qgitconf/import/"
_ID = re.compile(r"[1-9][0-9]{0,8}")


def _check_path(path: str) -> str:
    rel = path[2:] if path.startswith("~/") else path
    return check_tree_entry(rel.encode("utf-8", "surrogateescape"), MODE_FILE, PathRules())


def _meta(repo: MgmtRepo) -> Any:
    return repo.meta / "imports.json"


def _load(repo: MgmtRepo) -> dict[str, ImportEntry]:
    data = read_json(_meta(repo), {})
    return data if isinstance(data, dict) else {}


def _get(repo: MgmtRepo, ident: str) -> ImportEntry:
    entry = _load(repo).get(ident) if _ID.fullmatch(ident) else None
    if not isinstance(entry, dict):
        raise UsageError(f"no import {ident!r} (see: qgitconf import --list)")
    return entry


def _tree_with(repo: MgmtRepo, base: str, path: str, mode: int, blob: str) -> str:
    """The tree of ``base`` with ``path`` set to ``blob`` (a private index; no worktree)."""
    fd, index = tempfile.mkstemp(prefix="qgitconf-index-", dir=repo.meta)
    os.close(fd)
    os.unlink(index)
    env = dict(repo.env, GIT_INDEX_FILE=index)
    try:
        for args in (
            ["read-tree", f"{base}^{{tree}}"],
            ["update-index", "--add", "--cacheinfo", f"{mode:o},{blob},{path}"],
        ):
            proc = subprocess.run(
                ["git", f"--git-dir={repo.path}", *args], capture_output=True, env=env, check=False
            )
            if proc.returncode != 0:
                raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace')}")
        out = subprocess.run(
            ["git", f"--git-dir={repo.path}", "write-tree"],
            capture_output=True,
            env=env,
            check=True,
        )
        return out.stdout.decode().strip()
    finally:
        if os.path.exists(index):
            os.unlink(index)


def import_file(repo: MgmtRepo, qube: str, path: str, into: str, transport: Transport) -> str:
    """Fetch ``path`` from ``qube`` into quarantine for target ``into``; return the ID.

    Raises:
        UsageError: bad qube name, path or target.
        PolicyDeniedError: dom0 (or the user, at the prompt) refused the call.
        TransportError: the qube refused (its reason is shown, sanitised).
        MalformedError: the answer is not a well-formed export.
        ExportWrongQubeError: another qube answered (the user picked it at dom0's
            prompt); nothing is imported.
    """
    repo.require().target(into)
    if not QUBE_NAME.fullmatch(qube):
        raise UsageError(f"{sanitize(qube)!r} is not a valid qube name")
    rel = _check_path(path)
    cap = MAX_EXPORT_BYTES + len(MAGIC) + MAX_EXPORT_HEADER_BYTES + 2
    result = transport.call(qube, EXPORT, rel.encode("utf-8") + b"\n", cap)
    if result.status == QREXEC_REFUSED and not result.stdout:
        raise PolicyDeniedError(f"qrexec policy (or you, at the prompt) refused {EXPORT} to {qube}")
    if result.status != 0:
        said = sanitize(result.stderr[-300:].strip() or b"no reason given")
        raise TransportError(f"{qube} refused the export: {said}", code="export-refused")
    exported = parse_export(result.stdout)
    if exported.qube != qube:
        raise ExportWrongQubeError(
            f"asked {qube} for {sanitize(rel)} but {exported.qube} answered (picked at "
            f"dom0's prompt?); nothing imported: run the import again and pick {qube}"
        )
    with repo.lock():
        base = repo.tip(into)
        if base is None:
            raise GitError(f"branch {into} has no commits")
        blob = repo.git("hash-object", "-w", "--stdin", input=exported.content).strip()
        tree = _tree_with(repo, base, rel, exported.mode, blob)
        entries = _load(repo)
        ident = str(max((int(k) for k in entries if _ID.fullmatch(k)), default=0) + 1)
        # Quarantine: an unsigned commit on a ref outside refs/heads/, so nothing
        # publishes it and git log --all shows it for what it is.
        commit = repo.git(
            "-c",
            "commit.gpgsign=false",
            "commit-tree",
            "-p",
            base,
            "-m",
            f"quarantine: {rel} from {qube} (not accepted)",
            tree,
        ).strip()
        repo.git("update-ref", f"{REF_PREFIX}{ident}", commit, "0" * 40)
        entries[ident] = {
            "qube": qube,
            "path": rel,
            "into": into,
            "mode": f"{exported.mode:o}",
            "blob": blob,
            "size": len(exported.content),
            "base": base,
            "commit": commit,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        write_json(_meta(repo), entries)
    return ident


def _blob(repo: MgmtRepo, sha: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={repo.path}", "cat-file", "blob", sha],
        capture_output=True,
        env=dict(repo.env),
        check=True,
    ).stdout


def list_imports(repo: MgmtRepo) -> list[ListedImport]:
    repo.require()
    return [{**v, "id": k} for k, v in sorted(_load(repo).items(), key=lambda kv: int(kv[0]))]


def notes(
    path: str, old: tuple[int, bytes] | None, mode: int, content: bytes, tree: Tree | None = None
) -> list[str]:
    """The risk report (the same rules as the target's ``review``, with the quarantined
    commit's ``tree``: symlinks and includes that reach ``path``) plus secret checks."""
    change = FileChange(
        path,
        old[0] if old else None,
        mode,
        old[1] if old else b"",
        content,
    )
    out = [f.render() for f in assess([change], tree)]
    out += [f"HIGH   secret  {sanitize(path)}  -- {f.what}" for f in scan_secrets(path, content)]
    return out


def _tree(repo: MgmtRepo, commit: str) -> Tree:
    """The tree of ``commit`` for the risk rules: modes, symlinks, git/ssh config files."""
    modes: dict[str, int] = {}
    blobs: dict[str, str] = {}
    for rec in repo.git("ls-tree", "-r", "-z", "--full-tree", commit).split("\0"):
        meta, _, name = rec.partition("\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == "blob":
            modes[name], blobs[name] = int(fields[0], 8), fields[2]
    links = {
        p: _blob(repo, blobs[p]).decode("utf-8", "replace")
        for p, m in modes.items()
        if m == 0o120000
    }
    return tree_of(modes, links, lambda p: _blob(repo, blobs[p]))


def _old_file(repo: MgmtRepo, tip: str, path: str) -> tuple[int, bytes] | None:
    """Mode and content of ``path`` at ``tip``, if it is a regular file there."""
    try:
        line = repo.git("ls-tree", "-z", tip, "--", path)
    except GitError:
        return None
    meta, _, name = line.rstrip("\0").partition("\t")
    fields = meta.split()
    if name != path or len(fields) != 3 or fields[1] != "blob":
        return None
    return int(fields[0], 8), _blob(repo, fields[2])


def review(repo: MgmtRepo, ident: str) -> ImportReview:
    """The quarantined change against the branch's current tip, sanitised for display."""
    entry = _get(repo.require(), ident)
    tip = repo.tip(entry["into"]) or entry["base"]
    proc = subprocess.run(
        [
            "git",
            f"--git-dir={repo.path}",
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--stat",
            "--patch",
            tip,
            entry["commit"],
            "--",
            entry["path"],
        ],
        capture_output=True,
        env=dict(repo.env),
        check=False,
    )
    raw = _blob(repo, entry["blob"])
    return {
        "id": ident,
        "qube": entry["qube"],
        "path": sanitize(entry["path"]),
        "into": entry["into"],
        "mode": entry["mode"],
        "size": entry["size"],
        "notes": notes(
            entry["path"],
            _old_file(repo, tip, entry["path"]),
            int(entry["mode"], 8),
            raw,
            _tree(repo, entry["commit"]),
        ),
        "diff": sanitize(proc.stdout if proc.returncode == 0 else proc.stderr, keep_newlines=True),
    }


def accept(repo: MgmtRepo, ident: str, allow_secret: bool = False) -> str:
    """Commit the quarantined file onto the branch's current tip, signed; return the id.

    Raises:
        UsageError: the file looks like a secret (unless ``allow_secret``), or the
            branch's worktree has uncommitted changes.
    """
    entry = _get(repo.require(), ident)
    into, rel = entry["into"], entry["path"]
    raw = _blob(repo, entry["blob"])
    found = scan_secrets(rel, raw)
    if found and not allow_secret:
        raise UsageError(
            f"{sanitize(rel)} looks like a secret ({found[0].what}); "
            "accept with --allow-secret if it really belongs in the repo"
        )
    with repo.lock():
        tip = repo.tip(into)
        if tip is None:
            raise GitError(f"branch {into} has no commits")
        if repo.worktree_dirty(into):
            raise UsageError(
                f"the worktree {repo.worktree_path(into)} has uncommitted changes; "
                "commit them first"
            )
        tree = _tree_with(repo, tip, rel, int(entry["mode"], 8), entry["blob"])
        new = repo.signed_commit(tree, [tip], f"Import {rel} from {entry['qube']}")
        repo.move_branch(into, new, tip)
        _forget(repo, ident)
    return new


def drop(repo: MgmtRepo, ident: str) -> None:
    """Discard a quarantined import."""
    _get(repo.require(), ident)
    with repo.lock():
        _forget(repo, ident)


def _forget(repo: MgmtRepo, ident: str) -> None:
    entries = _load(repo)
    entry = entries.pop(ident)
    repo.git("update-ref", "-d", f"{REF_PREFIX}{ident}", entry["commit"])
    write_json(_meta(repo), entries)
