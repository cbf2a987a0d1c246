"""The no-drift ``qgitconf status`` (``agent/statusfast.py``, issue 21) answers exactly
what the full status answers, or leaves the answer to it.

Both paths run on the same homes: clean, each kind of drift, an interrupted apply,
debris of a killed process, a busy lock, never applied, staged but not applied, a
changed configuration (the memo of ``agent/configmemo.py`` must not answer), a
damaged or stale memo.  Wherever the fast path answers, its result is the full one;
the entry point's text and ``--json`` output are compared byte for byte between the
two paths (whole processes).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import configmemo, statcache, statusfast, vouch
from qgitconf.agent.config import SYSTEM_CONFIG, user_config_path, write_target_config
from qgitconf.agent.stamps import stamp_age
from qgitconf.agent.statcache import stat_entry
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import status
from qgitconf.agent.vouch import RACY_NS

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
COMMIT = "a" * 40
FILES = {".bashrc": b"PS1='$ '\n", ".config/git/config": b"[user]\n", "bin/tool": b"#!/bin/sh\n"}
STAMP = "2026-01-02T03:04:05Z"


def _record(path: Path) -> dict[str, Any]:
    st = os.lstat(path)
    entry = stat_entry(st)
    entry[4] = st.st_ctime_ns + RACY_NS + 1  # as if taken later: past the racy window
    return {
        "type": "file",
        "mode": st.st_mode & 0o7777,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "stat": entry,
    }


def _applied_home(tmp_path: Path, *, staged: str = COMMIT) -> Path:
    """A target home as ``apply`` leaves it: config, files, manifest (+ index), records."""
    home = tmp_path / "home"
    write_target_config(home, "config-mgmt", FPR, b"key\n", ["**"])
    manifest: dict[str, dict[str, Any]] = {}
    for rel, data in FILES.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
        manifest[rel] = _record(home / rel)
    (home / ".vimrc").symlink_to(".config/git/config")
    manifest[".vimrc"] = {"type": "link", "target": ".config/git/config"}
    state = AgentState(state_dir(home))
    state.ensure()
    state.save_manifest(manifest)
    state.save(
        {
            "sequence": 3,
            "commit": staged,
            "applied": COMMIT,
            "staged": {"commit": staged, "received": STAMP},
        }
    )
    state.save_generations(
        [{"number": 1, "commit": COMMIT, "time": STAMP, "written": sorted(manifest)}]
    )
    return home


def _both(home: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The fast answer (or None), then the full one, on the same home."""
    fast = statusfast.status(str(home), {})
    full = status(home, {})
    return fast, full


def _same(fast: dict[str, Any], full: dict[str, Any]) -> None:
    # the age is taken a moment apart by each; everything else is identical
    assert abs(fast.pop("last_update_age") - full.pop("last_update_age")) <= 1
    assert fast == full


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = _applied_home(tmp_path)
    status(home, {})  # a full status: stores the configuration memo
    assert (state_dir(home) / configmemo.MEMO).is_file()
    return home


def test_a_clean_home_is_answered_as_the_full_status(home: Path) -> None:
    fast, full = _both(home)
    assert fast is not None and full["drift"] == [] and full["managed"] == 4
    _same(fast, full)


def test_staged_not_applied_is_answered_too(tmp_path: Path) -> None:
    home = _applied_home(tmp_path, staged="b" * 40)
    status(home, {})
    fast, full = _both(home)
    assert fast is not None and full["pending"] is True
    _same(fast, full)


def test_before_any_apply_the_full_status_answers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_target_config(home, "config-mgmt", FPR, b"key\n", ["**"])
    for _ in range(2):
        fast, full = _both(home)
        assert fast is None and full["managed"] == 0
    assert not (state_dir(home) / configmemo.MEMO).exists()  # writes nothing there


def _modified(home: Path) -> None:
    (home / ".bashrc").write_bytes(b"PS1='# '\n")


def _mode(home: Path) -> None:
    (home / "bin/tool").chmod(0o700)


def _missing(home: Path) -> None:
    (home / ".config/git/config").unlink()


def _type(home: Path) -> None:
    (home / ".bashrc").unlink()
    (home / ".bashrc").mkdir()


def _blocked(home: Path) -> None:
    (home / "bin/tool").unlink()
    (home / "bin").rmdir()
    (home / "elsewhere").mkdir()
    (home / "bin").symlink_to("elsewhere")


def _dir_behind_link(home: Path) -> None:  # the same inodes, reached through a symlink
    (home / ".config").rename(home / ".config.real")
    (home / ".config").symlink_to(".config.real")


def _link_moved(home: Path) -> None:
    (home / ".vimrc").unlink()
    (home / ".vimrc").symlink_to(".bashrc")


def _touched(home: Path) -> None:  # same content, new times: not drift, but a re-hash
    os.utime(home / ".bashrc", ns=(1, 1))


def _journal(home: Path) -> None:  # an interrupted apply (nothing to roll back)
    journal = state_dir(home) / "journal"
    journal.mkdir()
    (journal / "plan.json").write_text(
        json.dumps({"version": 1, "id": "x", "steps": [], "after": {"kind": "apply"}})
    )


def _debris(home: Path) -> None:  # a record's temp a killed process left
    (state_dir(home) / ".manifest.json.0123abcd").write_bytes(b"{")


def _memo_temp(home: Path) -> None:  # the memo's write killed before its rename
    (state_dir(home) / ".config.memo.0123abcd").write_bytes(b"qgitconf-config-")


def _ref_lock(home: Path) -> None:
    (state_dir(home) / "repo/refs/qgitconf").mkdir(parents=True, exist_ok=True)
    (state_dir(home) / "repo/refs/qgitconf/applied.lock").write_bytes(b"x\n")


def _generation_lock(home: Path) -> None:  # a generation ref's write cut short
    (state_dir(home) / "repo/refs/qgitconf/generations").mkdir(parents=True, exist_ok=True)
    (state_dir(home) / "repo/refs/qgitconf/generations/1.lock").write_bytes(b"x\n")


def _head_temp(home: Path) -> None:  # HEAD's atomic write cut short before its rename
    (state_dir(home) / "repo/.HEAD.0123abcd").write_bytes(b"ref: refs/heads/main\n")


@pytest.mark.parametrize(
    "change",
    [
        _modified,
        _mode,
        _missing,
        _type,
        _blocked,
        _dir_behind_link,
        _link_moved,
        _touched,
        _journal,
        _debris,
        _memo_temp,
        _ref_lock,
        _generation_lock,
        _head_temp,
    ],
)
def test_anything_else_is_left_to_the_full_status(home: Path, change: Any) -> None:
    change(home)
    fast, full = _both(home)
    assert fast is None
    assert full["drift"] or full["recovered"] or change is _touched
    fast, full = _both(home)  # after the full status: answered again where nothing changed
    if not full["drift"] and change is not _touched:  # (its fresh cache entry is racy)
        assert fast is not None
        _same(fast, full)


def test_a_busy_lock_is_left_to_the_full_status(home: Path) -> None:
    fd = os.open(state_dir(home), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fast, full = _both(home)
        assert fast is None and full["busy"] is True
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: user_config_path(h).write_text(
            user_config_path(h).read_text().replace("config-mgmt", "other-mgmt")
        ),
        lambda h: (user_config_path(h).parent / "keys" / f"{FPR}.asc").write_bytes(b"new\n"),
        lambda h: (user_config_path(h).parent / "keys" / f"{FPR}.asc").unlink(),
        lambda h: (state_dir(h) / configmemo.MEMO).write_bytes(
            (state_dir(h) / configmemo.MEMO).read_bytes().replace(b"config-mgmt", b"other-mgmt")
        ),
        lambda h: (state_dir(h) / configmemo.MEMO).write_bytes(b"qgitconf-config-memo-1\n"),
    ],
    ids=["config-edited", "key-replaced", "key-removed", "memo-edited", "memo-cut"],
)
def test_the_memo_answers_only_for_the_very_inputs(home: Path, change: Any) -> None:
    change(home)
    assert statusfast.status(str(home), {}) is None
    try:
        full = status(home, {})
    except Exception:  # the real reader's error: the fast path never hides it
        assert statusfast.status(str(home), {}) is None
        return
    fast = statusfast.status(str(home), {})
    assert fast is not None and fast["source"] == full["source"]  # the memo is the new one
    _same(fast, full)


def test_the_memo_names_every_input_of_the_reader(home: Path) -> None:
    memo = configmemo.parse((state_dir(home) / configmemo.MEMO).read_bytes())
    assert memo is not None
    _digest, inputs, source, keys = memo
    config = user_config_path(home)
    assert inputs == [
        ("isfile", str(SYSTEM_CONFIG)),
        ("isfile", str(config)),
        ("file", str(config)),
        ("qubesdb", "/vm-config/qgitconf-key"),
        ("file", str(config.parent / "keys" / f"{FPR}.asc")),
    ]
    assert (source, keys) == ("config-mgmt", [FPR])


def test_the_reader_digest_covers_every_module_of_the_reader() -> None:
    code = "import sys, qgitconf.agent.config; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
    names = [
        m for m in json.loads(out.stdout.decode().replace("'", '"')) if m.startswith("qgitconf")
    ]
    files = set()
    for name in names:
        rel = name.removeprefix("qgitconf").lstrip(".").replace(".", "/")
        pkg = Path(configmemo.__file__).parents[1] / rel
        files.add(f"{rel}/__init__.py".lstrip("/") if pkg.is_dir() else f"{rel}.py")
    assert files <= set(configmemo.READER_MODULES)


def test_bad_json_is_a_value_error_without_the_json_module() -> None:
    """Without ``json.decoder`` loaded, the C scanner cannot raise its error (it
    returns NULL without an exception: a SystemError); ``loads`` says ValueError."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(configmemo.__file__).parents[2])!r}); "
        "from qgitconf.agent import statusfast\n"
        "for bad in (b'{', b'[1,', b'{\"a\" 1}', b'\"\\\\x\"'):\n"
        "    try: statusfast.loads(bad)\n"
        "    except ValueError: pass\n"
        "    else: raise SystemExit(1)\n"
        "assert 'json.decoder' not in sys.modules"
    )
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True)


def test_the_fast_path_imports_no_heavy_module(home: Path) -> None:
    code = (  # -S: no site (the development venv's editable finder imports pathlib, re)
        f"import sys; sys.path.insert(0, {str(Path(configmemo.__file__).parents[2])!r}); "
        "from qgitconf.agent import statusfast; "
        f"assert statusfast.status({str(home)!r}, {{}}) is not None; "
        "from qgitconf.agent.view import status_lines; print(sorted(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, check=True)
    loaded = set(json.loads(out.stdout.decode().replace("'", '"')))
    heavy = {
        "re",
        "json",
        "tomllib",
        "pathlib",
        "hashlib",
        "typing",
        "datetime",
        "enum",
        "dataclasses",
        "subprocess",
        "functools",
        "collections",
    }
    assert not loaded & heavy


def _entry(home: Path, *args: str, full: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if full:  # a fault trial's variable: the full status runs (it injects no fault here)
        env["QGITCONF_FAULT_AFTER_WRITES"] = "1000000"
    code = "from qgitconf.entry import main; main()"
    return subprocess.run(
        [sys.executable, "-I", "-c", code, *args], env=env, capture_output=True, check=False
    )


@pytest.mark.parametrize("args", [("status",), ("status", "--json")])
def test_the_printed_output_is_the_same_byte_for_byte(home: Path, args: tuple[str, ...]) -> None:
    gens = state_dir(home) / "generations.json"  # an age of whole days: stable over the test
    recs = json.loads(gens.read_text())
    recs[-1]["time"] = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gens.write_text(json.dumps(recs))
    fast, full = _entry(home, *args), _entry(home, *args, full=True)
    assert fast.returncode == full.returncode == 0
    assert fast.stderr == full.stderr == b""
    if args == ("status",):
        assert fast.stdout == full.stdout
    else:  # the age in seconds may move on between the two processes
        a, b = json.loads(fast.stdout), json.loads(full.stdout)
        assert abs(a.pop("last_update_age") - b.pop("last_update_age")) <= 2 and a == b
        assert fast.stdout.count(b"\n") == full.stdout.count(b"\n")


@pytest.mark.parametrize(
    "stamp",
    [
        STAMP,
        "2024-02-29T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2099-12-31T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "2000-02-29T12:00:00Z",
    ],
)
def test_the_age_is_the_one_datetime_computes(stamp: str) -> None:
    """Both statuses take the age from ``stamp_age``; ``datetime`` is the reference."""
    now = 4102444800.25  # 2100-01-01T00:00:00.25Z
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    want = max(0, int((datetime.fromtimestamp(now, UTC) - then).total_seconds()))
    assert stamp_age(stamp, now) == want
    assert abs(statusfast._age(stamp) - (stamp_age(stamp) or 0)) <= 1


@pytest.mark.parametrize(
    "stamp",
    [
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01 00:00:00Z",
        5,
        None,
    ],
)
def test_a_stamp_the_full_status_cannot_read_falls_back(stamp: Any) -> None:
    assert stamp_age(stamp) is None
    with pytest.raises(statusfast._Fallback):
        statusfast._age(stamp)


def test_the_shared_constants_agree() -> None:
    assert statusfast._parallel_min() == statcache.PARALLEL_MIN_FILES
    assert statcache.VOUCHED_RECORD is vouch.VOUCHED_RECORD
    assert str(state_dir(Path("/x"))).removeprefix("/x") == statusfast.STATE_REL


@pytest.mark.parametrize(
    "text", ['{"a": [1, 2.5, "x\\u00e9"], "b": null}', " [] \n", "{}", '"\\ud800"']
)
def test_the_json_reader_is_json_loads(text: str) -> None:
    assert statusfast.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{} x", "NaN", "\ufeff{}", "[1,]", "{'a': 1}"])
def test_what_json_loads_refuses_or_we_never_write_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        statusfast.loads(text.encode())


@pytest.mark.parametrize("forked", [False, True])
def test_an_index_of_another_manifest_is_never_used(
    home: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    """manifest.json replaced without its index (a crash between the two renames, an
    older writer): the SHA-256 binding fails, in the parent or in the forked child."""
    if forked:
        monkeypatch.setattr(statusfast, "_parallel_min", lambda: 2)
        monkeypatch.setattr(vouch, "may_fork", lambda: True)
    fast, full = _both(home)
    assert fast is not None
    _same(fast, full)
    manifest = state_dir(home) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"}\n", b"} \n"))  # same records
    assert statusfast.status(str(home), {}) is None


@pytest.mark.parametrize(
    "script",
    [
        "echo ' ABCDEF '",
        "printf 'x\\377y'",
        "exit 2",
        "echo A; exit 1",
        "head -c 5000 /dev/zero",
        "kill -9 $$",
    ],
)
def test_qubesdb_read_spawned_answers_as_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """The same program (a real one, where QubesDB's would be) read both ways."""
    from qgitconf import sysprog
    from qgitconf.qubes import qubesdb

    program = tmp_path / "qubesdb-read"
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(0o755)
    monkeypatch.setitem(sysprog._FOUND, "qubesdb-read", str(program))
    spawned = qubesdb.read_spawned("/vm-config/qgitconf-key")
    if "5000" in script:  # over the cap: read's None, and no sure answer here (fall back)
        assert spawned == (False, None) and qubesdb.read("/vm-config/qgitconf-key") is None
    else:
        assert spawned == (True, qubesdb.read("/vm-config/qgitconf-key"))


def test_a_qubesdb_read_that_hangs_is_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qgitconf import sysprog
    from qgitconf.qubes import qubesdb

    program = tmp_path / "qubesdb-read"
    program.write_text("#!/bin/sh\nexec sleep 30\n")
    program.chmod(0o755)
    monkeypatch.setitem(sysprog._FOUND, "qubesdb-read", str(program))
    assert qubesdb.read_spawned("/x", timeout_s=0.3) == (False, None)
