"""Hostile and benign tree entries for qgitconf.core.paths (DESIGN rule 7)."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qgitconf.core.globs import glob_matches
from qgitconf.core.paths import (
    ALLOWED_MODES,
    DENIED_PREFIXES,
    PathRules,
    check_component,
    check_symlink_target,
    check_tree_entry,
)
from qgitconf.core.pathtree import check_tree
from qgitconf.core.programs import PROTECTED_PROGRAMS
from qgitconf.errors import UnsafePathError
from qgitconf.limits import MAX_HOME_PATH_BYTES, NAME_MAX

F = 0o100644
X = 0o100755
L = 0o120000
T = 0o040000

DEFAULT = PathRules()
NARROW = PathRules(allow=(".bashrc", ".config/git/**"))

HFS_IGNORABLE = (
    [chr(c) for c in range(0x200C, 0x2010)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x206A, 0x2070)]
    + ["\ufeff"]
)


def u(text: str) -> bytes:
    return text.encode("utf-8")


# --- refused entries -----------------------------------------------------------------

HOSTILE: list[tuple[str, bytes, int, bytes | None, PathRules, str]] = [
    ("dotdot", b"..", F, None, DEFAULT, "'..' component"),
    ("dotdot-inside", b"a/../b", F, None, DEFAULT, "'..' component"),
    ("dot", b"a/./b", F, None, DEFAULT, "'.' component"),
    ("dotgit", b".git/config", F, None, DEFAULT, "'.git' component"),
    ("dotgit-tree", b".git", T, None, DEFAULT, "'.git' component"),
    ("dotgit-upper", b".GIT/hooks/x", X, None, DEFAULT, "'.git' component"),
    ("dotgit-mixed-deep", b"a/b/.GiT/config", F, None, DEFAULT, "'.git' component"),
    ("ntfs-trailing-dot", b".git.", F, None, DEFAULT, "'.git' component"),
    ("ntfs-trailing-dots-spaces", b".git . ./config", F, None, DEFAULT, "'.git' component"),
    ("ntfs-trailing-space", b".git ", F, None, DEFAULT, "'.git' component"),
    ("ntfs-shortname", b"git~1/config", F, None, DEFAULT, "'.git' component"),
    ("ntfs-shortname-upper", b"GIT~1", F, None, DEFAULT, "'.git' component"),
    ("ntfs-shortname-dot", b"Git~1./hooks/x", F, None, DEFAULT, "'.git' component"),
    ("ntfs-stream", b".git::$INDEX_ALLOCATION/x", F, None, DEFAULT, "'.git' component"),
    ("ntfs-stream-data", b".git:foo", F, None, DEFAULT, "'.git' component"),
    ("hfs-zwnj", u(".g\u200cit/config"), F, None, DEFAULT, "'.git' component"),
    ("hfs-bom", u("\ufeff.git/config"), F, None, DEFAULT, "'.git' component"),
    ("hfs-suffix", u(".git\u200d/config"), F, None, DEFAULT, "'.git' component"),
    ("hfs-206a-upper", u(".G\u206ai\u206ft"), F, None, DEFAULT, "'.git' component"),
    ("hfs-and-ntfs", u(".g\u200cit. /config"), F, None, DEFAULT, "'.git' component"),
    ("newline", b"a\nb", F, None, DEFAULT, "control"),
    ("escape", b"\x1b[31mred", F, None, DEFAULT, "control"),
    ("nul", b"a\x00b", F, None, DEFAULT, "NUL"),
    ("del", b"a\x7fb", F, None, DEFAULT, "control"),
    ("tab", b"a\tb", F, None, DEFAULT, "control"),
    ("c1-csi", u("a\u009bb"), F, None, DEFAULT, "control"),
    ("rlo", u("evil\u202etxt.sh"), F, None, DEFAULT, "bidi"),
    ("rli", u("a\u2067b"), F, None, DEFAULT, "bidi"),
    ("rlm", u("a\u200fb"), F, None, DEFAULT, "bidi"),
    ("line-separator", u("a\u2028b"), F, None, DEFAULT, "line-separator"),
    ("invalid-utf8", b"caf\xe9", F, None, DEFAULT, "invalid UTF-8"),
    ("overlong-utf8", b"\xc0\xae\xc0\xae", F, None, DEFAULT, "invalid UTF-8"),
    ("surrogate-utf8", b"\xed\xa0\x80", F, None, DEFAULT, "invalid UTF-8"),
    ("backslash", b"a\\b", F, None, DEFAULT, "backslash"),
    ("empty-path", b"", F, None, DEFAULT, "empty path"),
    ("empty-component", b"a//b", F, None, DEFAULT, "empty component"),
    ("leading-slash", b"/etc/passwd", F, None, DEFAULT, "absolute path"),
    ("trailing-slash", b"a/", F, None, DEFAULT, "trailing '/'"),
    ("symlink-absolute", b"x", L, b"/etc", DEFAULT, "absolute symlink target"),
    ("symlink-no-target", b"x", L, None, DEFAULT, "without a target"),
    ("symlink-empty-target", b"x", L, b"", DEFAULT, "empty symlink target"),
    ("symlink-escape-depth1", b"x", L, b"../../outside", DEFAULT, "leaves $HOME"),
    ("symlink-escape-top", b"x", L, b"..", DEFAULT, "leaves $HOME"),
    ("symlink-escape-depth2", b"a/b", L, b"../../x", DEFAULT, "leaves $HOME"),
    ("symlink-inner-dotdot", b"x", L, b"a/../../b", DEFAULT, "'..' component"),
    ("symlink-inner-dotdot-2", b"a/b/x", L, b"../c/../d", DEFAULT, "'..' component"),
    ("symlink-dot", b"x", L, b"./y", DEFAULT, "'.' component"),
    ("symlink-double-slash", b"x", L, b"a//b", DEFAULT, "empty component"),
    ("symlink-trailing-slash", b"x", L, b"a/", DEFAULT, "empty component"),
    ("symlink-newline", b"x", L, b"a\nb", DEFAULT, "control"),
    ("symlink-rlo", b"x", L, u("a\u202eb"), DEFAULT, "bidi"),
    ("symlink-invalid-utf8", b"x", L, b"\xff", DEFAULT, "invalid UTF-8"),
    ("symlink-too-long", b"x", L, b"a" * 1025, DEFAULT, "longer than 1024"),
    ("symlink-dotgit", b"x", L, b".git/config", DEFAULT, "'.git' component"),
    ("symlink-into-gnupg", b"x", L, b".gnupg", DEFAULT, "symlink target inside"),
    (
        "symlink-into-gnupg-file",
        b"x",
        L,
        b".gnupg/private-keys-v1.d",
        DEFAULT,
        "symlink target inside",
    ),
    ("symlink-into-gnupg-up", b"a/b/x", L, b"../../.GnuPG/x", DEFAULT, "symlink target inside"),
    (
        "symlink-into-agent-config",
        b"a/x",
        L,
        b"../.config/qgitconf/target.toml",
        DEFAULT,
        "symlink target inside",
    ),
    (
        "symlink-into-agent-state",
        b"s",
        L,
        b".local/share/qgitconf",
        DEFAULT,
        "symlink target inside",
    ),
    ("gitlink", b"sub", 0o160000, None, DEFAULT, "submodules"),
    ("mode-664", b"a", 0o100664, None, DEFAULT, "mode 100664"),
    ("mode-600", b"a", 0o100600, None, DEFAULT, "mode 100600"),
    ("mode-0", b"a", 0, None, DEFAULT, "mode 0 "),
    ("mode-bare-644", b"a", 0o644, None, DEFAULT, "mode 644"),
    (
        "agent-config",
        b".config/qgitconf/target.toml",
        F,
        None,
        DEFAULT,
        "which qgitconf never writes",
    ),
    ("agent-config-dir", b".config/qgitconf", T, None, DEFAULT, "which qgitconf never writes"),
    (
        "agent-config-keys",
        b".config/qgitconf/keys/X.asc",
        F,
        None,
        DEFAULT,
        "which qgitconf never writes",
    ),
    (
        "agent-state",
        b".local/share/qgitconf/state",
        F,
        None,
        DEFAULT,
        "which qgitconf never writes",
    ),
    (
        "agent-state-upper",
        b".Local/Share/QGitConf/state",
        F,
        None,
        DEFAULT,
        "which qgitconf never writes",
    ),
    ("gnupg", b".gnupg/gpg.conf", F, None, DEFAULT, "which qgitconf never writes"),
    ("gnupg-itself", b".gnupg", F, None, DEFAULT, "which qgitconf never writes"),
    ("gnupg-case", b".GnuPG/x", F, None, DEFAULT, "which qgitconf never writes"),
    ("gnupg-dot", b".gnupg./x", F, None, DEFAULT, "which qgitconf never writes"),
    ("gnupg-hfs", u(".gnu\u200cpg/x"), F, None, DEFAULT, "which qgitconf never writes"),
    ("symlink-over-config", b".config", L, b"elsewhere", DEFAULT, "parent of"),
    ("symlink-over-local-share", b".local/share", L, b"../x", DEFAULT, "parent of"),
    ("file-over-local", b".local", F, None, DEFAULT, "parent of"),
    ("outside-allowlist", b".profile", F, None, NARROW, "allowlist"),
    ("outside-allowlist-prefix", b".config/gitx/config", F, None, NARROW, "allowlist"),
    ("outside-allowlist-case", b".BASHRC", F, None, NARROW, "allowlist"),
    ("too-long", b"a/" * 2048 + b"a", F, None, DEFAULT, "longer than 4096"),
    ("too-long-narrow", b"a" * 101, F, None, PathRules(max_path_bytes=100), "longer than 100"),
    ("too-deep", b"/".join([b"d"] * 65), F, None, DEFAULT, "deeper than 64"),
    ("too-deep-narrow", b"a/b/c/d", F, None, PathRules(max_depth=3), "deeper than 3"),
    # Names that cannot be written with the names the agent derives (issue 14 §4).
    ("name-max-256", b"a" * 256, F, None, DEFAULT, "NAME_MAX"),
    ("name-max-utf8-256", u("\u00e9" * 128), F, None, DEFAULT, "NAME_MAX"),
    ("name-max-utf8-3byte", u("\u65e5" * 86), F, None, DEFAULT, "NAME_MAX"),
    ("name-max-deep", b"d/" + b"a" * 256 + b"/f", F, None, DEFAULT, "NAME_MAX"),
    ("name-max-dir", b"a" * 300, T, None, DEFAULT, "NAME_MAX"),
    ("name-max-link-target", b"x", L, b"a" * 256, DEFAULT, "NAME_MAX"),
    ("path-max", b"/".join([b"a" * 255] * 15) + b"x", F, None, DEFAULT, "PATH_MAX"),
    (
        "path-max-wide-rules",
        b"/".join([b"a" * 200] * 20),
        F,
        None,
        PathRules(max_path_bytes=8192),
        "PATH_MAX",
    ),
    # Paths that load code (DESIGN rule 12, issue 14 §1).
    ("site-pth", b".local/lib/python3.11/site-packages/evil.pth", F, None, DEFAULT, "code-"),
    (
        "site-usercustomize",
        b".local/lib/python3.13/site-packages/usercustomize.py",
        F,
        None,
        DEFAULT,
        "site-packages",
    ),
    ("site-plain-python", b".local/lib/python/site-packages/x.pth", F, None, DEFAULT, "code-"),
    ("site-dir", b".local/lib/python3.11", T, None, DEFAULT, "site-packages"),
    ("site-symlink", b".local/lib/python3.11", L, b"../../x", DEFAULT, "site-packages"),
    ("site-case", b".Local/LIB/Python3.11/site-packages/x.pth", F, None, DEFAULT, "code-"),
    ("site-ntfs-dot", b".local/lib./python3.11./x.pth", F, None, DEFAULT, "code-"),
    ("site-hfs", u(".local/li\u200cb/py\u200dthon3/x.pth"), F, None, DEFAULT, "code-"),
    ("pam-environment", b".pam_environment", F, None, DEFAULT, "PAM session"),
    ("pam-environment-case", b".PAM_Environment.", F, None, DEFAULT, "PAM session"),
    ("pam-environment-link", b".pam_environment", L, b".config/env", DEFAULT, "PAM"),
    ("pam-environment-dir", b".pam_environment/x", F, None, DEFAULT, "PAM session"),
    ("bin-gpg", b"bin/gpg", X, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-plain-file", b"bin/gpg", F, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-symlink", b"bin/gpg", L, b"../tools/g", DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-dir", b"bin/gpg/x", F, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-upper", b"BIN/GPG", X, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-ntfs", b"bin/gpg. ", X, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-stream", b"bin/gpg:x", X, None, DEFAULT, "shadowed on the PATH"),
    ("bin-gpg-hfs", u("bin/g\u200cpg"), X, None, DEFAULT, "shadowed on the PATH"),
    ("bin-python3-minor", b"bin/python3.11", X, None, DEFAULT, "shadowed on the PATH"),
    ("local-bin-git", b".local/bin/git", X, None, DEFAULT, "shadowed on the PATH"),
    ("local-bin-qgitconf", b".local/bin/qgitconf", L, b"../../x", DEFAULT, "shadowed"),
    ("local-bin-case", b".LOCAL/Bin/Notify-Send", X, None, DEFAULT, "shadowed on the PATH"),
]


@pytest.mark.parametrize(
    ("path", "mode", "target", "rules", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE],
)
def test_hostile_entry_refused(
    path: bytes, mode: int, target: bytes | None, rules: PathRules, reason: str
) -> None:
    with pytest.raises(UnsafePathError) as info:
        check_tree_entry(path, mode, rules, target)
    detail = info.value.detail
    assert detail.startswith("'")
    assert reason in detail
    assert len(detail) < 400
    assert info.value.code == "unsafe-path"
    # The detail is safe to show: no control or bidi characters survive (sanitize keeps
    # tabs on purpose).
    for ch in detail:
        code = ord(ch)
        assert code >= 0x20 or ch == "\t"
        assert code != 0x7F and not 0x80 <= code < 0xA0
        assert not 0x202A <= code <= 0x202E and not 0x2066 <= code <= 0x2069


@pytest.mark.parametrize(
    ("path", "mode", "target", "rules"),
    [pytest.param(*case[1:5], id=case[0]) for case in HOSTILE],
)
def test_hostile_entry_refused_in_tree(
    path: bytes, mode: int, target: bytes | None, rules: PathRules
) -> None:
    with pytest.raises(UnsafePathError):
        check_tree([(b".bashrc", F, None), (path, mode, target)], rules)


def test_detail_names_path_and_reason() -> None:
    with pytest.raises(UnsafePathError) as info:
        check_tree_entry(b".git/config", F, DEFAULT)
    assert info.value.detail == "'.git/config': '.git' component"


def test_detail_escapes_control_characters() -> None:
    with pytest.raises(UnsafePathError) as info:
        check_tree_entry(b"\x1b[31mred", F, DEFAULT)
    assert "\x1b" not in info.value.detail
    assert "\\x1b" in info.value.detail


def test_gitlink_message_mentions_submodules() -> None:
    with pytest.raises(UnsafePathError, match="submodules are not allowed"):
        check_tree_entry(b"sub", 0o160000, DEFAULT)


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("x", b"/etc"),
        ("x", b"../../outside"),
        ("a/b", b"../../x"),
        ("x", b"a/../../b"),
        ("x", b"a\nb"),
        ("x", b".gnupg/pubring.kbx"),
        ("a/b/c", b"../../.gnupg"),
        ("x", b"git~1/config"),
    ],
)
def test_check_symlink_target_refuses(link: str, target: bytes) -> None:
    with pytest.raises(UnsafePathError):
        check_symlink_target(link, target)


# A tree symlink that makes a directory code is loaded from resolve elsewhere: the
# names refused there are refused where it resolves to (issue 14 §1).
REDIRECTED_CODE_DIRS: list[tuple[str, list[tuple[bytes, int, bytes | None]], str]] = [
    ("bin-redirect", [(b"bin", L, b"tools"), (b"tools/gpg", X, None)], "bin"),
    ("bin-redirect-link", [(b"bin", L, b"tools"), (b"tools/git", L, b"../g")], "bin"),
    ("bin-redirect-order", [(b"tools/sh", X, None), (b"bin", L, b"tools")], "bin"),
    ("bin-redirect-case", [(b"bin", L, b"Tools"), (b"tools/GPG", X, None)], "bin"),
    ("bin-redirect-deep", [(b"bin", L, b"a/b"), (b"a/b/python3.12", X, None)], "bin"),
    (
        "bin-redirect-chain",
        [(b"bin", L, b"a"), (b"a", L, b"c/d"), (b"c/d/qgitconf-service", X, None)],
        "bin",
    ),
    ("local-bin-redirect", [(b".local/bin", L, b"../t"), (b"t/env", X, None)], ".local/bin"),
    ("local-bin-to-home", [(b".local/bin", L, b".."), (b"git", X, None)], ".local/bin"),
    (
        "local-lib-redirect",
        [(b".local/lib", L, b"../py"), (b"py/python3.11/site-packages/x.pth", F, None)],
        ".local/lib",
    ),
]


@pytest.mark.parametrize(
    ("entries", "via"),
    [pytest.param(entries, via, id=name) for name, entries, via in REDIRECTED_CODE_DIRS],
)
def test_code_dir_redirected_by_a_tree_symlink(
    entries: list[tuple[bytes, int, bytes | None]], via: str
) -> None:
    with pytest.raises(UnsafePathError) as info:
        check_tree(entries, DEFAULT)
    assert info.value.code == "unsafe-path"
    assert f"code-loading path through the symlink '{via}'" in info.value.detail


@pytest.mark.parametrize("directory", [b"bin", b".local/bin"])
@pytest.mark.parametrize("mode", [F, X, L])
@pytest.mark.parametrize("name", [*sorted(PROTECTED_PROGRAMS), "python3.11", "python3.13"])
def test_every_protected_program_is_refused_in_path_dirs(
    directory: bytes, mode: int, name: str
) -> None:
    target = b"../somewhere" if mode == L else None
    path = directory + b"/" + name.encode()
    with pytest.raises(UnsafePathError, match="shadowed on the PATH") as info:
        check_tree_entry(path, mode, DEFAULT, target)
    assert info.value.code == "unsafe-path"
    with pytest.raises(UnsafePathError, match="code-loading"):
        check_tree([(b".bashrc", F, None), (path, mode, target)], DEFAULT)


@given(
    st.sampled_from(sorted(PROTECTED_PROGRAMS)),
    st.sampled_from(["bin", ".local/bin"]),
    st.booleans(),
    st.sampled_from(["", ".", " ", ". ", ":x"]),
    st.sampled_from(["", "\u200c", "\ufeff"]),
)
def test_protected_program_variants(
    name: str, directory: str, upper: bool, tail: str, ignorable: str
) -> None:
    if upper:
        name, directory = name.upper(), directory.upper()
    name = name[:1] + ignorable + name[1:] + tail
    with pytest.raises(UnsafePathError, match="code-loading"):
        check_tree_entry(u(f"{directory}/{name}"), X, DEFAULT)


@pytest.mark.parametrize(
    ("name", "entries"),
    [
        ("duplicate", [(b".bashrc", F, None), (b".bashrc", F, None)]),
        ("duplicate-mode", [(b"x", F, None), (b"x", T, None)]),
        ("case", [(b".bashrc", F, None), (b".BASHRC", F, None)]),
        ("case-dir", [(b"A/x", F, None), (b"a/y", F, None)]),
        ("nfc-nfd", [(u("caf\u00e9"), F, None), (u("cafe\u0301"), F, None)]),
        ("hfs-ignorable", [(b".bashrc", F, None), (u(".bash\u200crc"), F, None)]),
        ("symlink-parent", [(b"x", L, b"etc"), (b"x/passwd", F, None)]),
        ("symlink-parent-tree-first", [(b"x/y/z", F, None), (b"x/y", L, b"z")]),
        ("symlink-parent-case", [(b"X", L, b"etc"), (b"x/passwd", F, None)]),
        ("file-parent", [(b"x", F, None), (b"x/y", F, None)]),
        (
            "symlink-chain-into-gnupg",
            [(b"a/b", L, b".."), (b"c", L, b"a/b/.gnupg")],
        ),
        (
            "symlink-chain-into-agent-state",
            [(b"l", L, b".local"), (b"m", L, b"l/share/qgitconf/state")],
        ),
        ("symlink-loop", [(b"x", L, b"y"), (b"y", L, b"x")]),
        ("symlink-self-loop", [(b"x", L, b"x")]),
        *[(name, entries) for name, entries, _via in REDIRECTED_CODE_DIRS],
    ],
)
def test_check_tree_refuses(name: str, entries: list[tuple[bytes, int, bytes | None]]) -> None:
    with pytest.raises(UnsafePathError):
        check_tree(entries, DEFAULT)


# --- accepted entries ----------------------------------------------------------------

BENIGN: list[tuple[str, bytes, int, bytes | None, PathRules]] = [
    ("bashrc", b".bashrc", F, None, DEFAULT),
    ("bashrc-narrow", b".bashrc", F, None, NARROW),
    ("git-config", b".config/git/config", F, None, DEFAULT),
    ("git-config-narrow", b".config/git/config", F, None, NARROW),
    ("git-config-deep-narrow", b".config/git/a/b/c", F, None, NARROW),
    ("tree-outside-allowlist", b".config", T, None, NARROW),
    ("tree-config", b".config/git", T, None, NARROW),
    ("executable", b".vimrc", X, None, DEFAULT),
    ("symlink", b".vim", L, b".config/vim", DEFAULT),
    ("symlink-up", b"a/b/link", L, b"../c", DEFAULT),
    ("symlink-up-to-home", b"a/b", L, b"..", DEFAULT),
    ("symlink-up-two", b"a/b/c", L, b"../../d/e", DEFAULT),
    ("symlink-to-config-dir", b"x", L, b".config", DEFAULT),
    ("symlink-dotfile-target", b"x", L, b".gitconfig", DEFAULT),
    ("unicode", u("caf\u00e9.txt"), F, None, DEFAULT),
    ("unicode-cjk", u("\u65e5\u672c.conf"), F, None, DEFAULT),
    ("gitconfig", b".gitconfig", F, None, DEFAULT),
    ("gitignore", b".gitignore", F, None, DEFAULT),
    ("gitmodules-file", b".gitmodules", F, None, DEFAULT),
    ("git", b"git", F, None, DEFAULT),
    ("git-dir", b"src/git/x", F, None, DEFAULT),
    ("github", b".github/x", F, None, DEFAULT),
    ("git-tilde-2", b"git~2", F, None, DEFAULT),
    ("dotgitx", b".gitx", F, None, DEFAULT),
    ("three-dots", b"...", F, None, DEFAULT),
    ("config-other", b".config/qgitconfx/a", F, None, DEFAULT),
    ("gnupg-like", b".gnupg2/x", F, None, DEFAULT),
    ("local-share-other", b".local/share/applications/x.desktop", F, None, DEFAULT),
    ("config-tree", b".config", T, None, DEFAULT),
    ("local-share-tree", b".local/share", T, None, DEFAULT),
    ("colon", b"a:b", F, None, DEFAULT),
    ("space", b"my file", F, None, DEFAULT),
    ("exactly-max-depth", b"/".join([b"d"] * 64), F, None, DEFAULT),
    ("exactly-max-bytes", b"a" * 100, F, None, PathRules(max_path_bytes=100)),
    ("exactly-name-max", b"a" * 255, F, None, DEFAULT),
    ("exactly-name-max-utf8", u("\u00e9" * 127) + b"a", F, None, DEFAULT),
    ("exactly-path-max", b"/".join([b"a" * 255] * 15), F, None, DEFAULT),
    ("bin-tool", b"bin/mytool", X, None, DEFAULT),
    ("bin-git-subcommand", b"bin/git-foo", X, None, DEFAULT),
    ("bin-gpg-suffix", b"bin/gpg2x", X, None, DEFAULT),
    ("bin-pythonista", b"bin/pythonista", X, None, DEFAULT),
    ("local-bin-tool", b".local/bin/tool", X, None, DEFAULT),
    ("gpg-outside-path-dirs", b"tools/gpg", X, None, DEFAULT),
    ("bin-deeper", b"bin/sub/gpg", X, None, DEFAULT),
    ("local-lib-other", b".local/lib/node_modules/x.js", F, None, DEFAULT),
    ("local-lib-tree", b".local/lib", T, None, DEFAULT),
    ("pam-environment-like", b".pam_environment.bak", F, None, DEFAULT),
    ("pam-environment-below", b"x/.pam_environment", F, None, DEFAULT),
    ("symlink-bin-dir", b"bin", L, b"dotfiles/bin", DEFAULT),
]


@pytest.mark.parametrize(
    ("path", "mode", "target", "rules"),
    [pytest.param(*case[1:], id=case[0]) for case in BENIGN],
)
def test_benign_entry_accepted(
    path: bytes, mode: int, target: bytes | None, rules: PathRules
) -> None:
    assert check_tree_entry(path, mode, rules, target) == path.decode("utf-8")


def test_check_symlink_target_returns_str() -> None:
    assert check_symlink_target("a/b/link", b"../c") == "../c"
    assert check_symlink_target(".vim", b".config/vim") == ".config/vim"


def test_check_component_returns_str() -> None:
    assert check_component(u("caf\u00e9")) == "caf\u00e9"
    assert check_component(b".gitconfig") == ".gitconfig"


def test_check_tree_accepts_a_home() -> None:
    entries: list[tuple[bytes, int, bytes | None]] = [
        (b".bashrc", F, None),
        (b".config", T, None),
        (b".config/git", T, None),
        (b".config/git/config", F, None),
        (b".config/vim", T, None),
        (b".config/vim/vimrc", F, None),
        (b".vim", L, b".config/vim"),
        (b".vimrc", L, b".vim/vimrc"),
        (b"bin", T, None),
        (b"bin/tool", X, None),
        (b"bin/again", L, b"../.vimrc"),
    ]
    assert check_tree(entries, DEFAULT) == [p.decode() for p, _, _ in entries]


def test_a_redirected_path_dir_keeps_other_executables() -> None:
    entries: list[tuple[bytes, int, bytes | None]] = [
        (b"bin", L, b"dotfiles/bin"),
        (b"dotfiles/bin/mytool", X, None),
        (b".local/lib", L, b"../lib"),
        (b"lib/node/x.js", F, None),
    ]
    assert check_tree(entries, DEFAULT) == [p.decode() for p, _, _ in entries]


def test_limits_fit_the_filesystem() -> None:
    assert NAME_MAX == 255
    assert MAX_HOME_PATH_BYTES == 4096 - 1 - 256


def test_check_tree_accepts_iterator() -> None:
    assert check_tree(iter([(b"a", F, None), (b"b", F, None)]), NARROW.__class__()) == ["a", "b"]


def test_constants() -> None:
    assert DENIED_PREFIXES == (".config/qgitconf", ".local/share/qgitconf", ".gnupg")
    assert frozenset({0o100644, 0o100755, 0o120000, 0o040000}) == ALLOWED_MODES
    rules = PathRules()
    assert (rules.allow, rules.max_path_bytes, rules.max_depth) == (("**",), 4096, 64)
    with pytest.raises(AttributeError):
        rules.max_depth = 1  # type: ignore[misc]


# --- globs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**", "a", True),
        ("**", "a/b/c", True),
        (".bashrc", ".bashrc", True),
        (".bashrc", ".bashrc.bak", False),
        (".bashrc", "x/.bashrc", False),
        ("*", ".bashrc", True),
        ("*", "a/b", False),
        ("*.conf", "x.conf", True),
        ("*.conf", "d/x.conf", False),
        ("?", "a", True),
        ("?", "ab", False),
        ("?", "/", False),
        (".config/git/**", ".config/git/config", True),
        (".config/git/**", ".config/git/a/b", True),
        (".config/git/**", ".config/git", True),
        (".config/git/**", ".config/gitx", False),
        (".config/git/**", ".config/gitx/config", False),
        ("**/*.sh", "x.sh", True),
        ("**/*.sh", "a/b/x.sh", True),
        ("**/*.sh", "a/b/x.py", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("a/**/**/b", "a/x/b", True),
        ("a.b", "axb", False),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/b/c", False),
    ],
)
def test_glob_matches_table(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


_NAME = st.text(alphabet="abcXYZ._-", min_size=1, max_size=6)
_PATH = st.lists(_NAME, min_size=1, max_size=5).map("/".join)


@given(_PATH)
def test_glob_literal_and_doublestar(path: str) -> None:
    assert glob_matches(path, path)
    assert glob_matches("**", path)
    parts = path.split("/")
    assert glob_matches("/".join(["*"] * len(parts)), path)
    assert not glob_matches("/".join(["*"] * (len(parts) + 1)), path)
    assert glob_matches(parts[0] + "/**", path)
    assert glob_matches("**/" + parts[-1], path)


@given(_PATH, _PATH)
def test_glob_literal_only_matches_itself(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) is (pattern == path)


@given(_PATH, _PATH)
def test_glob_prefix_doublestar(prefix: str, rest: str) -> None:
    assert glob_matches(prefix + "/**", prefix + "/" + rest)
    assert glob_matches("**/" + rest, prefix + "/" + rest)


# --- properties of check_component ---------------------------------------------------


def _looks_dotgit(name: str) -> bool:
    """An independent oracle for the dotgit variants (git's verify_path family)."""
    name = "".join(c for c in name if c not in HFS_IGNORABLE)
    name = name.split(":", 1)[0].rstrip(". ").lower()
    return name in (".git", "git~1")


@given(st.binary(max_size=24))
def test_check_component_only_raises_unsafe_path(name: bytes) -> None:
    try:
        check_component(name)
    except UnsafePathError as exc:
        assert exc.detail.startswith("'")


@given(st.one_of(st.binary(max_size=24), st.text(max_size=12).map(u)))
def test_accepted_component_is_clean(name: bytes) -> None:
    try:
        text = check_component(name)
    except UnsafePathError:
        return
    assert text.encode("utf-8") == name
    assert text not in ("", ".", "..")
    assert "/" not in text and "\\" not in text
    for ch in text:
        code = ord(ch)
        assert code >= 0x20 and code != 0x7F and not 0x80 <= code < 0xA0
        assert not 0x202A <= code <= 0x202E and not 0x2066 <= code <= 0x2069
    assert not _looks_dotgit(text)


@st.composite
def dotgit_variants(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from([".git", "git~1"]))
    chars = [c.upper() if draw(st.booleans()) else c for c in base]
    out = ""
    for ch in chars:
        out += "".join(draw(st.lists(st.sampled_from(HFS_IGNORABLE), max_size=2))) + ch
    out += draw(st.text(alphabet=". ", max_size=3))
    if draw(st.booleans()):
        out += ":" + draw(st.sampled_from(["", "$DATA", ":$INDEX_ALLOCATION", "x"]))
    return u(out)


@given(dotgit_variants())
def test_dotgit_variants_refused(name: bytes) -> None:
    with pytest.raises(UnsafePathError):
        check_component(name)
    with pytest.raises(UnsafePathError):
        check_tree_entry(b"a/" + name + b"/config", F, DEFAULT)


@given(st.lists(st.sampled_from(["..", "a", "b", ".", ""]), min_size=1, max_size=6))
def test_accepted_symlink_target_stays_inside_home(parts: list[str]) -> None:
    target = "/".join(parts)
    for link in ("x", "d/x", "d/e/x"):
        try:
            check_symlink_target(link, u(target))
        except UnsafePathError:
            continue
        # Resolve the way the kernel would (no symlinks on the way) and stay inside.
        stack = link.split("/")[:-1]
        for part in target.split("/"):
            if part == "..":
                assert stack, f"{link} -> {target} escapes $HOME"
                stack.pop()
            else:
                assert part not in ("", ".")
                stack.append(part)


@given(st.sampled_from(DENIED_PREFIXES), st.booleans(), st.booleans())
def test_denied_prefix_variants(prefix: str, upper: bool, trailing_dot: bool) -> None:
    parts = prefix.split("/")
    if upper:
        parts = [p.upper() for p in parts]
    if trailing_dot:
        parts[-1] += "."
    path = "/".join([*parts, "file"])
    with pytest.raises(UnsafePathError):
        check_tree_entry(u(path), F, DEFAULT)


def test_nfc_collision_key_is_not_fooled_by_nfd_only() -> None:
    # Same text after NFC: must be reported as a collision, not accepted twice.
    nfc = unicodedata.normalize("NFC", "\u00c5ngstr\u00f6m")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    with pytest.raises(UnsafePathError, match=re.escape("collides")):
        check_tree([(u(nfc), F, None), (u(nfd), F, None)], DEFAULT)
