"""Secrets from files only their owner can read: never from argv, which ``ps`` shows.

The one reader of such files for the consent service, the ServerApp and the dashboard.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["SecretFileError", "read_secret_file"]


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
