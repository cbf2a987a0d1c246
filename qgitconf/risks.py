"""The risk report: changes that can run code or redirect trust (DESIGN "Review and risks").

Pure: it takes the changed files of an update (path, old and new git mode, old and new
content or symlink target) and returns findings.  It does no I/O, reads no clock and
no environment, so it can be tested with a table and called from Receive (auto-apply),
``review``, the GUI and ``apply --interactive`` alike.

Every rule is in :data:`RULES` with a stable id, a severity and a one-line
explanation; ``docs/risks.md`` documents each one.  Rules look only at *added or
changed* lines (a line-level diff of old against new; for git config, the key/value
entries of the new file that the old file did not have, so moving a key under another
section header counts as a change).  Deleting lines never produces a finding.

Severities: ``high`` - runs code or redirects trust without the user doing anything
unusual (auto-apply never applies these); ``medium`` - runs code when the user invokes
something, or weakens a safeguard; ``low`` - worth a look.

Everything a finding carries for display (path, excerpt) is passed through
:func:`~qgitconf.sanitize.sanitize` (rule 11).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qgitconf.sanitize import sanitize

__all__ = [
    "RULES",
    "SEVERITIES",
    "FileChange",
    "Finding",
    "Rule",
    "assess",
    "findings_for",
    "has_high",
    "summary",
    "symlink_aliases",
]

MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000

SEVERITIES = ("high", "medium", "low")

_EXCERPT = 120
"""Longest excerpt of a matched line shown, in characters."""

_MAX_DIFF_LINES = 50_000
"""Above this many lines a file is not line-diffed: every new line counts as added
(more findings, never fewer) and difflib's quadratic worst case is avoided."""


@dataclass(frozen=True)
class Rule:
    """One entry of the rule table."""

    id: str
    severity: str
    explanation: str


def _rules(*items: tuple[str, str, str]) -> dict[str, Rule]:
    return {i: Rule(i, s, e) for i, s, e in items}


RULES: dict[str, Rule] = _rules(
    # -- files that run, or are run by something that starts on its own -----------------
    ("executable-file", "medium", "a file is added or made executable"),
    (
        "executable-in-path",
        "high",
        "an executable in a directory on $PATH can shadow a command you type",
    ),
    ("shell-startup", "high", "shell startup files run as code in every new shell"),
    ("x-session", "high", "X session files run as code when the session starts"),
    ("autostart-entry", "high", "autostart entries run a program at every login"),
    ("systemd-user-unit", "high", "systemd user units run programs as you, often at login"),
    (
        "environment-d",
        "high",
        "environment.d and ~/.pam_environment set variables for every program of the session",
    ),
    (
        "desktop-entry",
        "medium",
        "a .desktop entry's Exec= line decides what runs when you open an application",
    ),
    # -- shell lines ---------------------------------------------------------------------
    ("shell-path-override", "high", "PATH is changed: commands you type may run other programs"),
    ("shell-preload", "high", "LD_PRELOAD/LD_LIBRARY_PATH/LD_AUDIT load code into every program"),
    (
        "shell-code-env",
        "medium",
        "a variable that makes another program run code (BASH_ENV, PYTHONSTARTUP, GIT_SSH...)",
    ),
    (
        "shell-alias-override",
        "high",
        "an alias or function replaces a common command (sudo, git, ssh, ls...)",
    ),
    # -- git config ----------------------------------------------------------------------
    ("git-alias-shell", "high", "a git alias starting with '!' runs a shell command"),
    ("git-command", "high", "a git config key that makes git run a program"),
    ("git-include", "high", "include.path/includeIf pull in configuration from another file"),
    ("git-url-rewrite", "high", "url.*.insteadOf silently sends git to another server"),
    ("git-proxy", "medium", "a proxy sees (and may alter) git's network traffic"),
    ("git-tls", "medium", "TLS verification is turned off or another CA is trusted"),
    (
        "git-attributes",
        "medium",
        "git attributes select filter, diff or merge drivers (which run programs)",
    ),
    # -- ssh -------------------------------------------------------------------------------
    ("ssh-proxy-command", "high", "ssh ProxyCommand runs a program for every connection"),
    ("ssh-local-command", "high", "ssh LocalCommand/PermitLocalCommand run a program locally"),
    ("ssh-known-hosts-command", "high", "ssh KnownHostsCommand runs a program to list host keys"),
    ("ssh-match-exec", "high", "ssh 'Match exec' runs a program while reading the config"),
    ("ssh-provider", "high", "PKCS11Provider/SecurityKeyProvider load a library into ssh"),
    (
        "ssh-weakened",
        "medium",
        "host key checking, known_hosts, agent forwarding or Include changed",
    ),
    ("ssh-authorized-keys", "high", "authorized_keys decides who may log in to this qube"),
    # -- editors ---------------------------------------------------------------------------
    ("vim-shell-command", "high", "a vim/neovim line that runs a shell command"),
    (
        "vim-option",
        "medium",
        "a vim option that runs programs or reads code from files (shell, exrc, modeline)",
    ),
    # -- what the diff cannot show --------------------------------------------------------
    ("symlink", "low", "a symlink is added or retargeted: the config is read from elsewhere"),
    ("binary-file", "medium", "binary content cannot be reviewed in a text diff"),
    (
        "hidden-characters",
        "high",
        "control, bidirectional or invisible characters can hide what a line really does",
    ),
)


@dataclass(frozen=True)
class FileChange:
    """One changed path of an update.

    Attributes:
        path: ``$HOME``-relative path (as in the tree).
        old_mode: git mode before (``None``: the path is new).
        new_mode: git mode after (``None``: the path is removed).
        old: content before, or the symlink target.
        new: content after, or the symlink target.
    """

    path: str
    old_mode: int | None
    new_mode: int | None
    old: bytes = b""
    new: bytes = b""


@dataclass(frozen=True)
class Finding:
    """A rule that matched: where, and the sanitised excerpt that matched."""

    rule: str
    severity: str
    path: str  # sanitised
    line: int | None  # 1-based line of the new content, None for the file as a whole
    text: str  # sanitised excerpt, or a short description
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "text": self.text,
            "explanation": self.explanation,
        }

    def render(self) -> str:
        """One line for a terminal, e.g. ``HIGH   git-command  .gitconfig:3  core.pager=...``."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        text = f"  {self.text}" if self.text else ""
        return f"{self.severity.upper():<6} {self.rule}  {where}{text}  -- {self.explanation}"


# -- helpers ----------------------------------------------------------------------------


def _excerpt(text: str) -> str:
    shown = sanitize(text.strip())
    return shown if len(shown) <= _EXCERPT else shown[: _EXCERPT - 3] + "..."


def _is_binary(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _lines(data: bytes) -> list[str]:
    # Not splitlines(): it also splits at \r, \x1c..\x1e, \x85 and U+2028, which are
    # exactly the characters the hidden-characters rule must see inside a line.
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _added(old: Sequence[str], new: Sequence[str]) -> list[int]:
    """0-based indexes of the lines of ``new`` that are added or changed."""
    if not old:
        return list(range(len(new)))
    if len(old) > _MAX_DIFF_LINES or len(new) > _MAX_DIFF_LINES:
        return list(range(len(new)))
    out: list[int] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            out.extend(range(j1, j2))
    return out


def _hidden(ch: str) -> bool:
    if ch in "\t\n":
        return False
    return sanitize(ch) != ch or unicodedata.category(ch) in ("Cf", "Cc", "Zl", "Zp")


def _match(path: str, patterns: Iterable[str]) -> bool:
    # fnmatch's '*' crosses '/', which is what these patterns want (e.g. systemd/user/*).
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# -- path classes -------------------------------------------------------------------------

SHELL_STARTUP = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_aliases",
    ".bashrc.d/*",
    ".profile",
    ".profile.d/*",
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".zlogout",
    ".zshrc.d/*",
    ".oh-my-zsh/custom/*",
    ".kshrc",
    ".mkshrc",
    ".cshrc",
    ".tcshrc",
    ".login",
    ".logout",
    ".config/fish/config.fish",
    ".config/fish/conf.d/*",
    ".config/fish/functions/*",
    ".config/zsh/*",
    ".config/bash/*",
    ".aliases",
    ".shell_aliases",
    ".functions",
    ".exports",
)
X_SESSION = (
    ".xinitrc",
    ".xsession",
    ".xsessionrc",
    ".xprofile",
    ".xserverrc",
    ".Xsession",
    ".config/openbox/autostart",
    ".config/i3/config",
    ".config/sway/config",
    ".config/hypr/hyprland.conf",
)
AUTOSTART = (
    ".config/autostart/*",
    ".config/autostart-scripts/*",
    ".config/plasma-workspace/env/*",
    ".config/plasma-workspace/shutdown/*",
    ".kde/Autostart/*",
    ".kde4/Autostart/*",
    ".config/lxsession/*/autostart",
)
SYSTEMD_USER = (
    ".config/systemd/user/*",
    ".local/share/systemd/user/*",
)
ENVIRONMENT_D = (".config/environment.d/*", ".pam_environment")
DESKTOP_ENTRY = (".local/share/applications/*.desktop",)
PATH_DIRS = ("bin/*", ".local/bin/*", ".bin/*")
GITCONFIG = (
    ".gitconfig",
    ".gitconfig.*",
    "*.gitconfig",
    ".config/git/config",
    ".config/git/config.*",
    ".config/git/*.gitconfig",
    ".config/git/*.conf",
)
GITATTRIBUTES = (".gitattributes", ".config/git/attributes")
SSH_CONFIG = (".ssh/config", ".ssh/config.d/*", ".ssh/*.conf", ".ssh/conf.d/*")
VIM = (
    ".vimrc",
    ".gvimrc",
    ".exrc",
    "_vimrc",
    ".vim/*",
    ".config/nvim/*",
    ".config/vim/*",
    ".local/share/nvim/site/*",
)


def _is_shell(path: str) -> bool:
    return _match(path, SHELL_STARTUP) or _match(path, X_SESSION) or path.endswith(".sh")


# -- shell lines ------------------------------------------------------------------------

_COMMON_COMMANDS = _words(
    """sudo su doas pkexec ssh scp sftp rsync git gpg gpg2 ls cd cat rm cp mv ln chmod chown
    curl wget python python3 pip pip3 perl ruby node npm bash sh zsh fish env exec
    vim vi nvim nano emacs less more man echo printf grep find xargs tar unzip openssl
    apt apt-get dnf yum rpm dpkg flatpak snap passwd qvm-run qvm-copy qvm-move qvm-open-in-vm
    qvm-open-in-dvm qrexec-client-vm qubes-gpg-client qubes-gpg-client-wrapper qgitconf
    test which type command builtin source export alias unalias set unset trap eval read
    history clear exit logout kill ps top mount umount systemctl journalctl ssh-add
    ssh-keygen ssh-agent gpg-agent keepassxc pass"""
)

_ASSIGN = (
    r"(?:^|[\s;&|(])"
    r"(?:export\s+|declare\s+(?:-\w+\s+)*|typeset\s+(?:-\w+\s+)*|local\s+|readonly\s+)?"
)
_FISH_SET = r"(?:^|[\s;])set\s+(?:-[a-zA-Z]+\s+)*"


def _env_var_re(names: str) -> re.Pattern[str]:
    return re.compile(
        rf"{_ASSIGN}(?:{names})\+?=|{_FISH_SET}(?:{names})\b|^\s*(?:{names})\s*(?:=|DEFAULT=|OVERRIDE=)",
    )


_PATH_RE = re.compile(
    rf"{_ASSIGN}PATH\+?=|{_FISH_SET}(?:PATH|fish_user_paths)\b|\bfish_add_path\b|"
    r"^\s*PATH\s*(?:=|DEFAULT=|OVERRIDE=)|(?:^|[\s;])path\+?=\(|(?:^|[\s;])path\[\d*\]=",
)
_PRELOAD_RE = _env_var_re("LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT")
_CODE_ENV_RE = _env_var_re(
    "BASH_ENV|ENV|ZDOTDIR|PROMPT_COMMAND|PYTHONSTARTUP|PYTHONPATH|PYTHONHOME|PERL5OPT|PERL5LIB|"
    "NODE_OPTIONS|RUBYOPT|GIT_SSH|GIT_SSH_COMMAND|GIT_EXEC_PATH|GIT_ASKPASS|SSH_ASKPASS|"
    "GIT_CONFIG_GLOBAL|GIT_CONFIG_SYSTEM|GNUPGHOME|XDG_CONFIG_HOME|XDG_CONFIG_DIRS|"
    "XDG_DATA_DIRS|XDG_DATA_HOME|GTK_MODULES|GTK_PATH|QT_PLUGIN_PATH"
)
_ALIAS_RE = re.compile(
    r"(?:^|[\s;&|])alias\s+(?:-[a-zA-Z]+\s+)*(?:--\s+)?['\"]?([\w.+-]+)['\"]?(?:=|\s+)"
    r"(?:'([^']*)'|\"([^\"]*)\"|(\S*))"
)
_METACHARS = re.compile(r"[;|&$`<>()\\\n]")
_ABBR_RE = re.compile(r"(?:^|[\s;])abbr\s+(?:-[-a-zA-Z]+\s+)*([\w.+-]+)\s")
_FUNC_RE = re.compile(
    r"^\s*(?:function\s+([\w.+-]+)|([\w.+-]+)\s*\(\s*\)\s*(?:\{|\(|$))",
)


def _adds_options(m: re.Match[str]) -> bool:
    """``alias ls='ls --color=auto'``: the command itself with plain options added."""
    value = next((g for g in m.groups()[1:] if g is not None), "")
    words = value.split()
    return bool(words) and words[0] == m.group(1) and not _METACHARS.search(value)


def _shell_line(line: str) -> Iterator[str]:
    code = line.lstrip()
    if code.startswith("#"):
        return
    if _PATH_RE.search(line):
        yield "shell-path-override"
    if _PRELOAD_RE.search(line):
        yield "shell-preload"
    if _CODE_ENV_RE.search(line):
        yield "shell-code-env"
    names = [m.group(1) for m in _ALIAS_RE.finditer(line) if not _adds_options(m)]
    names += [m.group(1) for m in _ABBR_RE.finditer(line)]
    m = _FUNC_RE.match(line)
    if m:
        names.append(m.group(1) or m.group(2))
    if any(n in _COMMON_COMMANDS for n in names):
        yield "shell-alias-override"


# -- git config -------------------------------------------------------------------------


@dataclass(frozen=True)
class GitConfigEntry:
    """One ``section[.subsection].key = value`` of a git config file."""

    section: str  # lower case
    subsection: str | None  # case kept (git compares it case-sensitively)
    key: str  # lower case
    value: str | None  # None: a bare key (boolean true)
    line: int  # 1-based

    @property
    def name(self) -> str:
        sub = f".{self.subsection}" if self.subsection is not None else ""
        return f"{self.section}{sub}.{self.key}"


_SECTION_RE = re.compile(r'\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\\n]|\\.)*)")?\s*\]')
_KEY_RE = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*(=?)")


def _git_value(text: str) -> str:
    """A git config value: quotes removed, escapes resolved, inline comment dropped."""
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and i + 1 < len(text):
            i += 1
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(text[i], text[i]))
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
        i += 1
    return "".join(out).strip()


def parse_gitconfig(text: str) -> list[GitConfigEntry]:
    """Parse git config text leniently (never raises): sections, subsections, keys.

    A line git would refuse is skipped; so is everything after an unparsable header,
    which only loses findings in a file git itself would not read.
    """
    entries: list[GitConfigEntry] = []
    section: str | None = None
    subsection: str | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start = i
        raw = lines[i]
        i += 1
        rest = raw.strip()
        while rest.startswith("["):
            m = _SECTION_RE.match(rest)
            if m is None:
                section = None
                rest = ""
                break
            name = m.group(1)
            if m.group(2) is not None:
                section, subsection = name.lower(), re.sub(r"\\(.)", r"\1", m.group(2))
            elif "." in name:  # deprecated [section.subsection]: subsection lower-cased
                head, _, tail = name.partition(".")
                section, subsection = head.lower(), tail.lower()
            else:
                section, subsection = name.lower(), None
            rest = rest[m.end() :].strip()  # a key may follow the header on one line
        if not rest or rest[0] in "#;" or section is None:
            continue
        km = _KEY_RE.match(rest)
        if km is None:
            continue
        value: str | None = None
        if km.group(2):
            raw_value = rest[km.end() :]
            while raw_value.endswith("\\") and i < len(lines):  # continuation lines
                raw_value = raw_value[:-1] + lines[i]
                i += 1
            value = _git_value(raw_value)
        entries.append(GitConfigEntry(section, subsection, km.group(1).lower(), value, start + 1))
    return entries


_GIT_COMMAND_KEYS = frozenset(
    {
        ("core", "pager"),
        ("core", "editor"),
        ("core", "sshcommand"),
        ("core", "fsmonitor"),
        ("core", "hookspath"),
        ("core", "askpass"),
        ("core", "gitproxy"),
        ("credential", "helper"),
        ("diff", "external"),
        ("diff", "textconv"),
        ("diff", "command"),
        ("gpg", "program"),
        ("sequence", "editor"),
        ("pager", "*"),
        ("filter", "*"),
        ("merge", "driver"),
        ("difftool", "cmd"),
        ("mergetool", "cmd"),
        ("web", "browser"),
        ("browser", "cmd"),
        ("browser", "path"),
        ("man", "cmd"),
        ("man", "path"),
        ("sendemail", "smtpserver"),
        ("sendemail", "tocmd"),
        ("sendemail", "cccmd"),
        ("sendemail", "sendmailcmd"),
        ("uploadpack", "packobjectshook"),
        ("ssh", "variant"),
        ("ssh", "program"),
        ("interactive", "difffilter"),
        ("safe", "directory"),
    }
)


def _git_entry(e: GitConfigEntry) -> str | None:
    s, k = e.section, e.key
    if s == "alias":
        return "git-alias-shell" if (e.value or "").lstrip().startswith("!") else None
    if s == "include" and k == "path":
        return "git-include"
    if s == "includeif" and k == "path":
        return "git-include"
    if s == "url" and k in ("insteadof", "pushinsteadof"):
        return "git-url-rewrite"
    if s in ("http", "https") and k == "proxy":
        return "git-proxy"
    if s == "http" and k in ("sslverify", "sslcainfo", "sslcapath", "sslbackend", "sslcert"):
        return "git-tls"
    if s == "filter" or s == "pager":
        return "git-command"
    if s == "gpg" and k == "program":  # gpg.program and gpg.<format>.program
        return "git-command"
    if (s, k) in _GIT_COMMAND_KEYS:
        return "git-command"
    if s == "core" and k in ("sshcommand",):
        return "git-command"
    return None


def _git_findings(old: bytes, new: bytes) -> Iterator[tuple[str, int | None, str]]:
    before = Counter((e.name, e.value) for e in parse_gitconfig(_text(old)))
    for e in parse_gitconfig(_text(new)):
        if before[(e.name, e.value)] > 0:
            before[(e.name, e.value)] -= 1
            continue
        rule = _git_entry(e)
        if rule is not None:
            shown = e.name if e.value is None else f"{e.name} = {e.value}"
            yield rule, e.line, _excerpt(shown)


_ATTR_RE = re.compile(r"(?:^|\s)-?!?(?:filter|diff|merge|textconv)(?:=|\s|$)")


# -- ssh config ---------------------------------------------------------------------------

_SSH_KEYWORD_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*)$")
_SSH_RULES = {
    "proxycommand": "ssh-proxy-command",
    "localcommand": "ssh-local-command",
    "permitlocalcommand": "ssh-local-command",
    "knownhostscommand": "ssh-known-hosts-command",
    "pkcs11provider": "ssh-provider",
    "securitykeyprovider": "ssh-provider",
    "include": "ssh-weakened",
    "userknownhostsfile": "ssh-weakened",
    "globalknownhostsfile": "ssh-weakened",
    "forwardagent": "ssh-weakened",
    "identityagent": "ssh-weakened",
}


def _ssh_line(line: str) -> Iterator[str]:
    m = _SSH_KEYWORD_RE.match(line)
    if m is None or line.lstrip().startswith("#"):
        return
    key, value = m.group(1).lower(), m.group(2).strip()
    low = value.lower()
    if key == "match" and re.search(r"(?:^|\s)!?exec(?:\s|=|$)", low):
        yield "ssh-match-exec"
    elif key == "stricthostkeychecking":
        if low in ("no", "off", "accept-new"):
            yield "ssh-weakened"
    elif key == "forwardagent":
        if low not in ("no", "false"):
            yield "ssh-weakened"
    elif key == "permitlocalcommand":
        if low in ("yes", "true"):
            yield "ssh-local-command"
    elif key in _SSH_RULES and low not in ("none",):
        yield _SSH_RULES[key]


# -- vim ---------------------------------------------------------------------------------

_VIM_SHELL_RE = re.compile(
    # an ex command that starts with '!' (or :r !, :w !, :silent !, autocmd ... !, :{range}!)
    r"(?:^|(?<!\|)\|(?!\|)|:|<[Cc][Rr]>|\bsil(?:ent)?!?\s|\bexe(?:cute)?\s+['\"]"
    r"|\bau(?:tocmd)?!?\s[^\"]*?\s|\bvim\.cmd\s*\(?\s*(?:\[\[|['\"]))"
    r"\s*:?\s*(?:r(?:ead)?\s*|w(?:rite)?\s*|[.$%\d]*,?[.$\d]*)?!(?![=~])"
    # functions that start processes, in vimscript and in neovim's lua
    r"|\b(?:system|systemlist|jobstart|job_start|termopen|term_start|libcall|libcallnr)\s*\("
    r"|\bos\.execute\s*\(|\bio\.popen\s*\(|\bvim\.system\s*\(|\bvim\.(?:loop|uv)\.spawn\s*\("
    # :terminal and the ex commands that run another language's code
    r"|(?:^|(?<!\|)\|(?!\|)|:)\s*(?:ter(?:minal)?|py3?|python3?|pyx|pythonx|perl|ruby|rubydo"
    r"|perldo|py3do|pydo|pyxdo|luado|luafile|py3file|pyfile|rubyfile|perlfile|lua)\b(?!\s*=)",
)
_VIM_SET_RE = re.compile(r"(?:^|[|:]\s*)\s*(?:se|set|setl|setlocal|setg|setglobal)\s+(.*)$")
_VIM_LUA_OPT_RE = re.compile(r"\bvim\.(?:o|opt|go|bo|wo|opt_local|opt_global)\.(\w+)\s*[=:]")
_VIM_RISKY_OPTIONS = _words(
    """shell sh shellcmdflag shcf shellpipe sp shellredir srr makeprg mp grepprg gp keywordprg kp
    equalprg ep formatprg fp exrc ex modeline ml modelineexpr mle secure packpath pp runtimepath
    rtp diffexpr dex patchexpr pex"""
)


def _vim_line(line: str) -> Iterator[str]:
    code = line.strip()
    if not code or code.startswith('"') or (code.startswith("--") and "vim.cmd" not in code):
        return
    if _VIM_SHELL_RE.search(code):
        yield "vim-shell-command"
        return
    names = [m.group(1) for m in _VIM_LUA_OPT_RE.finditer(code)]
    m = _VIM_SET_RE.search(code)
    if m:
        for token in m.group(1).split('"')[0].split():
            names.append(re.split(r"[=:+^\-!&?<]", token, maxsplit=1)[0])
    if any(n in _VIM_RISKY_OPTIONS for n in names):
        yield "vim-option"


# -- the driver ---------------------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


@dataclass
class _Collector:
    change: FileChange
    found: list[Finding] = field(default_factory=list)

    def add(self, rule: str, line: int | None = None, text: str = "") -> None:
        r = RULES[rule]
        self.found.append(
            Finding(r.id, r.severity, sanitize(self.change.path), line, text, r.explanation)
        )


LineCheck = Callable[[str], Iterable[str]]


def _line_rules(c: _Collector, added: list[tuple[int, str]], check: LineCheck) -> None:
    for n, line in added:
        for rule in dict.fromkeys(check(line)):  # one finding per rule and line
            c.add(rule, n, _excerpt(line))


def _whole_file(c: _Collector, rule: str, added: list[tuple[int, str]], binary: bool) -> None:
    """One finding for the file: its first added line that is not blank or a comment."""
    if binary:
        c.add(rule, None, "binary content")
        return
    code = [(n, s) for n, s in added if s.strip() and not s.lstrip().startswith(("#", ";", '"'))]
    if code:
        n, s = code[0]
        more = f" (+{len(code) - 1} more lines)" if len(code) > 1 else ""
        c.add(rule, n, _excerpt(s) + more)
    elif added and c.change.old_mode is None:
        c.add(rule, None, "new file")


_PATH_CLASSES = (
    (SHELL_STARTUP, "shell-startup"),
    (X_SESSION, "x-session"),
    (AUTOSTART, "autostart-entry"),
    (SYSTEMD_USER, "systemd-user-unit"),
    (ENVIRONMENT_D, "environment-d"),
    (DESKTOP_ENTRY, "desktop-entry"),
    (("*authorized_keys", "*authorized_keys2"), "ssh-authorized-keys"),
)


def findings_for(change: FileChange, aliases: Sequence[str] = ()) -> list[Finding]:
    """Every finding for one changed path; none for a removal.

    Args:
        change: the changed path.
        aliases: other paths of the new tree that lead to this one through symlinks
            (``.bashrc -> notes/shell``): the path rules apply to them as well, so a
            startup file cannot hide behind an innocent name.
    """
    c = _Collector(change)
    if change.new_mode is None:
        return c.found
    path = change.path
    names = [path, *aliases]
    if any(_hidden(ch) for ch in path):
        c.add("hidden-characters", None, "in the file name")
    if change.new_mode == MODE_SYMLINK:
        target = _text(change.new)
        if change.old_mode != MODE_SYMLINK or change.old != change.new:
            c.add("symlink", None, "-> " + _excerpt(target))
            for patterns, rule in _PATH_CLASSES:
                if _match(path, patterns):
                    c.add(rule, None, "now a symlink -> " + _excerpt(target))
        if any(_hidden(ch) for ch in target):
            c.add("hidden-characters", None, "in the symlink target")
        return c.found
    if change.new_mode == MODE_EXECUTABLE and change.old_mode != MODE_EXECUTABLE:
        rule = "executable-in-path" if _match(path, PATH_DIRS) else "executable-file"
        c.add(rule, None, "mode 100755")
    elif (
        change.new_mode == MODE_EXECUTABLE and _match(path, PATH_DIRS) and change.old != change.new
    ):
        c.add("executable-in-path", None, "content changed")
    binary = _is_binary(change.new)
    added: list[tuple[int, str]] = []
    if binary:
        if change.old != change.new:
            c.add("binary-file", None, f"{len(change.new)} bytes")
    else:
        old_lines = [] if change.old_mode in (None, MODE_SYMLINK) else _lines(change.old)
        new_lines = _lines(change.new)
        added = [(i + 1, new_lines[i]) for i in _added(old_lines, new_lines)]
        for n, line in added:
            if any(_hidden(ch) for ch in line.rstrip("\r")):
                c.add("hidden-characters", n, _excerpt(line))
    if not added and not (binary and change.old != change.new):
        return c.found  # a mode-only change, or only lines removed
    for patterns, rule in _PATH_CLASSES:
        if any(_match(p, patterns) for p in names):
            _whole_file(c, rule, added, binary)
    if binary:
        return c.found
    if any(_is_shell(p) or _match(p, ENVIRONMENT_D) for p in names):
        _line_rules(c, added, _shell_line)
    if any(_match(p, GITCONFIG) for p in names):
        old = change.old if change.old_mode not in (None, MODE_SYMLINK) else b""
        for rule, line_no, text in _git_findings(old, change.new):
            c.add(rule, line_no, text)
    if any(_match(p, GITATTRIBUTES) or _basename(p) == ".gitattributes" for p in names):
        _line_rules(c, added, lambda s: ["git-attributes"] if _ATTR_RE.search(s) else [])
    if any(_match(p, SSH_CONFIG) for p in names):
        _line_rules(c, added, _ssh_line)
    if any(_match(p, VIM) for p in names):
        _line_rules(c, added, _vim_line)
    return c.found


def _resolve(link: str, target: str) -> str | None:
    """Where ``link -> target`` points, as a $HOME-relative path (lexically)."""
    if target.startswith("/"):
        return None
    parts = link.split("/")[:-1]
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(comp)
    return "/".join(parts)


def symlink_aliases(links: Mapping[str, str], path: str, hops: int = 8) -> list[str]:
    """Paths of the tree that reach ``path`` through the symlinks ``links`` (path -> target)."""
    found: list[str] = []
    frontier = [path]
    for _ in range(hops):
        nxt: list[str] = []
        for p in frontier:
            for link, target in links.items():
                dest = _resolve(link, target)
                if dest is None:
                    continue
                if p == dest:
                    alias = link
                elif p.startswith(dest + "/"):
                    alias = link + p[len(dest) :]
                else:
                    continue
                if alias not in found and alias != path:
                    found.append(alias)
                    nxt.append(alias)
        if not nxt:
            break
        frontier = nxt
    return found


def assess(changes: Iterable[FileChange], links: Mapping[str, str] | None = None) -> list[Finding]:
    """The risk report for an update: every finding, in path order.

    Args:
        changes: the changed paths.
        links: every symlink of the new tree (path -> target), so rules also apply to
            a file reached through a symlink with a sensitive name.
    """
    out: list[Finding] = []
    for change in sorted(changes, key=lambda ch: ch.path):
        aliases = symlink_aliases(links, change.path) if links else []
        out.extend(findings_for(change, aliases))
    return out


def has_high(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "high" for f in findings)


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    """Counts per severity, e.g. ``{"high": 2, "medium": 0, "low": 0}``."""
    counts = Counter(f.severity for f in findings)
    return {s: counts.get(s, 0) for s in SEVERITIES}
