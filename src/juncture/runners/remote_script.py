"""The shell text that runs hooks on a host or in a container. Pure functions.

Everything goes to `sh -s` on standard input, so neither the environment (which may hold secrets) nor the
hook's text ever appears on a command line. On a host, a *worker* shell (`worker_prelude`) runs requests
one after another (`hook_request`, `script_request`); in a local container each hook gets a session of
its own (`hook_script`). Either way the shell reports its process group on stderr (it leads the group:
sshd starts every session with setsid, and `exec sh -s` keeps that process), the hook's file is written
as a private file when the target has not got it yet, and the hook runs by its own `#!` interpreter with
standard input from /dev/null and standard error joined to standard output.
"""

from __future__ import annotations

__all__ = [
    "NOT_STARTED",
    "OUTPUTS",
    "PGID_MARK",
    "Upload",
    "file_argv",
    "hook_request",
    "hook_script",
    "interpreter_of",
    "quote",
    "script_request",
    "worker_prelude",
]

PGID_MARK = b"juncture-pgid "
OUTPUTS = (
    "\0outputs"  # an environment value naming the hook's outputs file on the target (no NUL in a real one)
)
NOT_STARTED = 125  # the exit code when the hook could not be started on the target


def quote(text: str | bytes) -> str:
    """A single-quoted shell word; newlines, `$`, quotes and backslashes arrive intact."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _printf_word(data: bytes) -> str:
    """`data` for `printf '%b'`: backslashes and NULs escaped (shell words cannot hold a NUL)."""
    escaped = data.replace(b"\\", b"\\\\").replace(b"\0", b"\\0000")
    return quote(escaped)


class Upload:
    """A local file's bytes, written on the target as `PREFIX-name` (`name` is its content hash)."""

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


def _run_lines(
    argv: list[str | Upload], env: dict[str, str], cwd: str | None, send: list[Upload]
) -> list[str]:
    """Upload what the target lacks as private files `$D-NAME`, then export, cd and exec `argv` (an Upload
    in it is its file). A file without a `#!` line is made executable and run directly."""
    lines = []
    outputs = OUTPUTS in env.values()
    if send or outputs:
        # Files only this user can read, created exclusively (noclobber): no mkdir to pay for.
        lines.append("umask 077")
        if outputs:  # emptied for each hook; read back by the worker after it
            lines.append(f': > "$D-out" || exit {NOT_STARTED}')
        lines.append("set -C")
        for upload in send:
            lines.append(
                f"printf '%b' {_printf_word(upload.data)} > \"$D-{upload.name}\" || exit {NOT_STARTED}"
            )
        lines.append('set +C; umask "$U"')
    if argv and isinstance(argv[0], Upload):
        lines.append(f'chmod 700 "$D-{argv[0].name}" || exit {NOT_STARTED}')
    lines += [
        f'export {key}="$D-out"' if value == OUTPUTS else f"export {key}={quote(value)}"
        for key, value in env.items()
    ]
    if cwd:
        lines.append(f"cd {quote(cwd)} || exit {NOT_STARTED}")
    words = [f'"$D-{arg.name}"' if isinstance(arg, Upload) else quote(arg) for arg in argv]
    lines.append("exec " + " ".join(words) + " </dev/null")
    return lines


def hook_script(
    argv: list[str | Upload],
    env: dict[str, str],
    cwd: str | None,
    prefix: str,
    send: list[Upload],
) -> bytes:
    """One hook in a session of its own: the shell reports its group, then becomes the hook."""
    lines = [f"D={quote(prefix)}", "U=$(umask)", f"echo {PGID_MARK.decode()}$$ >&2", "exec 2>&1"]
    lines += _run_lines(argv, env, cwd, send)
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def worker_prelude(prefix: str) -> bytes:
    """The start of a worker shell, a session that runs one request after another (see `worker_request`).

    It removes its uploaded files when it ends: at the end of its input, or on SIGTERM, which it gets
    (with the hook, its whole process group) when a hook times out. Leading its session's group, it
    reports that group on stderr."""
    lines = [
        f"D={quote(prefix)}",
        "U=$(umask)",
        """trap 'rm -f "$D"-*' EXIT""",
        "trap 'exit 143' TERM",
        "trap 'exit 129' HUP",
        f"echo {PGID_MARK.decode()}$$ >&2",
    ]
    return ("\n".join(lines) + "\n").encode()


def worker_request(body: list[str], token: str, outputs: bool = False) -> bytes:
    """`body` in a subshell of the worker, output and errors on stdout, then `\\nTOKEN STATUS\\n` there:
    the end of this request's output, which no hook can forge (the token is random, per worker). With
    `outputs`, the hook's outputs file follows, up to `\\nTOKEN end\\n`."""
    lines = ["(", *body, ") </dev/null 2>&1", f"printf '\\n%s %s\\n' {token} \"$?\""]
    if outputs:
        lines += ['[ ! -s "$D-out" ] || cat "$D-out"', f"printf '\\n%s end\\n' {token}"]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def hook_request(
    argv: list[str | Upload], env: dict[str, str], cwd: str | None, send: list[Upload], token: str
) -> bytes:
    return worker_request(_run_lines(argv, env, cwd, send), token, OUTPUTS in env.values())


def script_request(script: str, token: str) -> bytes:
    """A built-in step's script, as a worker request (`eval`: a syntax error ends only the subshell)."""
    return worker_request([f"eval {quote(script)}"], token)


def file_argv(upload: Upload) -> list[str | Upload]:
    """A hook file runs by its `#!` interpreter, as the kernel would run it; without one, directly."""
    interpreter = interpreter_of(upload.data)
    return [*interpreter, upload] if interpreter else [upload]
