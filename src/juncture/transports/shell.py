"""The shell text that runs hooks on a host or in a container. Pure functions.

Everything goes to `sh -s` on standard input, so neither the environment (which may hold secrets) nor the
hook's text ever appears on a command line. On a host, a *worker* shell (`worker_prelude`) runs requests
one after another (`hook_request`, `script_request`); in a local container each hook gets a session of
its own (`hook_script`). Either way the shell first makes one private directory (`mktemp -d`: 0700, a
fresh name, never a file someone else planted) and keeps every file of the run inside it; it reports its
process group and that directory on stderr (it leads the group: sshd and runc start every session with
setsid, and `exec sh -s` keeps that process). The hook runs by its own `#!` interpreter with standard
input from /dev/null and standard error joined to standard output.

While a hook runs, a *lifeline* subshell reads the session's standard input, where nothing comes until
the hook ends: end of file there means juncture is gone (killed, or its connection lost), and the
lifeline then ends the hook as a timeout would (TERM to the group and to the hook's token, the grace,
KILL) and removes the private directory. The first session of a run on a target, as it ends, removes the
directories of this user's sessions that died without cleaning up (host rebooted, shell killed): their
shell's pid no longer holds the directory's pid file open.
"""

from __future__ import annotations

from .reaper import TOKEN

__all__ = [
    "NOT_STARTED",
    "OUTPUTS",
    "PGID_MARK",
    "TOKEN",
    "Upload",
    "file_argv",
    "hook_request",
    "hook_script",
    "interpreter_of",
    "kill_script",
    "private_directory",
    "quote",
    "script_request",
    "worker_prelude",
]

PGID_MARK = b"juncture-pgid "  # then the group, a space and the private directory
OUTPUTS = (
    "\0outputs"  # an environment value naming the hook's outputs file on the target (no NUL in a real one)
)
NOT_STARTED = 125  # the exit code when the hook could not be started on the target
_TEMPLATE = "/tmp/juncture-XXXXXXXXXX"


def quote(text: str | bytes) -> str:
    """A single-quoted shell word; newlines, `$`, quotes and backslashes arrive intact."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _printf_word(data: bytes) -> str:
    """`data` for `printf '%b'`: backslashes and NULs escaped (shell words cannot hold a NUL)."""
    escaped = data.replace(b"\\", b"\\\\").replace(b"\0", b"\\0000")
    return quote(escaped)


def private_directory(text: str) -> str | None:
    """`text` if it is a directory name `mktemp -d` made from our template, else None (never removed)."""
    name = text[len(_TEMPLATE) - 10 :]
    if text.startswith(_TEMPLATE[:-10]) and len(name) == 10 and name.isascii() and name.isalnum():
        return text
    return None


class Upload:
    """A local file's bytes, written on the target as `DIR/name` (`name` is its content hash)."""

    def __init__(self, data: bytes) -> None:
        import hashlib

        self.data = data
        self.name = hashlib.sha1(data).hexdigest()[:20]


def interpreter_of(data: bytes) -> tuple[str, ...] | None:
    """The `#!` program and its one optional argument, as the kernel reads them; None without one."""
    if not data.startswith(b"#!"):
        return None
    line = data[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return tuple(line.split(None, 1)) or None


# K SIGNAL: signal every process whose environment holds the hook's token, T (a child that called setsid
# left the group, not the environment); KILL scans again while some are found. The shell running it must
# not carry the token itself (it is never exported outside the hook).
_K = (
    'K() { [ -n "$T" ] || return 0; for i in 1 2 3; do '
    f'P=$(grep -lszxF "{TOKEN}=$T" /proc/[0-9]*/environ); [ -n "$P" ] || break; '
    "for f in $P; do f=${f#/proc/}; kill -$1 ${f%/environ} 2>/dev/null; done; "
    '[ "$1" = KILL ] || break; done; }'
)


def kill_script(signal: str, pgid: int | None, token: str | None, directory: str | None) -> str:
    """Shell text that sends `signal` to the hook's group and its token's processes, then removes its
    private directory."""
    parts = []
    if pgid is not None:
        parts.append(f"kill -{signal} -{pgid} 2>/dev/null")  # the shell's kill: see tests/servers.py
    if token:
        parts += [f"T={quote(token)}", _K, f"K {signal}"]
    if directory is not None:
        parts.append(f"rm -rf {quote(directory)}")
    return "; ".join(parts) or "true"


def _session_lines(sweep: bool) -> list[str]:
    """The start of every session: the private directory, removed on exit, reported with the group, and
    the lifeline's functions. The directory's pid file stays open as fd 9 while the shell lives: a live
    session is one whose pid holds that very file (a reused pid does not). With `sweep`, the session
    also removes, as it ends (after the run's work), the directories of this user's dead sessions."""
    lines = [
        f"set -- $(umask; mktemp -d {_TEMPLATE})",  # one subshell for both
        f'U=$1 D=$2; [ -n "$D" ] || exit {NOT_STARTED}',
        "umask 077",
    ]
    if sweep:
        lines += [
            f"W() {{ for d in {_TEMPLATE[:-10]}??????????; do",
            '  [ "$d" != "$D" ] && [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ -f "$d/pid" ] &&',
            '    [ ! -L "$d/pid" ] && read -r p < "$d/pid" || continue',
            "  case $p in ''|*[!0-9]*) continue;; esac",
            '  [ "$d/pid" -ef "/proc/$p/fd/9" ] || rm -rf "$d"',
            "done; } </dev/null >/dev/null 2>&1",
            """trap 'rm -rf "$D"; W' EXIT""",
        ]
    else:
        lines.append("""trap 'rm -rf "$D"' EXIT""")
    return [
        *lines,
        "trap 'exit 143' TERM",
        "trap 'exit 129' HUP",
        # Opened (and created) before the pid is in it: a sweep never sees a pid not held yet.
        f'exec 9<> "$D/pid" && echo $$ >&9 || exit {NOT_STARTED}',
        f'echo "{PGID_MARK.decode()}$$ $D" >&2',
        _K,  # L: what the lifeline does at the end of file, with the request's token T and grace G
        'L() { trap "" TERM; kill -TERM -$$; K TERM; sleep "$G"; K KILL; rm -rf "$D"; kill -KILL -$$; }',
    ]


def _guarded(body: list[str], token: str | None, grace: float) -> list[str]:
    """`body` in a subshell, output and errors on stdout, its status in $S, under a lifeline. The whole
    is one compound command, read to its end before it runs: the lifeline cannot read a part of it."""
    return [
        "{",
        f"T={quote(token or '')} G={grace:g}",
        "{ IFS= read -r _ || L; } <&3 >/dev/null 2>&1 &",
        "R=$!",
        "(",
        *body,
        ") 3<&- 9<&- </dev/null 2>&1",
        "S=$?",
        "{ kill -KILL $R; wait $R; } 2>/dev/null",
    ]


def _run_lines(
    argv: list[str | Upload], env: dict[str, str], cwd: str | None, send: list[Upload]
) -> list[str]:
    """Write what the target lacks into the private directory, then export, cd and exec `argv` (an
    Upload in it is its file). A file without a `#!` line is made executable and run directly."""
    lines = ["set -C"]  # created exclusively: a name that exists is refused, never opened
    if OUTPUTS in env.values():  # a fresh file for each hook; read back by the worker after it
        lines.append(f': > "$D/out$N" || exit {NOT_STARTED}')
    for upload in send:
        lines.append(f"printf '%b' {_printf_word(upload.data)} > \"$D/{upload.name}\" || exit {NOT_STARTED}")
    lines.append('set +C; umask "$U"')
    if argv and isinstance(argv[0], Upload):
        lines.append(f'chmod 700 "$D/{argv[0].name}" || exit {NOT_STARTED}')
    lines += [
        f'export {key}="$D/out$N"' if value == OUTPUTS else f"export {key}={quote(value)}"
        for key, value in env.items()
    ]
    if cwd:
        lines.append(f"cd {quote(cwd)} || exit {NOT_STARTED}")
    words = [f'"$D/{arg.name}"' if isinstance(arg, Upload) else quote(arg) for arg in argv]
    lines.append("exec " + " ".join(words) + " </dev/null")
    return lines


def hook_script(
    argv: list[str | Upload],
    env: dict[str, str],
    cwd: str | None,
    send: list[Upload],
    grace: float,
    sweep: bool = False,
) -> bytes:
    """One hook in a session of its own, which ends with it. Its standard input must stay open while it
    runs: its end is the lifeline's signal."""
    lines = [*_session_lines(sweep), "N=", "exec 2>&1"]
    lines += _guarded(_run_lines(argv, env, cwd, send), env.get(TOKEN), grace)
    lines += ['exit "$S"', "} 3<&0"]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def worker_prelude(sweep: bool = False) -> bytes:
    """The start of a worker shell, a session that runs one request after another (see `worker_request`).

    It removes its private directory when it ends: at the end of its input, or on SIGTERM, which it gets
    (with the hook, its whole process group) when a hook times out. With `sweep`, it removes what dead
    sessions left."""
    return ("\n".join([*_session_lines(sweep), "N=0"]) + "\n").encode()


def worker_request(
    body: list[str], token: str, hook_token: str | None = None, grace: float = 0, outputs: bool = False
) -> bytes:
    """`body` in a subshell of the worker, output and errors on stdout, then `\\nTOKEN STATUS\\n` there:
    the end of this request's output, which no hook can forge (the token is random, per worker). With
    `outputs`, the hook's outputs file follows, up to `\\nTOKEN end\\n`: only a regular file of the
    private directory is read, never what a symlink or a FIFO put there points to."""
    lines = ["N=$((N+1))"] if outputs else []
    lines += _guarded(body, hook_token, grace)
    lines.append(f"printf '\\n%s %s\\n' {token} \"$S\"")
    if outputs:
        lines += [
            'F="$D/out$N"',
            'if [ -f "$F" ] && [ ! -L "$F" ] && [ -s "$F" ]; then cat "$F"; rm -f "$F"; fi',
            f"printf '\\n%s end\\n' {token}",
        ]
    lines.append("} 3<&0")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def hook_request(
    argv: list[str | Upload],
    env: dict[str, str],
    cwd: str | None,
    send: list[Upload],
    token: str,
    grace: float,
) -> bytes:
    outputs = OUTPUTS in env.values()
    return worker_request(_run_lines(argv, env, cwd, send), token, env.get(TOKEN), grace, outputs)


def script_request(script: str, token: str) -> bytes:
    """A built-in step's script, as a worker request (`eval`: a syntax error ends only the subshell),
    with the user's umask (releases are for others to read)."""
    return worker_request(['umask "$U"', f"eval {quote(script)}"], token)


def file_argv(upload: Upload) -> list[str | Upload]:
    """A hook file runs by its `#!` interpreter, as the kernel would run it; without one, directly."""
    interpreter = interpreter_of(upload.data)
    return [*interpreter, upload] if interpreter else [upload]
