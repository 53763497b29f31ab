"""The shell script that runs one hook on a host or in a container. Pure functions.

The script goes to `sh -s` on standard input, so neither the environment (which may hold secrets) nor the
hook's text ever appears on a command line. It uploads the hook's file into a private directory when the
target has not got it yet, reports its process group on stderr (the shell is the group's leader: sshd
starts every session with setsid, and `exec sh -s` keeps that process), then execs the hook with its own
`#!` interpreter, standard input from /dev/null and standard error joined to standard output.
"""

from __future__ import annotations

__all__ = ["NOT_STARTED", "PGID_MARK", "Upload", "file_argv", "hook_script", "interpreter_of", "quote"]

PGID_MARK = b"juncture-pgid "
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
    """A local file's bytes, placed in the target's private directory as `name` (its content hash)."""

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


def hook_script(
    argv: list[str | Upload],
    env: dict[str, str],
    cwd: str | None,
    directory: str,
    send: list[Upload],
) -> bytes:
    """Run `argv` (an Upload in it is its file in the private directory); `send` are the uploads the
    target has not got yet. A file without a `#!` line is made executable and run directly."""
    lines = [f"D={quote(directory)}"]  # the directory is 0700: no umask games that the hook would inherit
    if send:
        lines.append(
            'mkdir -m 700 "$D" 2>/dev/null || [ -d "$D" ] || '
            f'{{ echo "juncture: cannot create $D"; exit {NOT_STARTED}; }}'
        )
        for upload in send:
            lines.append(
                f"printf '%b' {_printf_word(upload.data)} > \"$D/{upload.name}\" || exit {NOT_STARTED}"
            )
    if argv and isinstance(argv[0], Upload):
        lines.append(f'chmod 700 "$D/{argv[0].name}" || exit {NOT_STARTED}')
    lines.append(f"echo {PGID_MARK.decode()}$$ >&2")
    lines.append("exec 2>&1")
    lines += [f"export {key}={quote(value)}" for key, value in env.items()]
    if cwd:
        lines.append(f"cd {quote(cwd)} || exit {NOT_STARTED}")
    words = [f'"$D/{arg.name}"' if isinstance(arg, Upload) else quote(arg) for arg in argv]
    lines.append("exec " + " ".join(words) + " </dev/null")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def file_argv(upload: Upload) -> list[str | Upload]:
    """A hook file runs by its `#!` interpreter, as the kernel would run it; without one, directly."""
    interpreter = interpreter_of(upload.data)
    return [*interpreter, upload] if interpreter else [upload]
