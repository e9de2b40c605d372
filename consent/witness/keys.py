"""The witness's Ed25519 key: a 32-byte seed in a 0600 file, made on first start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.signing

__all__ = ["WitnessKeyError", "load_or_create_witness_key"]


class WitnessKeyError(Exception):
    """The witness key file is unusable (wrong size, or readable by other users)."""


def load_or_create_witness_key(path: Path) -> nacl.signing.SigningKey:
    """Load the seed at ``path``, or create it (mode 0600, written and fsynced) if absent.

    A key file that group or others can read is refused: whoever reads it can cosign
    any rollback in this witness's name.
    """
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise WitnessKeyError(
                f"witness key file {path} has mode {mode:04o}; run `chmod 600 {path}`"
            )
        seed = path.read_bytes()
        if len(seed) != 32:
            raise WitnessKeyError(f"witness key file {path} does not hold a 32-byte Ed25519 seed")
        return nacl.signing.SigningKey(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use that one
        return load_or_create_witness_key(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)
        handle.flush()
        os.fsync(handle.fileno())
    return nacl.signing.SigningKey(seed)
