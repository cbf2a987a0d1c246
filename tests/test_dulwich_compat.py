"""qgitconf.gitpack.compat: the same verdicts on every supported dulwich (0.21.2 to 1.x).

``make test-dulwich`` runs this file, with the other security tests, on dulwich 0.21.2
and 0.22.7 (pure Python) besides the venv's 1.x: nothing here depends on the version.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf.gitpack import compat as dulwich_compat
from qgitconf.gitpack.compat import (
    MIN_DULWICH,
    commit_raw,
    pack_object_header,
    parse_tree_entries,
    split_commit_signature,
)
from qgitconf.gitpack.compatinit import init_bare
from qgitconf.mgmt.hooks import ZERO, check_push
from tests.hostile import packgen
from tests.keys import gpg_in, make_key

ROOT = Path(__file__).resolve().parent.parent


# -- trees ----------------------------------------------------------------------------


def _dulwich_items(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """dulwich's own reading of a tree, through the API every version has."""
    from dulwich.objects import Tree

    tree = Tree.from_raw_string(2, data)
    return sorted((e.path, e.mode, e.sha) for e in tree.iteritems())


def _git_tree(tmp_path: Path) -> bytes:
    """A tree git wrote: files, an executable, a symlink, a directory."""
    wt = tmp_path / "wt"
    (wt / "d").mkdir(parents=True)
    (wt / "a.txt").write_text("a\n")
    (wt / "d" / "b").write_text("b\n")
    (wt / "x").write_text("#!/bin/sh\n")
    (wt / "x").chmod(0o755)
    (wt / "link").symlink_to("a.txt")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(wt)], check=True, env=env)
    subprocess.run(["git", "-C", str(wt), "add", "."], check=True, env=env)
    tree = subprocess.run(
        ["git", "-C", str(wt), "write-tree"], check=True, capture_output=True, env=env
    ).stdout.strip()
    return subprocess.run(
        ["git", "-C", str(wt), "cat-file", "tree", tree.decode()],
        check=True,
        capture_output=True,
        env=env,
    ).stdout


def test_git_trees_parse_as_dulwich_parses_them(tmp_path: Path) -> None:
    data = _git_tree(tmp_path)
    ours = parse_tree_entries(data)
    assert [n for n, _, _ in ours] == [b"a.txt", b"d", b"link", b"x"]  # git's order kept
    assert sorted(ours) == _dulwich_items(data)
    assert {m for _, m, _ in ours} == {0o100644, 0o40000, 0o120000, 0o100755}


def test_well_formed_trees_parse_as_dulwich_parses_them() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = st.binary(min_size=1, max_size=8).filter(lambda n: b"\0" not in n)
    modes = st.sampled_from([b"100644", b"100755", b"120000", b"40000", b"160000", b"644"])
    ids = st.binary(min_size=20, max_size=20)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(modes, names, ids), max_size=6))
    def check(entries: list[tuple[bytes, bytes, bytes]]) -> None:
        data = b"".join(m + b" " + n + b"\0" + i for m, n, i in entries)
        ours = parse_tree_entries(data)
        assert ours == [(n, int(m, 8), i.hex().encode()) for m, n, i in entries]

    check()


MALFORMED = {
    "leading zero": b"040000 a\0" + bytes(20),
    "plus sign": b"+100644 a\0" + bytes(20),
    "leading space": b" 100644 a\0" + bytes(20),
    "underscore": b"100_644 a\0" + bytes(20),
    "not octal": b"100648 a\0" + bytes(20),
    "no mode": b" a\0" + bytes(20),
    "no space": b"100644a\0" + bytes(20),
    "no NUL": b"100644 a",
    "short id": b"100644 a\0" + bytes(19),
    "trailing byte": b"100644 a\0" + bytes(21),
    "second entry cut": b"100644 a\0" + bytes(20) + b"100644 b\0" + bytes(5),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_trees_are_refused_on_every_version(name: str) -> None:
    from dulwich.errors import ObjectFormatException

    with pytest.raises(ObjectFormatException, match="malformed tree entry"):
        parse_tree_entries(MALFORMED[name])


def test_bad_names_and_modes_parse_for_the_caller_to_refuse() -> None:
    """Empty names and unknown modes are the caller's to word (``invalid name``/
    ``invalid mode``, as ``Tree.check``): the parser hands them over."""
    data = b"100644 \0" + bytes(20) + b"777 ..\0" + bytes(20)
    assert parse_tree_entries(data) == [(b"", 0o100644, b"0" * 40), (b"..", 0o777, b"0" * 40)]


def test_a_long_malformed_tree_is_refused_in_linear_time() -> None:
    import time

    data = (b"100644 " + b"n" * 50 + b"\0" + bytes(20)) * 20_000 + b"100644 x"
    start = time.monotonic()
    with pytest.raises(Exception, match="malformed tree entry at offset 1560000"):
        parse_tree_entries(data)
    assert time.monotonic() - start < 2


# -- pack entry headers ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 127, 128, 2047, 2048, 1 << 20, (1 << 35) + 7])
@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_pack_object_header_is_gits_varint(kind: int, size: int) -> None:
    assert pack_object_header(kind, size) == packgen.entry_header(kind, size)


def test_pack_object_header_refuses_deltas_and_negative_sizes() -> None:
    for kind, size in ((6, 1), (7, 1), (0, 1), (3, -1)):
        with pytest.raises(ValueError):
            pack_object_header(kind, size)


def test_an_entry_with_our_header_is_read_back_by_git(tmp_path: Path) -> None:
    import hashlib

    body = b"hello\n" * 100
    entry = pack_object_header(3, len(body)) + zlib.compress(body)
    pack = b"PACK" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + entry
    pack += hashlib.sha1(pack).digest()
    repo = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "unpack-objects", "-q"], input=pack, check=True)
    sha = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", sha], check=True, capture_output=True
    ).stdout
    assert out == body


# -- repository creation -----------------------------------------------------------------


def test_init_bare_points_head_at_main_and_reads_no_config(tmp_path: Path) -> None:
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[init]\n\tdefaultBranch = evil\n")
    init_bare(str(tmp_path / "r.git"), b"main")
    assert (tmp_path / "r.git" / "HEAD").read_bytes() == b"ref: refs/heads/main\n"
    out = subprocess.run(
        ["git", "-C", str(tmp_path / "r.git"), "symbolic-ref", "HEAD"],
        check=True,
        capture_output=True,
    ).stdout
    assert out == b"refs/heads/main\n"


def test_min_dulwich_is_the_one_every_package_states() -> None:
    low = ".".join(map(str, MIN_DULWICH))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in deps if d.startswith("dulwich")] == [f"dulwich>={low},<2"]
    assert f"python3-dulwich (>= {low})" in (ROOT / "debian/control").read_text()
    spec = (ROOT / "rpm_spec/qgitconf.spec.in").read_text()
    assert re.search(rf"^Requires:\s+python3-dulwich >= {re.escape(low)}$", spec, re.M)
    assert dulwich_compat.dulwich_version() >= MIN_DULWICH


# -- commit signatures: the payload git verify-commit hands gpg --------------------------


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("sig") / "g"
    fpr = make_key(home, "Vault <vault@test.invalid>")
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def _header(name: bytes, value: bytes) -> bytes:
    """A header line with continuation lines, as git writes a multi-line value."""
    lines = value.rstrip(b"\n").split(b"\n")
    return name + b" " + b"\n ".join(lines) + b"\n"


TREE_ID = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # the empty tree
PERSON = b"V <v@test.invalid> 1700000000 +0000"
MERGETAG = (
    b"object " + TREE_ID + b"\ntype tree\ntag t\ntagger " + PERSON + b"\n\nsigned tag\n"
    b"-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n"
)


def _commit(signer: tuple[Path, str], case: str) -> tuple[bytes, bool]:
    """A raw commit for ``case`` and whether git verify-commit should call it good.

    The signature is made over the payload as git defines it, then placed where the
    case puts it: in several cases dulwich's re-serialisation (``raw_without_sig``)
    gives other bytes than the payload that was signed.
    """
    home, fpr = signer
    head = b"tree " + TREE_ID + b"\n"
    people = b"author " + PERSON + b"\ncommitter " + PERSON + b"\n"
    body = b"\nmessage\n"
    before, after = head + people, b""
    if case == "extra header before author":
        before = head + b"x-odd value\n" + people
    elif case == "mergetag":
        before = head + people + _header(b"mergetag", MERGETAG)
    elif case == "extra header after the signature":
        after = b"x-late one\n"
    elif case == "encoding after the signature":
        after = b"encoding ISO-8859-1\n"
    elif case == "gpgsig line in the message":
        body = b"\nmessage\ngpgsig not a header\n"
    elif case == "no newline at the end":
        body = b"\nmessage"
    signed_part = before + after + body
    sig = gpg_in(home, "--armor", "--detach-sign", "-u", fpr, input=signed_part)
    gpgsig = _header(b"gpgsig", sig)
    good = True
    if case == "gpgsig-sha256 beside":
        # Another algorithm's signature header: not in the SHA-1 payload.
        other = _header(b"gpgsig-sha256", b"-----BEGIN PGP SIGNATURE-----\n\nx\n-----END")
        return before + other + gpgsig + after + body, True
    if case == "tampered extra header":
        return before + gpgsig + b"x-added after signing\n" + body, False
    if case == "tampered message":
        return before + gpgsig + after + b"\nmessage!\n", False
    if case == "unsigned":
        return signed_part, False
    return before + gpgsig + after + body, good


CASES = [
    "plain",
    "extra header before author",
    "mergetag",
    "extra header after the signature",
    "encoding after the signature",
    "gpgsig line in the message",
    "no newline at the end",
    "gpgsig-sha256 beside",
    "tampered extra header",
    "tampered message",
    "unsigned",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, signer: tuple[Path, str]) -> Path:
    """A bare repository holding every case's commit (written as is), git configured to
    verify with the signer's keyring."""
    repo = tmp_path_factory.mktemp("commits") / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    (repo / "qgitconf").mkdir()
    (repo / "qgitconf" / "signing-key.asc").write_bytes(
        gpg_in(signer[0], "--armor", "--export", signer[1])
    )
    subprocess.run(["git", "-C", str(repo), "config", "user.signingkey", signer[1]], check=True)
    return repo


def _write(repo: Path, raw: bytes) -> str:
    return (
        subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-w", "-t", "commit", "--literally", "--stdin"],
            input=raw,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .strip()
    )


def _git_verdict(repo: Path, home: Path, sha: str) -> bool:
    env = {**os.environ, "GNUPGHOME": str(home)}
    proc = subprocess.run(
        ["git", "-C", str(repo), "verify-commit", sha], capture_output=True, env=env
    )
    return proc.returncode == 0


@pytest.mark.parametrize("case", CASES)
def test_commit_payload_is_verified_as_git_verify_commit_does(
    case: str, signer: tuple[Path, str], store: Path
) -> None:
    """The agent's path (a dulwich ``Commit`` read from a store, its raw bytes, the
    payload cut from them) gives gpg's verdict exactly where git verify-commit does,
    on every dulwich version."""
    from dulwich.objects import Commit

    from qgitconf.errors import CommitSignatureError
    from qgitconf.gpg.signing import Verifier

    raw, expected = _commit(signer, case)
    sha = _write(store, raw)
    assert _git_verdict(store, signer[0], sha) is expected
    commit = Commit.from_raw_string(1, raw, sha.encode())
    assert commit_raw(commit) == raw
    payload, signature = split_commit_signature(raw)
    assert (signature is None) is (case == "unsigned")
    key = (store / "qgitconf" / "signing-key.asc").read_bytes()
    ours = False
    if signature:
        with Verifier({signer[1]: key}) as verifier:
            try:
                verifier.verify(payload, signature, CommitSignatureError)
                ours = True
            except CommitSignatureError:
                ours = False
    assert ours is expected


def test_pre_receive_refuses_exactly_what_git_verify_commit_refuses(
    signer: tuple[Path, str], store: Path
) -> None:
    """The pre-receive hook's check over every case at once: a reason for each commit
    git verify-commit calls bad, none for the others."""
    shas = {case: _write(store, _commit(signer, case)[0]) for case in CASES}
    env = {**os.environ, "GIT_DIR": str(store), "GNUPGHOME": str(signer[0])}
    updates = [(ZERO, sha, f"refs/heads/c{i}") for i, sha in enumerate(shas.values())]
    problems = check_push(store, updates, env)
    refused = sorted(case for case, sha in shas.items() if any(sha in p for p in problems))
    assert refused == sorted(c for c in CASES if not _git_verdict(store, signer[0], shas[c]))
    assert refused == ["tampered extra header", "tampered message", "unsigned"]


def test_commit_raw_refuses_bytes_that_are_not_the_commits() -> None:
    from dulwich.objects import Commit

    raw = b"tree " + TREE_ID + b"\nauthor " + PERSON + b"\ncommitter " + PERSON + b"\n\nm\n"
    commit = Commit.from_raw_string(1, raw, b"1" * 40)
    with pytest.raises(ValueError, match="do not match"):
        commit_raw(commit)


def test_split_without_signature_returns_the_whole_commit() -> None:
    raw = b"tree " + TREE_ID + b"\n\nbody\ngpgsig x\n"
    assert split_commit_signature(raw) == (raw, None)
