"""Secrets from files only their owner can read: never from argv, which ``ps`` shows.

The one reader of such files for the consent service, the ServerApp and the dashboard,
and the one keeper of the Ed25519 seed files of the log and the witness.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["SecretFileError", "load_or_create_seed_file", "read_secret_file"]

_SEED_BYTES = 32


class SecretFileError(ValueError):
    """The secret file is missing, empty, or readable by others; the message says which."""


def read_secret_file(path: Path) -> str:
    """The first line of ``path``, if only its owner may access it (0600 or 0400).

    Refuses a file that the group or others can access, as ssh does with private keys.
    """
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise SecretFileError(f"cannot read the secret file {path}: {error.strerror}") from error
    if not stat.S_ISREG(mode):
        raise SecretFileError(f"the secret file {path} is not a regular file")
    if mode & 0o077:
        raise SecretFileError(
            f"the secret file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
            f"chmod 600 {path}"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SecretFileError(f"cannot read the secret file {path}: {error}") from error
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise SecretFileError(f"the secret file {path} is empty")
    return secret


def load_or_create_seed_file(path: Path, *, name: str) -> bytes:
    """The 32-byte Ed25519 seed in ``path``; made (mode 0600, written and fsynced) if absent.

    ``name`` ("log key file") starts every error message. A file the group or others can
    access is refused, naming the ``chmod``: whoever reads the seed signs in its owner's
    name. Of two processes creating the file at once, the second uses the first one's seed.
    """
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretFileError(f"{name} {path} has mode {mode:04o}; run `chmod 600 {path}`")
        seed = path.read_bytes()
        if len(seed) != _SEED_BYTES:
            raise SecretFileError(f"{name} {path} does not hold a 32-byte Ed25519 seed")
        return seed
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(_SEED_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use that one
        return load_or_create_seed_file(path, name=name)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)
        handle.flush()
        os.fsync(handle.fileno())
    return seed
