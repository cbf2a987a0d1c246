"""Generator of the hostile-update corpus (issue: hostile updates; DESIGN rules 1-8).

Nothing here is a hand-edited binary: every hostile update is built from scratch by
code - raw git objects, a tiny pack writer, bundle headers and statements - and signed
by real gpg keys made for the purpose:

    vault       pinned, valid          (the genuine signer)
    second      pinned, valid          (for "two signatures")
    rogue       not pinned
    expired     pinned, expired        (made with a faked clock)
    revoked     pinned, revoked        (signed before the revocation)
    subrevoked  pinned, its signing subkey revoked

``World.build(tmp)`` makes the keys and a target home that has accepted and applied
one genuine update (sequence 1).  ``CASES`` is the table: each case builds one update
from the world and names the error code the agent must answer with.  Run this module
as a script to write the corpus to a directory for inspection or for fuzzing seeds.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dulwich.objects import ShaFile

from qgitconf.core.envelope import Statement, format_envelope_header, format_statement
from qgitconf.gitpack.store import TreeEntry, tree_sha256
from tests.hostile import packgen
from tests.keys import gpg_in

TYPE = {"commit": 1, "tree": 2, "blob": 3, "tag": 4}
MODE_FILE, MODE_EXEC, MODE_LINK, MODE_TREE, MODE_GITLINK = (
    0o100644,
    0o100755,
    0o120000,
    0o40000,
    0o160000,
)
TARGET = "personal"
SOURCE = "config-mgmt"
ALLOW = [
    ".bashrc",
    ".gitconfig",
    ".profile",
    ".config/**",
    ".local/**",
    ".gnupg/**",
    ".vim/**",
    "x",
    "x/**",
    "link",
    "sub/**",
    "deep/**",
    ".*",
    "bin",
    "bin/**",
    "tools/**",
]
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


# -- keys ---------------------------------------------------------------------------------


def _fprs(home: Path) -> list[str]:
    out = gpg_in(home, "--with-colons", "--list-keys").decode()
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


@dataclass
class Key:
    """A key: its primary fingerprint, the public key file to pin, and how to sign."""

    name: str
    fpr: str
    public: bytes
    sign_home: Path  # a GnuPG home that can still sign (copied before any revocation)
    sign_user: str
    faked_time: str | None = None

    def sign(self, data: bytes) -> bytes:
        extra = ["--faked-system-time", self.faked_time] if self.faked_time else []
        return gpg_in(
            self.sign_home,
            *extra,
            "--armor",
            "--detach-sign",
            "--local-user",
            self.sign_user,
            input=data,
        )


def _new_home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir(mode=0o700, parents=True)
    return home


def make_keys(root: Path) -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for name in ("vault", "second", "rogue"):
        home = _new_home(root, name)
        gpg_in(
            home,
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name}@corpus.invalid>",
            "ed25519",
            "sign",
            "never",
        )
        fpr = _fprs(home)[0]
        keys[name] = Key(name, fpr, gpg_in(home, "--armor", "--export", fpr), home, fpr)

    home = _new_home(root, "expired")
    gpg_in(
        home,
        "--faked-system-time",
        "20200101T000000",
        "--passphrase",
        "",
        "--quick-gen-key",
        "expired <expired@corpus.invalid>",
        "ed25519",
        "sign",
        "1d",
    )
    fpr = _fprs(home)[0]
    keys["expired"] = Key(
        "expired",
        fpr,
        gpg_in(home, "--armor", "--export", fpr),
        home,
        fpr,
        faked_time="20200101T120000",
    )

    home = _new_home(root, "revoked")
    gpg_in(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        "revoked <revoked@corpus.invalid>",
        "ed25519",
        "sign",
        "never",
    )
    fpr = _fprs(home)[0]
    signer = root / "revoked-signer"
    shutil.copytree(home, signer, ignore=shutil.ignore_patterns("S.*"))
    cert = (
        (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
    )
    gpg_in(home, "--import", input=cert.encode())
    keys["revoked"] = Key("revoked", fpr, gpg_in(home, "--armor", "--export", fpr), signer, fpr)

    home = _new_home(root, "subrevoked")
    gpg_in(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        "subrevoked <sub@corpus.invalid>",
        "ed25519",
        "cert",
        "never",
    )
    fpr = _fprs(home)[0]
    gpg_in(home, "--passphrase", "", "--quick-add-key", fpr, "ed25519", "sign", "never")
    sub = _fprs(home)[1]
    signer = root / "subrevoked-signer"
    shutil.copytree(home, signer, ignore=shutil.ignore_patterns("S.*"))
    gpg_in(
        home,
        "--yes",
        "--command-fd",
        "0",
        "--passphrase",
        "",
        "--pinentry-mode",
        "loopback",
        "--edit-key",
        fpr,
        input=b"key 1\nrevkey\ny\n0\n\ny\nsave\n",
    )
    keys["subrevoked"] = Key(
        "subrevoked", fpr, gpg_in(home, "--armor", "--export", fpr), signer, sub + "!"
    )
    for home in root.iterdir():
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False
        )
    return keys


PINNED = ("vault", "second", "expired", "revoked", "subrevoked")


# -- raw git objects, packs, bundles ----------------------------------------------------------


def object_id(kind: str, raw: bytes) -> str:
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(raw)) + raw).hexdigest()


@dataclass
class Objects:
    """An ordered set of raw git objects."""

    items: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def add(self, kind: str, raw: bytes) -> str:
        sha = object_id(kind, raw)
        self.items[sha] = (kind, raw)
        return sha

    def blob(self, data: bytes) -> str:
        return self.add("blob", data)

    def tree(self, entries: list[tuple[int, bytes, str]], *, keep_order: bool = False) -> str:
        def key(e: tuple[int, bytes, str]) -> bytes:
            return e[1] + (b"/" if e[0] == MODE_TREE else b"")

        ordered = entries if keep_order else sorted(entries, key=key)
        raw = b"".join(b"%o %s\0" % (m, n) + bytes.fromhex(s) for m, n, s in ordered)
        return self.add("tree", raw)

    def commit(
        self, tree: str, parents: list[str], message: str, sign: Callable[[bytes], bytes] | None
    ) -> str:
        head = b"tree %s\n" % tree.encode()
        head += b"".join(b"parent %s\n" % p.encode() for p in parents)
        who = b"Corpus <corpus@invalid> 1795000000 +0000"
        head += b"author " + who + b"\ncommitter " + who + b"\n"
        body = b"\n" + message.encode() + b"\n"
        if sign is None:
            return self.add("commit", head + body)
        sig = sign(head + body).rstrip(b"\n")
        gpgsig = b"gpgsig " + sig.replace(b"\n", b"\n ") + b"\n"
        return self.add("commit", head + gpgsig + body)

    def store(self) -> dict[bytes, Any]:
        return {
            sha.encode(): ShaFile.from_raw_string(TYPE[k], raw)
            for sha, (k, raw) in self.items.items()
        }

    def digest(self, tree: str) -> str:
        """tree-sha256 over ``tree`` as publish computes it."""
        store = self.store()
        entries: list[TreeEntry] = []
        stack = [(b"", tree)]
        while stack:
            prefix, sha = stack.pop()
            for item in store[sha.encode()].iteritems():
                e = TreeEntry(prefix + item.path, item.mode, item.sha.decode())
                entries.append(e)
                if e.is_tree:
                    stack.append((e.path + b"/", e.sha))
        return tree_sha256(store, entries)


def pack(objs: list[tuple[str, bytes]], *, trailer: bytes | None = None) -> bytes:
    """A version-2 pack of whole objects (no deltas) with a correct SHA-1 trailer."""
    out = bytearray(b"PACK" + struct.pack(">II", 2, len(objs)))
    for kind, raw in objs:
        size = len(raw)
        byte = (TYPE[kind] << 4) | (size & 0x0F)
        size >>= 4
        while size:
            out.append(byte | 0x80)
            byte = size & 0x7F
            size >>= 7
        out.append(byte)
        out += zlib.compress(raw)
    out += hashlib.sha1(out).digest() if trailer is None else trailer
    return bytes(out)


def bundle(
    pack_bytes: bytes,
    refs: list[tuple[str, str]],
    prereqs: list[str] = (),  # type: ignore[assignment]
    *,
    first: bytes = b"# v2 git bundle\n",
    caps: list[bytes] = (),
) -> bytes:  # type: ignore[assignment]
    head = first + b"".join(c + b"\n" for c in caps)
    head += b"".join(b"-%s\n" % p.encode() for p in prereqs)
    head += b"".join(b"%s %s\n" % (sha.encode(), ref.encode()) for sha, ref in refs)
    return head + b"\n" + pack_bytes


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    keys: dict[str, Key]
    base: Objects  # objects of the accepted commit C1
    c1: str

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self, home: Path) -> dict[str, str]:
        import os

        return {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }

    # building updates ---------------------------------------------------------------------

    def files(self, objs: Objects, files: dict[str, bytes]) -> str:
        """A tree of regular files at the given slash paths."""
        tree: dict[str, Any] = {}
        for path, data in files.items():
            node = tree
            *dirs, name = path.split("/")
            for d in dirs:
                node = node.setdefault(d, {})
            node[name] = data

        def build(node: dict[str, Any]) -> str:
            entries = []
            for name, val in node.items():
                if isinstance(val, dict):
                    entries.append((MODE_TREE, name.encode(), build(val)))
                else:
                    entries.append((MODE_FILE, name.encode(), objs.blob(val)))
            return objs.tree(entries)

        return build(tree)

    def child(
        self,
        tree_fn: Callable[[Objects], str],
        *,
        parent: str | None = None,
        signer: str | None = "vault",
        message: str = "change",
    ) -> tuple[Objects, str]:
        """New objects with a commit on top of C1 (or ``parent``) whose tree ``tree_fn`` makes."""
        objs = Objects()
        tree = tree_fn(objs)
        sign = self.keys[signer].sign if signer else None
        sha = objs.commit(tree, [parent or self.c1], message, sign)
        return objs, sha

    def update(
        self,
        objs: Objects,
        commit: str,
        *,
        prereq: str | None = "c1",
        sequence: int = 2,
        target: str = TARGET,
        signers: tuple[str, ...] = ("vault",),
        tree_digest: str | None = None,
        bundle_bytes: bytes | None = None,
        refs: list[tuple[str, str]] | None = None,
        expires: datetime | None = None,
        statement_edit: Callable[[bytes], bytes] | None = None,
        tail: bytes = b"",
    ) -> bytes:
        pre = self.c1 if prereq == "c1" else prereq
        if bundle_bytes is None:
            p = pack(list(objs.items.values()))
            bundle_bytes = bundle(
                p, refs or [(commit, f"refs/heads/{target}")], [pre] if pre else []
            )
        if tree_digest is None:
            merged = Objects({**self.base.items, **objs.items})
            tree = merged.items[commit][1].split(b"\n", 1)[0].split(b" ")[1].decode()
            tree_digest = merged.digest(tree)
        st = Statement(
            target=target,
            sequence=sequence,
            commit=commit,
            prerequisite=pre,
            bundle_size=len(bundle_bytes),
            bundle_sha256=hashlib.sha256(bundle_bytes).hexdigest(),
            tree_sha256=tree_digest or merged.digest(tree),
            created=NOW,
            expires=expires,
        )
        statement = format_statement(st)
        if statement_edit is not None:
            statement = statement_edit(statement)
        sig = b"".join(self.keys[s].sign(statement) for s in signers)
        return format_envelope_header(statement, sig) + bundle_bytes + tail


def build_world(root: Path) -> World:
    """Keys, a target home pinned to them, and one genuine update accepted and applied."""
    from qgitconf.agent.commands import apply as apply_cmd
    from qgitconf.agent.config import write_target_config
    from qgitconf.agent.receive import accept_update

    root.mkdir(parents=True, exist_ok=True)
    keys = make_keys(root / "keys")
    home = root / "home"
    home.mkdir()
    cfg = write_target_config(home, SOURCE, keys["vault"].fpr, keys["vault"].public, ALLOW)
    for name in PINNED[1:]:
        (cfg.parent / "keys" / f"{keys[name].fpr}.asc").write_bytes(keys[name].public)
    text = cfg.read_text().replace(
        f'keys = ["{keys["vault"].fpr}"]',
        "keys = [" + ", ".join(f'"{keys[n].fpr}"' for n in PINNED) + "]",
    )
    cfg.write_text(text)
    base = Objects()
    world = World(root, keys, base, "")
    root_commit = base.commit(base.tree([]), [], "start", keys["vault"].sign)
    tree = world.files(base, {".bashrc": b"PS1='$ '\n", ".gitconfig": b"[alias]\n\tst = status\n"})
    c1 = base.commit(tree, [root_commit], "first", keys["vault"].sign)
    world.c1 = c1
    first = world.update(Objects(dict(base.items)), c1, prereq=None, sequence=1)
    import io

    env = world.env(home)
    accept_update(io.BytesIO(first), SOURCE, home, env, name=TARGET)
    apply_cmd(home, env, overwrite=True)
    return world


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    build: Callable[[World], bytes]
    detail: str = ""  # a substring the error detail must contain
    limits: dict[str, int] = field(default_factory=dict)  # target [limits] for this case


def _simple(w: World, files: dict[str, bytes] | None = None, **kw: Any) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, files or {".bashrc": b"PS1='# '\n"}))
    return w.update(objs, sha, **kw)


def _tree_case(
    entries_fn: Callable[[Objects], list[tuple[int, bytes, str]]], *, keep_order: bool = False
) -> Callable[[World], bytes]:
    def build(w: World) -> bytes:
        objs, sha = w.child(lambda o: o.tree(entries_fn(o), keep_order=keep_order))
        return w.update(objs, sha)

    return build


def _path(path: str, data: bytes = b"x\n", mode: int = MODE_FILE) -> Callable[[World], bytes]:
    """A tree holding one entry at ``path`` (components as given, raw bytes allowed)."""

    def build(w: World) -> bytes:
        def tree(o: Objects) -> str:
            parts = path.encode("utf-8", "surrogateescape").split(b"/")
            sha = o.blob(data) if mode != MODE_GITLINK else "1" * 40
            for i, name in enumerate(reversed(parts)):
                sha = o.tree([(mode if i == 0 else MODE_TREE, name, sha)])
            return sha

        objs, sha = w.child(tree)
        # A gitlink has no blob to hash: any digest will do, rule 7 must refuse first.
        return w.update(objs, sha, tree_digest="0" * 64 if mode == MODE_GITLINK else None)

    return build


def entries_tree(o: Objects, entries: dict[str, tuple[int, bytes]]) -> str:
    """Add a tree holding exactly ``entries`` (slash path -> (mode, blob data)) to ``o``."""
    root: dict[str, Any] = {}
    for path, spec in entries.items():
        node = root
        *dirs, name = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = spec

    def make(node: dict[str, Any]) -> str:
        out = []
        for name, val in node.items():
            if isinstance(val, dict):
                out.append((MODE_TREE, name.encode(), make(val)))
            else:
                out.append((val[0], name.encode(), o.blob(val[1])))
        return o.tree(out)

    return make(root)


def _entries(entries: dict[str, tuple[int, bytes]]) -> Callable[[World], bytes]:
    """An update whose tree holds exactly ``entries`` (see :func:`entries_tree`)."""

    def build(w: World) -> bytes:
        objs, sha = w.child(lambda o: entries_tree(o, entries))
        return w.update(objs, sha)

    return build


def _long_path(total: int) -> str:
    """A path below ``deep/`` of exactly ``total`` bytes, its names NAME_MAX (255) long."""
    parts = ["deep"]
    while len("/".join(parts)) + 1 + 255 < total:
        parts.append("a" * 255)
    parts.append("b" * (total - len("/".join(parts)) - 1))
    return "/".join(parts)


def _edit(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    return lambda s: s.replace(old, new, 1)


def _swap_lines(s: bytes) -> bytes:
    lines = s.split(b"\n")
    lines[1], lines[2] = lines[2], lines[1]
    return b"\n".join(lines)


def _dup_line(s: bytes) -> bytes:
    lines = s.split(b"\n")
    return b"\n".join([*lines[:2], lines[1], *lines[2:]])


def _not_descending(w: World) -> bytes:
    objs = Objects()
    tree = w.files(objs, {".bashrc": b"other history\n"})
    root = objs.commit(objs.tree([]), [], "another root", w.keys["vault"].sign)
    sha = objs.commit(tree, [root], "forked", w.keys["vault"].sign)
    return w.update(objs, sha, prereq=None)


def _two_refs(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    p = pack(list(objs.items.values()))
    b = bundle(p, [(sha, "refs/heads/personal"), (sha, "refs/heads/work")], [w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _two_prereqs(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    b = bundle(pack(list(objs.items.values())), [(sha, "refs/heads/personal")], [w.c1, w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _same_ref_twice(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    refs = [(sha, "refs/heads/personal"), (w.c1, "refs/heads/personal")]
    b = bundle(pack(list(objs.items.values())), refs, [w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _ref_other_commit(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    p = pack(list(objs.items.values()))
    b = bundle(p, [(w.c1, "refs/heads/personal")], [w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _other_ref_name(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    b = bundle(pack(list(objs.items.values())), [(sha, "refs/heads/../../x")], [w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _missing_prereq(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    return w.update(objs, sha, prereq="2" * 40)


def _pack_garbage(w: World) -> bytes:
    objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
    b = bundle(pack(list(objs.items.values())) + b"GARBAGE", [(sha, "refs/heads/personal")], [w.c1])
    return w.update(objs, sha, bundle_bytes=b)


def _capability(cap: bytes) -> Callable[[World], bytes]:
    def build(w: World) -> bytes:
        objs, sha = w.child(lambda o: w.files(o, {".bashrc": b"x\n"}))
        b = bundle(
            pack(list(objs.items.values())),
            [(sha, "refs/heads/personal")],
            [w.c1],
            first=b"# v3 git bundle\n",
            caps=[cap],
        )
        return w.update(objs, sha, bundle_bytes=b)

    return build


def _upper_commit(s: bytes) -> bytes:
    lines = s.split(b"\n")
    return b"\n".join(line.upper() if line.startswith(b"commit: ") else line for line in lines)


def _hash_mismatch(w: World) -> bytes:
    def edit(s: bytes) -> bytes:
        i = s.index(b"bundle-sha256: ") + len(b"bundle-sha256: ")
        return s[:i] + (b"0" if s[i : i + 1] != b"0" else b"1") + s[i + 1 :]

    return _simple(w, statement_edit=edit)


def _short_bundle(w: World) -> bytes:
    data = _simple(w)
    return data[:-10]


def _symlink_then_file(w: World) -> bytes:
    def entries(o: Objects) -> list[tuple[int, bytes, str]]:
        inner = o.tree([(MODE_FILE, b"passwd", o.blob(b"root::0:0::/root:/bin/sh\n"))])
        return [(MODE_LINK, b"x", o.blob(b"/etc")), (MODE_TREE, b"x", inner)]

    return _tree_case(entries, keep_order=True)(w)


def _deep(w: World) -> bytes:
    def tree(o: Objects) -> str:
        sha = o.tree([(MODE_FILE, b"f", o.blob(b"x"))])
        for _ in range(80):
            sha = o.tree([(MODE_TREE, b"d", sha)])
        return o.tree([(MODE_TREE, b"deep", sha)])

    objs, sha = w.child(tree)
    return w.update(objs, sha)


def _many_objects(w: World) -> bytes:
    def tree(o: Objects) -> str:
        blobs = [(MODE_FILE, b"f%06d" % i, o.blob(b"%d" % i)) for i in range(3000)]
        return o.tree([(MODE_TREE, b"sub", o.tree(blobs))])

    objs, sha = w.child(tree)
    return w.update(objs, sha)


def _packfile(write: Callable[[Path], None]) -> Callable[[World], bytes]:
    """A bundle around a pack from tests/hostile/packgen.py (bombs built by streaming)."""

    def build(w: World) -> bytes:
        path = w.root / f"{write.__name__}.pack"
        if not path.exists():
            write(path)
        commit = "3" * 40  # never reached: the pre-scan refuses the pack first
        b = bundle(path.read_bytes(), [(commit, "refs/heads/personal")], [w.c1])
        return w.update(Objects(), commit, bundle_bytes=b, tree_digest="0" * 64)

    return build


def _sequence_reused(w: World) -> bytes:
    return _simple(w, sequence=1)


CASES: list[Case] = [
    # rule 1: envelope
    Case("empty input", "malformed", lambda w: b""),
    Case("garbage", "malformed", lambda w: b"\x00\xff" * 64),
    Case("truncated header", "malformed", lambda w: _simple(w)[:30]),
    Case("truncated statement", "malformed", lambda w: _simple(w)[:120]),
    Case(
        "statement-length over cap",
        "too-large",
        lambda w: b"QGITCONF-UPDATE 1\nstatement-length: 5000\nsignature-length: 10\n\n",
    ),
    Case(
        "signature-length over cap",
        "too-large",
        lambda w: b"QGITCONF-UPDATE 1\nstatement-length: 10\nsignature-length: 99999\n\n",
    ),
    Case(
        "length with leading zero",
        "malformed",
        lambda w: b"QGITCONF-UPDATE 1\nstatement-length: 010\nsignature-length: 10\n\n",
    ),
    Case("endless header line", "malformed", lambda w: b"QGITCONF-UPDATE 1\n" + b"s" * 10_000),
    # rule 2: signature
    Case("unsigned statement", "signature-untrusted", lambda w: _unsigned(w)),
    Case(
        "signed by an unpinned key", "signature-untrusted", lambda w: _simple(w, signers=("rogue",))
    ),
    Case(
        "signed by an expired pinned key",
        "signature-untrusted",
        lambda w: _simple(w, signers=("expired",)),
    ),
    Case(
        "signed by a revoked pinned key",
        "signature-untrusted",
        lambda w: _simple(w, signers=("revoked",)),
    ),
    Case(
        "signed by a revoked signing subkey",
        "signature-untrusted",
        lambda w: _simple(w, signers=("subrevoked",)),
    ),
    Case(
        "two signatures by pinned keys",
        "signature-untrusted",
        lambda w: _simple(w, signers=("vault", "second")),
    ),
    Case(
        "statement changed after signing",
        "signature-untrusted",
        lambda w: _simple(w).replace(b"sequence: 2", b"sequence: 9", 1),
    ),
    # rule 4: statement (signed, so only the parser and the rules can refuse)
    Case("duplicate key", "malformed", lambda w: _simple(w, statement_edit=_dup_line)),
    Case(
        "missing key",
        "malformed",
        lambda w: _simple(
            w,
            statement_edit=lambda s: b"\n".join(
                line for line in s.split(b"\n") if not line.startswith(b"created")
            ),
        ),
    ),
    Case("reordered keys", "malformed", lambda w: _simple(w, statement_edit=_swap_lines)),
    Case(
        "extra key", "malformed", lambda w: _simple(w, statement_edit=lambda s: s + b"note: hi\n")
    ),
    Case(
        "sequence with leading zero",
        "malformed",
        lambda w: _simple(w, statement_edit=_edit(b"sequence: 2", b"sequence: 02")),
    ),
    Case("uppercase commit hex", "malformed", lambda w: _simple(w, statement_edit=_upper_commit)),
    Case("bad target name", "malformed", lambda w: _simple(w, target="../etc")),
    Case("for another qube", "wrong-target", lambda w: _simple(w, target="work")),
    Case("sequence equal with another commit", "sequence-reused", _sequence_reused),
    Case("lower sequence", "rollback", lambda w: _simple(w, sequence=0)),
    Case(
        "expired statement",
        "expired",
        lambda w: _simple(w, expires=datetime(2026, 1, 1, tzinfo=UTC)),
    ),
    # rule 5: bundle
    Case("bundle hash mismatch", "bundle-hash-mismatch", _hash_mismatch),
    Case("bundle shorter than bundle-size", "bundle-size-mismatch", _short_bundle),
    Case("data after the bundle", "bundle-size-mismatch", lambda w: _simple(w, tail=b"x")),
    Case(
        "bundle-size over the limit",
        "too-large",
        lambda w: _simple(w),
        limits={"max_bundle_bytes": 100},
    ),
    Case("two refs", "bad-bundle", _two_refs),
    Case("ref at another commit", "commit-mismatch", _ref_other_commit),
    Case("two prerequisites", "bad-bundle", _two_prereqs, "more than one prerequisite"),
    Case("same ref twice", "bad-bundle", _same_ref_twice, "exactly one"),
    Case("ref name not the target branch", "bad-bundle", _other_ref_name),
    Case("missing prerequisite", "missing-prerequisite", _missing_prereq),
    Case("trailing garbage in the pack", "bad-bundle", _pack_garbage),
    Case("unknown capability", "bad-bundle", _capability(b"@filter=blob:none")),
    Case("sha256 object format", "bad-bundle", _capability(b"@object-format=sha256")),
    Case(
        "not a bundle", "bad-bundle", lambda w: _simple(w, bundle_bytes=b"# v9 git bundle\n\nPACK")
    ),
    Case(
        "tree digest mismatch", "tree-digest-mismatch", lambda w: _simple(w, tree_digest="0" * 64)
    ),
    Case(
        "duplicate tree entries",
        "bad-bundle",
        _tree_case(
            lambda o: [(MODE_FILE, b"d", o.blob(b"a")), (MODE_FILE, b"d", o.blob(b"b"))],
            keep_order=True,
        ),
    ),
    Case("too many objects", "too-large", _many_objects, limits={"max_objects": 1000}),
    Case("deeply nested trees", "too-large", _deep),
    Case("1 GiB inflated blob in a 1 MiB pack", "too-large", _packfile(packgen.write_zero_blob)),
    Case("delta bomb (1 GiB result)", "too-large", _packfile(packgen.write_delta_bomb)),
    Case("200,000 tiny objects", "too-large", _packfile(packgen.write_many_objects)),
    Case(
        "REF_DELTA chain of 60 through the pack's own deltas",
        "too-large",
        _packfile(packgen.write_deep_ref_delta_chain),
    ),
    # rule 6: tip commit
    Case(
        "tip commit unsigned",
        "commit-signature-untrusted",
        lambda w: w.update(*w.child(lambda o: w.files(o, {".bashrc": b"x\n"}), signer=None)),
    ),
    Case(
        "tip commit signed by another key",
        "commit-signature-untrusted",
        lambda w: w.update(*w.child(lambda o: w.files(o, {".bashrc": b"x\n"}), signer="rogue")),
    ),
    Case(
        "tip signed by an expired pinned key",
        "commit-signature-untrusted",
        lambda w: w.update(*w.child(lambda o: w.files(o, {".bashrc": b"x\n"}), signer="expired")),
    ),
    Case(
        # gpg checks the tip's signature while the tree is walked: the signature is
        # still the error reported when the tree is refused too.
        "tip signed by another key, with an unsafe path",
        "commit-signature-untrusted",
        lambda w: w.update(
            *w.child(
                lambda o: w.files(o, {".bashrc": b"x\n", ".config/qgitconf/target.toml": b""}),
                signer="rogue",
            )
        ),
    ),
    Case("tip not descending from the last accepted", "rollback", _not_descending),
    # rule 7: paths
    Case("path ..", "unsafe-path", _path("../escape"), "invalid name"),
    Case("path .git/config", "unsafe-path", _path(".git/config"), "invalid name"),
    Case("path .GIT/hooks/x", "unsafe-path", _path(".GIT/hooks/x"), ".git"),
    Case("path .git.", "unsafe-path", _path(".git./config"), ".git"),
    Case("path git~1", "unsafe-path", _path("git~1/config"), ".git"),
    Case("path .g\\u200cit", "unsafe-path", _path(".g\u200cit/config")),
    Case("name with escape sequence", "unsafe-path", _path("\x1b[31mred")),
    Case("name with newline", "unsafe-path", _path("a\nb")),
    Case("name with invalid UTF-8", "unsafe-path", _path("bad\udcff")),
    Case("symlink x -> /etc then x/passwd", "bad-bundle", _symlink_then_file),
    Case(
        "symlink outside home",
        "unsafe-path",
        _tree_case(lambda o: [(MODE_LINK, b"link", o.blob(b"../../etc/passwd"))]),
    ),
    Case(
        "absolute symlink",
        "unsafe-path",
        _tree_case(lambda o: [(MODE_LINK, b"link", o.blob(b"/etc/passwd"))]),
    ),
    Case("gitlink", "unsafe-path", _path("sub/module", mode=MODE_GITLINK), "submodule"),
    Case("mode 100664", "unsafe-path", _path(".profile", mode=0o100664)),
    Case("file in ~/.config/qgitconf", "unsafe-path", _path(".config/qgitconf/target.toml")),
    Case(
        "file in ~/.local/share/qgitconf", "unsafe-path", _path(".local/share/qgitconf/state.json")
    ),
    Case("file in ~/.gnupg", "unsafe-path", _path(".gnupg/gpg.conf")),
    Case("path outside the allowlist", "unsafe-path", _path("Documents/notes.txt"), "allow"),
    # rule 12: paths the agent or the programs around it load code from (issue 14 §1)
    Case(
        ".pth in the user site-packages",
        "unsafe-path",
        _path(".local/lib/python3.11/site-packages/zz.pth", b"import os; os.system('x')\n"),
        "site-packages",
    ),
    Case(
        "usercustomize in the user site-packages",
        "unsafe-path",
        _path(".local/lib/python3.13/site-packages/usercustomize.py", b"import os\n"),
        "site-packages",
    ),
    Case(
        "user site-packages, other case",
        "unsafe-path",
        _path(".local/lib/Python3.11/site-packages/zz.pth"),
        "code-loading",
    ),
    Case(
        "symlink as the user site directory",
        "unsafe-path",
        _path(".local/lib/python3", b"../../x", MODE_LINK),
        "site-packages",
    ),
    Case(
        "~/.pam_environment",
        "unsafe-path",
        _path(".pam_environment", b"LD_PRELOAD DEFAULT=/home/user/x.so\n"),
        "PAM session",
    ),
    Case("~/bin/gpg", "unsafe-path", _path("bin/gpg", b"#!/bin/sh\n", MODE_EXEC), "PATH"),
    Case(
        "~/bin/gpg as a symlink", "unsafe-path", _path("bin/gpg", b"../tools/g", MODE_LINK), "PATH"
    ),
    Case("~/bin/GPG", "unsafe-path", _path("bin/GPG", b"#!/bin/sh\n", MODE_EXEC), "PATH"),
    Case(
        "~/.local/bin/qgitconf-service",
        "unsafe-path",
        _path(".local/bin/qgitconf-service", b"#!/bin/sh\n", MODE_EXEC),
        "PATH",
    ),
    Case(
        "~/.local/bin/python3.11",
        "unsafe-path",
        _path(".local/bin/python3.11", b"#!/bin/sh\n", MODE_EXEC),
        "PATH",
    ),
    Case(
        "~/bin -> tools, then tools/gpg",
        "unsafe-path",
        _entries({"bin": (MODE_LINK, b"tools"), "tools/gpg": (MODE_EXEC, b"#!/bin/sh\n")}),
        "through the symlink 'bin'",
    ),
    Case(
        "~/.local/bin -> ../tools, then tools/git as a symlink",
        "unsafe-path",
        _entries({".local/bin": (MODE_LINK, b"../tools"), "tools/git": (MODE_LINK, b"g")}),
        "through the symlink '.local/bin'",
    ),
    # rule 9 / issue 14 §4: names that cannot be written with the agent's temp names
    Case("name of 256 bytes", "unsafe-path", _path("x/" + "n" * 256), "NAME_MAX"),
    Case("UTF-8 name of 256 bytes", "unsafe-path", _path("x/" + "\u00e9" * 128), "NAME_MAX"),
    Case("path of 3840 bytes", "unsafe-path", _path(_long_path(3840)), "PATH_MAX"),
]


def _unsigned(w: World) -> bytes:
    data = _simple(w)
    statement_len = int(data.split(b"statement-length: ")[1].split(b"\n")[0])
    start = data.index(b"\n\n") + 2
    statement = data[start : start + statement_len]
    rest = data[start + statement_len :]
    sig_len = int(data.split(b"signature-length: ")[1].split(b"\n")[0])
    fake = b"-----BEGIN PGP SIGNATURE-----\n\nnot a signature\n-----END PGP SIGNATURE-----\n"
    return format_envelope_header(statement, fake) + rest[sig_len:]


def main(argv: list[str]) -> int:
    """Write every case of the corpus to ``argv[0]`` (one file per case)."""
    out = Path(argv[0])
    world = build_world(out / "world")
    for i, case in enumerate(CASES):
        (out / f"{i:03d}-{case.code}.update").write_bytes(case.build(world))
    print(f"{len(CASES)} cases written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
