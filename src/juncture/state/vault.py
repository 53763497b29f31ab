"""Secrets at rest: AES-256-GCM, the key in `.juncture/secret.key` (mode 0600) or `JUNCTURE_SECRET_KEY`.

Each value is sealed with a fresh 96-bit nonce and its namespace and key as associated data, so a sealed
value copied to another key of the database does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat

from ..errors import JunctureError

__all__ = ["KEY_ENV", "StateError", "Vault", "load_vault"]

KEY_ENV = "JUNCTURE_SECRET_KEY"
KEY_FILE = "secret.key"
_NONCE = 12


class StateError(JunctureError):
    """The project's state (database, secret key, an outputs file) cannot be used as it is."""


class Vault:
    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only when secrets are touched

        self._aead = AESGCM(key)

    def seal(self, ns: str, key: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, value.encode(), f"{ns}\0{key}".encode())

    def open(self, ns: str, key: str, sealed: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], f"{ns}\0{key}".encode()).decode()
        except InvalidTag:
            raise StateError(
                f"secret {ns}/{key} does not open with this key (another project's key, or "
                f"{KEY_ENV} set to a different one)"
            ) from None


def load_vault(state_dir: str, create: bool) -> Vault | None:
    """The project's vault; None when it has no key yet and `create` is false."""
    text = os.environ.get(KEY_ENV)
    where = f"${KEY_ENV}"
    path = os.path.join(state_dir, KEY_FILE)
    if text is None:
        where = path
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if not create:
                return None
            key = _new_key(path)
            if key is not None:
                return Vault(key)
            info = os.stat(path)  # another process made the key first: use theirs
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StateError(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: a secret key must be private "
                f"(chmod 600 {path})"
            )
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError as exc:
            raise StateError(f"{path}: cannot read the secret key: {exc.strerror}") from None
    try:
        key = base64.urlsafe_b64decode(text.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise StateError(f"{where}: not a juncture secret key (base64 of 32 bytes)")
    return Vault(key)


def _new_key(path: str) -> bytes | None:
    """A new key in `path`, or None when another process put its own there first.

    The key is written and synced to a private temporary file, then hard-linked into place: `path`
    never exists incomplete, and of processes racing to create it, exactly one link succeeds.
    """
    import tempfile

    key = os.urandom(32)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=".secret.key.", dir=directory)  # 0600
    except OSError as exc:
        raise StateError(f"{exc.filename or path}: cannot create the secret key: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(key).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:
            return None
        _sync_directory(directory)  # the new name survives a crash, or a second key could be made
        return key
    except OSError as exc:
        raise StateError(f"{path}: cannot create the secret key: {exc.strerror}") from None
    finally:
        os.unlink(staged)


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
