"""The staged update as root verifies it again: the kept statement, the commit's
signature and the ``system/`` part of its tree, each object hashed (steps 2 and 3 of
:mod:`qgitconf.system.step`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from qgitconf.agent.state import STAGED_SIGNATURE, STAGED_STATEMENT, AgentState
from qgitconf.agent.verify import VerifyContext, check_statement
from qgitconf.agent.wanted import Wanted
from qgitconf.core.envelope import parse_statement
from qgitconf.core.paths import PathRules
from qgitconf.core.pathtree import check_tree
from qgitconf.core.systemrules import SYSTEM_TOP
from qgitconf.errors import (
    BundleError,
    CommitSignatureError,
    TooLargeError,
)
from qgitconf.gitpack.compat import parse_tree_entries, split_commit_signature
from qgitconf.gitpack.objects import add_raw_objects
from qgitconf.gpg.signing import Verifier
from qgitconf.limits import Limits
from qgitconf.system.source import UserObjects, read_user_file, statement_caps
from qgitconf.system.trust import (
    USER_STATE,
    Layout,
    SystemTrust,
    UserHome,
    key_bytes,
    system_rules,
)


@dataclass(frozen=True)
class Fetched:
    """The verified objects of the staged commit's system part, still in memory: stored
    in root's repository only when the apply goes ahead (a refusal changes nothing)."""

    commit: str
    sequence: int
    bodies: list[tuple[int, bytes]]
    wanted: dict[str, Wanted]

    def store(self, state: AgentState) -> None:
        state.ensure()
        repo = state.repo()
        try:
            add_raw_objects(repo, self.bodies)
        finally:
            repo.close()


def fetch(
    objects: UserObjects,
    commit: str,
    verifier: Verifier,
    limits: Limits,
    rules: PathRules,
) -> tuple[list[tuple[int, bytes]], dict[str, Wanted]]:
    """Step 3: the commit (signature checked), its root tree and the ``system/`` part,
    each hashed against its id; the paths checked.  Returns the objects and the files
    (``/``-relative)."""
    raw = objects.get(commit, b"commit")
    payload, signature = split_commit_signature(raw)
    if not signature:
        raise CommitSignatureError(f"commit {commit} is not signed")
    verifier.verify(bytes(payload), bytes(signature), CommitSignatureError)
    tree_line = raw.split(b"\n", 1)[0]
    if not tree_line.startswith(b"tree ") or len(tree_line) != 45:
        raise BundleError(f"commit {commit} has no tree line")
    root_tree = tree_line[5:].decode("ascii")
    bodies: list[tuple[int, bytes]] = [(1, raw)]
    top = objects.get(root_tree, b"tree")
    bodies.append((2, top))
    entries: list[tuple[bytes, int, bytes | None]] = []
    wanted: dict[str, Wanted] = {}
    stack: list[tuple[bytes, str, int]] = []
    for name, mode, top_item in parse(parse_tree_entries, top):
        if name == SYSTEM_TOP.encode() or name.lower().rstrip(b". ") == b"system":
            entries.append((name, mode, None))
            if mode == 0o40000:
                stack.append((name + b"/", top_item.decode("ascii"), 1))
    total = 0
    while stack:
        prefix, sha, depth = stack.pop()
        if depth > limits.max_tree_depth:
            raise TooLargeError(f"tree deeper than {limits.max_tree_depth} levels")
        body = objects.get(sha, b"tree")
        bodies.append((2, body))
        for name, mode, item in parse(parse_tree_entries, body):
            path = prefix + name
            if len(entries) >= limits.max_tree_entries:
                raise TooLargeError(f"more than {limits.max_tree_entries} system entries")
            entries.append((path, mode, None))
            if mode == 0o40000:
                stack.append((path + b"/", item.decode("ascii"), depth + 1))
            elif mode in (0o100644, 0o100755):
                blob = objects.get(item.decode("ascii"), b"blob")
                total += len(blob)
                if total > limits.max_inflated_bytes:
                    raise TooLargeError(f"system files larger than {limits.max_inflated_bytes}")
                bodies.append((3, blob))
                rel = path.split(b"/", 1)[1].decode("utf-8", "surrogateescape")
                wanted[rel] = Wanted(rel, "file", 0o755 if mode == 0o100755 else 0o644, blob)
    # rule 7 with root's own system rules (a symlink or another mode is refused there)
    check_tree(entries, rules)
    return bodies, wanted


def parse(
    parser: Callable[[bytes], list[tuple[bytes, int, bytes]]], body: bytes
) -> list[tuple[bytes, int, bytes]]:
    try:
        return parser(body)
    except Exception as e:  # dulwich's ObjectFormatException, or a ValueError
        raise BundleError(f"malformed tree: {e}") from e


def verified_update(
    trust: SystemTrust,
    who: UserHome,
    state: AgentState,
    limits: Limits,
    layout: Layout,
) -> Fetched:
    """Steps 2 and 3."""
    home = who.home
    st_cap, sig_cap = statement_caps()
    statement = read_user_file(home, f"{USER_STATE}/{STAGED_STATEMENT}", st_cap)
    signature = read_user_file(home, f"{USER_STATE}/{STAGED_SIGNATURE}", sig_cap)
    key = key_bytes(trust.fingerprint, layout, home)
    data = state.load()
    # a fresh GnuPG home each time (no cache in root's state: a refusal changes nothing)
    with Verifier({trust.fingerprint: key}) as v:
        v.verify(statement, signature)
        st = parse_statement(statement)
        ctx = VerifyContext(
            own_name=trust.name,
            source="",
            pinned={trust.fingerprint: key},
            rules=system_rules(trust),
            limits=limits,
            last_sequence=data.get("sequence"),
            last_commit=data.get("commit"),
            objects=state.objects,
            tmp=state.tmp,
            now=datetime.now(UTC),
        )
        check_statement(st, ctx)
        repo = home / USER_STATE / "repo"
        with UserObjects(who.uid, who.gid, home, repo, limits.max_object_bytes) as objects:
            bodies, wanted = fetch(objects, st.commit, v, limits, system_rules(trust))
    return Fetched(st.commit, st.sequence, bodies, wanted)
