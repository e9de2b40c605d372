"""The witness's Ed25519 key: a 32-byte seed in a 0600 file, made on first start."""

from __future__ import annotations

from pathlib import Path

import nacl.signing

from consent.secret_files import SecretFileError, load_or_create_seed_file

__all__ = ["WitnessKeyError", "load_or_create_witness_key"]


class WitnessKeyError(Exception):
    """The witness key file is unusable (wrong size, or readable by other users)."""


def load_or_create_witness_key(path: Path) -> nacl.signing.SigningKey:
    """Load the seed at ``path``, or create it (mode 0600, written and fsynced) if absent.

    A key file that group or others can read is refused: whoever reads it can cosign
    any rollback in this witness's name.
    """
    try:
        seed = load_or_create_seed_file(path, name="witness key file")
    except SecretFileError as error:
        raise WitnessKeyError(str(error)) from error
    return nacl.signing.SigningKey(seed)
