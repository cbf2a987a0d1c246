"""Target-side commands: target init, review, apply, revert, restore, status, log, git.

Each function does the I/O for one command and returns plain data (dicts or text);
the click layer only prints.  Everything that came from another qube is sanitised
before it is returned for display (rule 11).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qgitconf import sysprog
from qgitconf.agent.apply import (
    Plan,
    execute,
    plan_apply,
    plan_restore,
    revert_target,
    staged_commit,
)
from qgitconf.agent.config import FPR, TargetConfig, load_target_config, write_target_config
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import Fault, describe, recover
from qgitconf.agent.progress import ApplyProgress, Emit, apply_totals, note
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import _scan
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.core.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, LocalStateError, StagedChangedError, UsageError
from qgitconf.sanitize import sanitize


def target_init(
    home: Path, source: str, key_file: Path, fingerprint: str | None, allow: Sequence[str]
) -> dict[str, Any]:
    """Pin the key in ``key_file`` and the source qube for this target qube.

    Raises:
        ConfigError: the key file holds more or other keys than the one to pin.
    """
    # Imported here: signing imports tempfile (and random), which status and apply
    # do not need (their rows of ``make bench``).
    from qgitconf.gpg.signing import HomeCache, Verifier, inspect_key_file

    if not QUBE_NAME.fullmatch(source):
        raise UsageError(f"{source!r} is not a valid qube name")
    try:
        data = key_file.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {key_file}: {e}") from e
    keys = inspect_key_file(data)
    if len(keys) != 1:
        raise ConfigError(f"{key_file} holds {len(keys)} keys; it must hold exactly the one to pin")
    key = keys[0]
    if fingerprint is not None:
        fpr = fingerprint.replace(" ", "").upper()
        if not FPR.fullmatch(fpr) or fpr != key.fingerprint:
            raise ConfigError(f"{key_file} holds {key.fingerprint}, not the given {fingerprint}")
    path = write_target_config(home, source, key.fingerprint, key.armored, list(allow) or ["**"])
    state = AgentState(state_dir(home))
    state.ensure()
    # Build the verification home for this pin now, as Receive would keep it after its
    # first success: the first update then does not import the key (the pin's digest
    # covers the key file's bytes as Receive reads them).
    pinned = {key.fingerprint: (path.parent / "keys" / f"{key.fingerprint}.asc").read_bytes()}
    with Verifier(pinned, HomeCache(state.verify_homes, state.tmp)):
        pass
    return {
        "config": str(path),
        "fingerprint": key.fingerprint,
        "uids": [sanitize(u) for u in key.uids],
        "source": source,
    }


def review(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Who signed the staged update, what it changes, its risks and the diff.

    A thin wrapper: the review lives in :mod:`qgitconf.agent.review` (schema in
    ``docs/review.md``).
    """
    from qgitconf.agent.review import review as do

    return do(home, env)


def _rel(home: Path, path: str) -> str:
    """A --keep/--only PATH as a $HOME-relative path ("~/x", "$HOME/x" or "x")."""
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("/"):
        try:
            path = str(Path(path).relative_to(home))
        except ValueError:
            raise UsageError(f"{sanitize(path)} is not inside $HOME") from None
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/")
    if not path or path == "." or any(c in ("", ".", "..") for c in path.split("/")):
        raise UsageError(f"{sanitize(path)!r} is not a path below $HOME")
    return path


def _busy() -> LocalStateError:
    return LocalStateError(
        "another qgitconf apply, revert, restore or recovery is running in this qube",
        code="busy",
    )


_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def check_commit_id(commit: str) -> str:
    """``commit`` as a full commit id in lower case (what ``apply --commit`` takes).

    A prefix is not enough: the check binds what was reviewed to what is applied, and
    a prefix of a few bytes can be matched by a crafted commit.

    Raises:
        UsageError: not 40 (or 64) hex digits.
    """
    low = commit.strip().lower()
    if not _COMMIT_ID.fullmatch(low):
        raise UsageError(
            f"--commit takes the full commit id (40 hex digits) that review printed, "
            f"not {sanitize(commit)!r}"
        )
    return low


def ensure_staged(state: AgentState, commit: str | None) -> str:
    """The staged commit; it must be ``commit`` when one is given.

    Raises:
        NothingStagedError: nothing is staged.
        StagedChangedError: the staged commit is another one (nothing is applied).
    """
    staged = staged_commit(state)
    if commit is not None and staged != commit:
        raise StagedChangedError(
            f"the staged update is now {staged}, not the reviewed {commit}; "
            "nothing was applied: review it (qgitconf review) and apply what you saw"
        )
    return staged


def staged_update(home: Path) -> dict[str, Any]:
    """The staged update as apply's confirmation names it: ``commit``, ``sequence``
    and the ``applied`` commit.

    Raises:
        NothingStagedError: nothing is staged.
    """
    state = AgentState(state_dir(home))
    commit = staged_commit(state)
    staged = state.load().get("staged") or {}
    return {"commit": commit, "sequence": staged.get("sequence"), "applied": state.applied_commit}


def _plan_choices(
    state: AgentState,
    home: Path,
    cfg: TargetConfig,
    commit: str,
    keep: Sequence[str],
    only: Sequence[str] | None,
) -> tuple[Plan, HomeFS]:
    """``plan_apply`` for ``commit`` with the user's ``--keep``/``--only`` choices
    ($HOME-relative): the one plan apply and ``apply --dry-run`` both show."""
    return plan_apply(
        state,
        home,
        cfg.rules,
        cfg.limits,
        commit,
        keep=[_rel(home, k) for k in keep],
        only=None if only is None else [_rel(home, o) for o in only],
    )


def apply(
    home: Path,
    env: Mapping[str, str],
    *,
    overwrite: bool,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
    commit: str | None = None,
    progress: Emit | None = None,
) -> dict[str, Any]:
    """Apply the staged update into ``home``; returns the new generation's record.

    ``progress`` (see :mod:`qgitconf.agent.progress`) gets lines per phase of a big apply.

    With ``commit`` (a full id), only that commit: if another one is staged, nothing
    is applied.  The staged commit is read, checked and planned under the state lock,
    so the commit applied is the one checked.  The record's ``commit`` names it.  An
    interrupted earlier apply is recovered first (``recovered`` says how).

    Raises:
        StagedChangedError: the staged commit is not ``commit`` (nothing written).
        DriftError: conflicts without a choice (nothing written).
        ApplyError: a write failed; rolled back.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    expected = None if commit is None else check_commit_id(commit)
    ensure_staged(state, expected)  # fail early, before taking the lock
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise _busy()
        recovered = recover(state, HomeFS(home), fault)
        commit = ensure_staged(state, expected)
        plan, fs = _plan_choices(state, home, cfg, commit, keep, only)
        if not plan.touches_disk and not plan.blockers and state.applied_commit == commit:
            return {
                "number": None,
                "commit": commit,
                "written": [],
                "removed": [],
                "skipped": [sanitize(p) for p in plan.skipped],
                "left": plan.left,
                "note": "up to date",
                "recovered": recovered,
            }
        fault = _with_progress(fault, progress, "apply", plan)
        rec = execute(plan, fs, state, overwrite=overwrite, kind="apply", fault=fault)
        if isinstance(fault, ApplyProgress):
            fault.finish()
    return {**rec, "recovered": recovered, "kept": kept_copies(state, rec)}


def _with_progress(fault: Fault, progress: Emit | None, kind: str, plan: Any) -> Fault:
    """``fault`` wrapped to report progress on a big plan (unchanged otherwise)."""
    if progress is None:
        return fault
    acts = plan.touches_disk
    note(progress, len(acts), f"{kind}: {len(acts)} changes planned")
    return ApplyProgress(fault, progress, kind, apply_totals(acts))


def kept_copies(state: AgentState, rec: Mapping[str, Any]) -> list[dict[str, str]]:
    """Where the generation ``rec`` kept what it overwrote: ``path`` (sanitised) and
    ``at`` (the copy in the state directory), for the files written over (not the
    adopted ones, which were not changed)."""
    from qgitconf.agent.apply import kept_name

    adopted = set(rec.get("adopted") or [])
    out = [
        {"path": sanitize(p), "at": sanitize(str(state.root / "originals" / kept_name(p)))}
        for p in rec.get("originals") or []
        if p not in adopted
    ]
    out += [
        {"path": sanitize(p), "at": sanitize(str(state.root / "backups" / str(rec["number"]) / p))}
        for p in rec.get("backed_up") or []
    ]
    return out


def revert(
    home: Path,
    env: Mapping[str, str],
    *,
    to: int | None,
    overwrite: bool,
    progress: Emit | None = None,
) -> dict[str, Any]:
    """Go back to generation ``to`` (default: the one before the current)."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise _busy()
        recovered = recover(state, HomeFS(home), fault)
        number, commit = revert_target(state, state.generations(), to)
        plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
        fault = _with_progress(fault, progress, "revert", plan)
        rec = execute(
            plan,
            fs,
            state,
            overwrite=overwrite,
            kind="revert",
            note=f"revert to generation {number}",
            fault=fault,
        )
        if isinstance(fault, ApplyProgress):
            fault.finish()
    return {**rec, "recovered": recovered, "kept": kept_copies(state, rec)}


def restore(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Re-create applied files that are missing (a non-persistent home lost them).

    Never writes over anything that exists: a file changed locally is listed in
    ``left`` and left as it is.  Not a new generation.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise _busy()
        recovered = recover(state, HomeFS(home), fault)
        plan, fs = plan_restore(state, home, cfg.rules, cfg.limits)
        plan.left.extend(plan.blockers)  # at boot: do what can be done, report the rest
        plan.blockers = []
        rec: dict[str, Any] = {"written": [], "left": plan.left}
        if plan.touches_disk:
            rec = execute(plan, fs, state, overwrite=False, kind="restore", fault=fault)
    return {"restored": rec["written"], "left": rec["left"], "recovered": recovered}


def _tempdir(prefix: str) -> Any:
    """A ``tempfile.TemporaryDirectory``; imported here, not on the apply and status
    paths (``tempfile`` imports ``random``)."""
    import tempfile

    return tempfile.TemporaryDirectory(prefix=prefix)


def log(home: Path) -> list[dict[str, Any]]:
    """The generations, oldest first."""
    state = AgentState(state_dir(home))
    return state.generations()


_GIT_TERMINAL_VARS = ("TERM", "COLUMNS", "LINES")


def _pinned_gnupg_home(home: Path, directory: str) -> None:
    """Fill ``directory`` as a GnuPG home holding only the pinned keys, for git's
    ``--show-signature`` and ``verify-commit``: the verdict shown is the pinned key's,
    never the user's ``~/.gnupg`` (which may not hold it, and which is not created)."""
    os_dir = Path(directory)
    os_dir.chmod(0o700)
    (os_dir / "gpg.conf").write_text("trust-model always\nno-auto-key-retrieve\n")
    try:
        pinned = load_target_config(home).pinned
    except ConfigError:
        return  # not a target (yet): an empty home, "No public key"
    gpg = sysprog.program("gpg")
    for key in pinned.values():
        subprocess.run(
            [gpg, "--homedir", directory, "--batch", "--quiet", "--import"],
            input=key,
            capture_output=True,
            check=False,
            env=sysprog.base_env(home),
        )


def git(home: Path, env: Mapping[str, str], args: Sequence[str]) -> int:
    """Run the system's git on the agent repo with ``GIT_DIR``/``GIT_WORK_TREE`` set.

    Isolated like review's git (DESIGN rule 12): the git of the system PATH, no user
    or system config (so no ``core.pager``, ``pager.*``, ``diff.external``, textconv,
    ``difftool.*.cmd`` or ``core.bigFileThreshold`` from ``~/.gitconfig``), no
    attributes file, attributes from the empty tree (git 2.40+), and an environment
    built from nothing: the session variables (a GUI difftool), the terminal's
    ``TERM``/``COLUMNS``/``LINES``, and review's pager (``GIT_PAGER``, see
    :func:`qgitconf.agent.review.choose_pager`).  What the user types in ``args``
    (``-c``, ``--tool``) is git's to honour.  Signatures (``log --show-signature``,
    ``verify-commit``) are checked by the system's gpg in a temporary home holding only
    the pinned keys: the verdict is the pinned key's, and ``~/.gnupg`` is not touched.
    """
    from qgitconf.agent.render import choose_pager, git_pager
    from qgitconf.gitpack.store import EMPTY_TREE

    state = AgentState(state_dir(home))
    if not state.repo_path.exists():
        raise ConfigError("no agent repository yet (run: qgitconf target init)")
    program = sysprog.program("git")
    choice = choose_pager(env)
    if choice.note:
        import sys

        print(f"qgitconf: {choice.note}", file=sys.stderr)
    with (
        _tempdir("qgitconf-pager-") as empty,
        _tempdir("qgitconf-keys-") as keys,
    ):
        _pinned_gnupg_home(home, keys)
        genv = sysprog.git_env(home, state.repo_path, session=env)
        genv.update({k: env[k] for k in _GIT_TERMINAL_VARS if k in env})
        genv.update(
            GIT_WORK_TREE=str(home),
            GIT_ATTR_SOURCE=EMPTY_TREE,
            GIT_PAGER=git_pager(choice, env, empty),
            GNUPGHOME=keys,
        )
        gpg = ["-c", f"gpg.program={sysprog.program('gpg')}"]
        return subprocess.run(
            [program, *sysprog.GIT_ISOLATION, *gpg, *args], env=genv, check=False
        ).returncode


# -- qgitconf diff: local changes against what was applied ---------------------------------


def local_diff(home: Path, env: Mapping[str, str], paths: Sequence[str] = ()) -> dict[str, Any]:
    """Every managed file changed locally since it was applied, and the diff
    applied -> disk (like ``chezmoi diff``); writes nothing.

    ``paths`` ($HOME-relative, ``~/``, or absolute below $HOME) limit it to those files
    or directories.  The diff is made by review's isolated git
    (:func:`qgitconf.agent.review.diff_changes`) and sanitised, as is every path.

    Returns:
        ``applied``, ``managed``, ``drift`` (``[{path, state, notes}]``: ``state`` as
        in ``status --json``'s ``drift_detail``), ``diff``, ``diff_tool``,
        ``interrupted``.

    Raises:
        ConfigError: not a target.
        LocalStateError: an apply, revert or restore is running (``busy``).
    """
    from qgitconf.agent.apply import matches
    from qgitconf.agent.diff import applied_contents, diff_changes, local_change

    load_target_config(home, env)
    state = AgentState(state_dir(home))
    wanted = [_rel(home, p) for p in paths]
    with state.lock() as held, HomeFS(home) as fs:
        if not held:
            raise _busy()
        found, managed = _scan(state, fs, save=False)
        if wanted:
            found = [(p, k) for p, k in found if matches(p, wanted)]
        manifest = state.manifest() if found else {}
        records = {p: manifest[p] for p, _k in found if p in manifest}
        applied = applied_contents(state, records)
        entries: list[dict[str, Any]] = []
        files = []
        for path, kind in sorted(found):
            change, notes = local_change(fs, path, applied.get(path), records.get(path, {}))
            if change is not None:
                files.append(change)
            entries.append({"path": sanitize(path), "state": kind, "notes": notes})
        interrupted = describe(state) is not None
    diff, tool = diff_changes(home, files)
    return {
        "applied": state.applied_commit,
        "managed": managed,
        "drift": entries,
        "diff": diff,
        "diff_tool": tool,
        "interrupted": interrupted,
    }


# -- apply --dry-run / revert --dry-run, and apply's confirmation -------------------------


def _preview(
    state: AgentState, plan: Any, *, kind: str, overwrite: bool, number: int | None
) -> dict[str, Any]:
    """What ``plan`` would do, as plain (sanitised) data; see :func:`plan_preview`."""
    from qgitconf.agent.apply import kept_name

    ops: dict[str, list[str]] = {"write": [], "delete": [], "restore": [], "adopt": []}
    kept: list[dict[str, str]] = []
    dirs: dict[str, list[str]] = {"mkdir": [], "rmdir": []}
    for act in plan.touches_disk:
        shown = sanitize(act.path)
        if act.op in ops:
            ops[act.op].append(shown)
        elif act.op in dirs:
            dirs[act.op].append(shown)
        if act.op == "write" and act.keep is not None:
            at = (
                f"originals/{kept_name(act.path)}"
                if act.keep == "original"
                else f"backups/{number}/{act.path}"
            )
            kept.append({"path": shown, "at": sanitize(str(state.root / at))})
    stops = bool(plan.blockers) or (bool(plan.conflicts) and not overwrite)
    return {
        "dry_run": True,
        "kind": kind,
        "commit": plan.commit,
        "generation": number,
        "write": ops["write"],
        "remove": ops["delete"],
        "restore": ops["restore"],
        "adopt": ops["adopt"],
        "mkdir": dirs["mkdir"],
        "rmdir": dirs["rmdir"],
        "kept": kept,
        "conflicts": list(plan.conflicts),
        "blockers": list(plan.blockers),
        "left": list(plan.left),
        "skipped": [sanitize(p) for p in plan.skipped],
        "would_stop": stops,
        "up_to_date": not plan.touches_disk and not plan.blockers,
    }


def plan_preview(
    home: Path,
    env: Mapping[str, str],
    *,
    kind: str = "apply",
    overwrite: bool = False,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
    commit: str | None = None,
    to: int | None = None,
) -> dict[str, Any]:
    """What ``apply`` (``kind="apply"``) or ``revert`` (``kind="revert"``, to
    generation ``to``) would do with these options; changes nothing (no recovery, no
    kept copy, no state: $HOME and the agent state stay byte-identical).

    Returns:
        ``dry_run``, ``kind``, ``commit``, ``generation`` (the one it would create),
        ``to`` (revert), ``sequence`` (apply), ``write``/``remove``/``restore``/
        ``adopt``/``mkdir``/``rmdir`` (paths), ``kept`` (``[{path, at}]``: where
        what is overwritten would be kept), ``conflicts``, ``blockers``, ``left``,
        ``skipped``, ``would_stop`` (apply or revert would write nothing and exit 1
        [drift]), ``up_to_date`` and ``interrupted`` (an interrupted apply would be
        recovered first, so the plan may differ).

    Raises:
        NothingStagedError, StagedChangedError, UsageError, LocalStateError: as the
            command itself would, before anything is written.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    expected = None if commit is None else check_commit_id(commit)
    with state.lock() as held:
        if not held:
            raise _busy()
        gens = state.generations()
        number = (int(gens[-1]["number"]) + 1) if gens else 1
        extra: dict[str, Any] = {}
        if kind == "revert":
            back_to, target = revert_target(state, gens, to)
            plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, target)
            extra["to"] = back_to
        else:
            target = ensure_staged(state, expected)
            plan, fs = _plan_choices(state, home, cfg, target, keep, only)
            extra["sequence"] = (state.load().get("staged") or {}).get("sequence")
        fs.close()
        out = _preview(state, plan, kind=kind, overwrite=overwrite, number=number)
        # As apply: nothing to write and this commit applied already: no new generation.
        out["up_to_date"] = kind == "apply" and out["up_to_date"] and state.applied_commit == target
        if out["up_to_date"]:
            out["generation"] = None
        out["interrupted"] = describe(state) is not None
    return {**out, **extra}


# -- target remove ----------------------------------------------------------------------------


def _removal_paths(home: Path) -> list[Path]:
    from qgitconf.agent.config import user_config_path

    cfg = user_config_path(home)
    return [cfg, cfg.parent / "keys", state_dir(home)]


def target_remove_plan(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """What ``target remove`` would remove and keep (for its question); changes nothing.

    Returns:
        ``remove`` (paths that exist), ``managed`` (files that stay in $HOME, no longer
        managed), ``kept_copies`` (originals and backups that go with the state),
        ``generations``, ``pending`` (a staged update not applied), ``template``
        (the template's ``/etc/qgitconf/target.toml`` exists: this qube stays a
        target through it).

    Raises:
        ConfigError: this qube has no target configuration of its own.
    """
    from qgitconf.agent.config import system_config_path, user_config_path

    if not user_config_path(home).is_file():
        if system_config_path().is_file():
            raise ConfigError(
                f"this qube is a target through its template's {system_config_path()}; "
                "`target remove` removes only a qube's own ~/.config/qgitconf/target.toml: "
                "remove the template's file in the template",
                code="template-target",
            )
        raise ConfigError("this qube is not a qgitconf target; nothing to remove")
    state = AgentState(state_dir(home))
    root = state.root
    kept = 0
    for sub in ("originals", "backups"):
        if (root / sub).is_dir():
            kept += sum(1 for p in (root / sub).rglob("*") if not p.is_dir())
    data = state.load() if root.is_dir() else {}
    staged = (data.get("staged") or {}).get("commit")
    return {
        "remove": [str(p) for p in _removal_paths(home) if p.exists() or p.is_symlink()],
        "managed": len(state.manifest()) if root.is_dir() else 0,
        "kept_copies": kept,
        "generations": len(state.generations()) if root.is_dir() else 0,
        "pending": bool(staged) and staged != data.get("applied"),
        "template": system_config_path().is_file(),
    }


def target_remove(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Forget this target: remove ``~/.config/qgitconf/target.toml``, the pinned keys
    and the agent state (``~/.local/share/qgitconf``); the files qgitconf applied stay
    in $HOME as they are.  An interrupted apply is recovered first, so no temp file
    or half-applied generation is left behind.

    Returns:
        :func:`target_remove_plan`'s keys, ``removed`` (the paths removed) and
        ``recovered``.

    Raises:
        ConfigError: not a target of its own (see :func:`target_remove_plan`).
        LocalStateError: an apply, revert or restore is running (``busy``).
    """
    import shutil

    plan = target_remove_plan(home, env)
    state = AgentState(state_dir(home))
    removed: list[str] = []
    recovered = None
    with state.lock() as held:
        if not held:
            raise _busy()
        recovered = recover(state, HomeFS(home), Fault.from_env(env))
        for path in _removal_paths(home):
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(str(path))
    with contextlib.suppress(OSError):
        _removal_paths(home)[0].parent.rmdir()  # ~/.config/qgitconf, if now empty
    return {**plan, "removed": removed, "recovered": recovered}


def check_preview(preview: Mapping[str, Any]) -> None:
    """Stop, before asking or writing, when the previewed apply would stop anyway.

    Raises:
        DriftError: files in the way without ``--overwrite``, or blocked paths; the
            files are named, with the choices (as apply itself says).
    """
    from qgitconf.errors import DriftError

    if not preview["would_stop"]:
        return
    if preview["blockers"]:
        raise DriftError(
            f"{preview['kind']} would stop; nothing was written:\n  "
            + "\n  ".join(preview["blockers"])
            + "\nmove these away, or leave them out with --keep PATH"
        )
    raise DriftError(
        f"{preview['kind']} would stop on these files; nothing was written:\n  "
        + "\n  ".join(preview["conflicts"])
        + "\nsee the local changes with `qgitconf diff`, then run again with --overwrite "
        "(whatever is overwritten is kept for revert), or leave files out with --keep PATH"
    )
