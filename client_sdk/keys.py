"""The device's Ed25519 identity key, and the one way the SDK writes secrets to disk.

A device makes its own key pair (PyNaCl); the public half, base64url without padding, is
the ``device_key`` that identifies it on the consent ledger. Secrets (this key, the
diary key) are written by ``write_secret_file`` only: a small JSON document, created
with mode 0600, either holding the secret in the clear (rely on the OS sandbox) or sealed
with a passphrase (Argon2id key derivation + XSalsa20-Poly1305 ``SecretBox``).

>>> key = DeviceKey.generate()
>>> len(key.sign(b"hello")), len(key.verify_key_bytes)
(64, 32)
>>> DeviceKey.from_seed(bytes(32)).device_key
'O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik'
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import unicodedata
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.signing

from client_sdk.errors import (
    KeyFileError,
    PassphraseRequiredError,
    WrongPassphraseError,
)
from consent.encoding import b64url_decode, b64url_encode

__all__ = [
    "DEVICE_KEY_KIND",
    "DeviceKey",
    "read_secret_file",
    "write_secret_file",
]

KEY_FILE_FORMAT: Final = "moodfed-secret"
KEY_FILE_VERSION: Final = 1
DEVICE_KEY_KIND: Final = "ed25519-signing-key"
_SEED_BYTES: Final = 32  # Ed25519 seed size (crypto_sign_SEEDBYTES)

# Interactive Argon2id limits (about 0.1 s and 64 MiB here): the passphrase guards a
# file on the user's own phone, unlocked at app start, so waiting seconds is not an option.
DEFAULT_OPSLIMIT: Final = argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT: Final = argon2id.MEMLIMIT_INTERACTIVE


def _derive_key(passphrase: str, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
    # NFC so that the same passphrase typed on two keyboards gives the same key.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
    )


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and (not isinstance(passphrase, str) or passphrase == ""):
        raise KeyFileError("a passphrase must be a non-empty string (or None for no passphrase)")


def _write_new_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically.

    The bytes go to a fresh temporary file created 0600 (never chmod-ed afterwards), are
    fsync-ed, then renamed over ``path``: a crash leaves the old file or the new one.
    """
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} already exists; pass overwrite=True to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create a key file next to {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes a rename or unlink durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_secret_file(
    path: str | os.PathLike[str],
    secret: bytes,
    *,
    kind: str,
    passphrase: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``secret`` to a new 0600 key file, sealed when a passphrase is given.

    ``kind`` is stored in the file so that a diary key is never loaded as a device key.
    """
    _check_passphrase(passphrase)
    doc: dict[str, Any] = {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "kind": kind,
    }
    if passphrase is None:
        doc |= {"sealed": False, "secret": b64url_encode(secret)}
    else:
        salt = secrets.token_bytes(argon2id.SALTBYTES)
        box_key = _derive_key(
            passphrase, salt, opslimit=DEFAULT_OPSLIMIT, memlimit=DEFAULT_MEMLIMIT
        )
        sealed = nacl.secret.SecretBox(box_key).encrypt(secret)
        doc |= {
            "sealed": True,
            "kdf": "argon2id",
            "opslimit": DEFAULT_OPSLIMIT,
            "memlimit": DEFAULT_MEMLIMIT,
            "salt": b64url_encode(salt),
            "ciphertext": b64url_encode(bytes(sealed)),
        }
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    _write_new_file(Path(path), data, overwrite=overwrite)


def _field(doc: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise KeyFileError(f"{path} is not a valid key file: bad or missing {name!r}")
    return value


def read_secret_file(
    path: str | os.PathLike[str], *, kind: str, passphrase: str | None = None
) -> bytes:
    """Read the secret from a key file written by ``write_secret_file``.

    Raises ``PassphraseRequiredError`` for a sealed file without a passphrase,
    ``WrongPassphraseError`` when the passphrase does not open it, and ``KeyFileError``
    for a missing, malformed or wrong-kind file, or a passphrase given for an unsealed
    file (which may mean a sealed file was swapped for an unsealed one).
    """
    _check_passphrase(passphrase)
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise KeyFileError(f"{path} is not a moodfed key file (not JSON)") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(f"{path} is not a moodfed key file")
    if doc.get("version") != KEY_FILE_VERSION:
        raise KeyFileError(f"{path} has unsupported key file version {doc.get('version')!r}")
    if doc.get("kind") != kind:
        raise KeyFileError(f"{path} holds a {doc.get('kind')!r}, not a {kind!r}")
    sealed = _field(doc, "sealed", bool, path)
    try:
        if not sealed:
            if passphrase is not None:
                raise KeyFileError(
                    f"{path} is not sealed but a passphrase was given; refusing to guess"
                )
            return b64url_decode(_field(doc, "secret", str, path))
        if passphrase is None:
            raise PassphraseRequiredError(f"{path} is sealed with a passphrase; give it")
        if doc.get("kdf") != "argon2id":
            raise KeyFileError(f"{path} uses unsupported kdf {doc.get('kdf')!r}")
        opslimit = _field(doc, "opslimit", int, path)
        memlimit = _field(doc, "memlimit", int, path)
        # Bounds stop a crafted file from making the device burn gigabytes or minutes.
        if not (
            argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_SENSITIVE
            and argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_SENSITIVE
        ):
            raise KeyFileError(f"{path} has out-of-range argon2id limits")
        salt = b64url_decode(_field(doc, "salt", str, path))
        ciphertext = b64url_decode(_field(doc, "ciphertext", str, path))
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a valid key file: {exc}") from exc
    if len(salt) != argon2id.SALTBYTES:
        raise KeyFileError(f"{path} is not a valid key file: bad salt length")
    box_key = _derive_key(passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    try:
        return bytes(nacl.secret.SecretBox(box_key).decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise WrongPassphraseError(
            f"wrong passphrase for {path} (or the file was altered)"
        ) from exc


class DeviceKey:
    """The device's Ed25519 signing key; ``device_key`` is its identity on the ledger.

    Made on the device and never sent anywhere; only signatures and the public key leave.
    """

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise TypeError("DeviceKey wraps a nacl.signing.SigningKey")
        self._signing_key = signing_key

    @classmethod
    def generate(cls) -> DeviceKey:
        """Make a new random key pair (from the OS's CSPRNG)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceKey:
        """Rebuild a key from its 32-byte seed (for tests and simulations; not for apps)."""
        if not isinstance(seed, bytes) or len(seed) != _SEED_BYTES:
            raise KeyFileError("a device key seed is exactly 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def device_key(self) -> str:
        """The public key, base64url without padding: the device's ledger identity."""
        return b64url_encode(self.verify_key_bytes)

    @property
    def verify_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return bytes(self._signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; returns the raw 64-byte Ed25519 signature."""
        return bytes(self._signing_key.sign(bytes(message)).signature)

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write the key to a new 0600 file, sealed when a passphrase is given.

        Refuses to replace an existing file unless ``overwrite=True``: replacing a device
        key silently would cut the device off from its consent records.
        """
        write_secret_file(
            path,
            bytes(self._signing_key),
            kind=DEVICE_KEY_KIND,
            passphrase=passphrase,
            overwrite=overwrite,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, passphrase: str | None = None) -> DeviceKey:
        """Load a key saved by ``save``; a wrong passphrase raises, it never makes a new key."""
        seed = read_secret_file(path, kind=DEVICE_KEY_KIND, passphrase=passphrase)
        if len(seed) != _SEED_BYTES:
            raise KeyFileError(f"{path} does not hold a 32-byte Ed25519 seed")
        return cls(nacl.signing.SigningKey(seed))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceKey):
            return NotImplemented
        return secrets.compare_digest(bytes(self._signing_key), bytes(other._signing_key))

    def __hash__(self) -> int:
        return hash(self.verify_key_bytes)

    def __repr__(self) -> str:
        return f"DeviceKey(device_key={self.device_key!r})"
