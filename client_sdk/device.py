"""A device: its key, its encrypted diary and its consent client, kept in one folder.

This is the object an app holds. The folder layout is ``device.key`` (Ed25519, 0600,
optionally sealed), ``diary.db`` with ``diary.db.key``, and ``consent.json`` (verified
receipts and the last checkpoint seen).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from client_sdk.consent_client import ConsentClient
from client_sdk.diary import Diary
from client_sdk.errors import SDKError
from client_sdk.keys import DeviceKey

__all__ = ["Device"]


class Device:
    """One phone's worth of moodfed state.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, Device.create(tmp) as device:
    ...     _ = device.diary.log({"time": "2026-11-22T21:05:00+00:00", "mood": 4})
    ...     len(device.diary), len(device.device_key)
    (1, 43)
    """

    def __init__(
        self,
        *,
        folder: Path,
        key: DeviceKey,
        diary: Diary,
        consent: ConsentClient | None,
    ) -> None:
        self.folder = folder
        self.key = key
        self.diary = diary
        self._consent = consent

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        consent_url: str | None = None,
        log_key: str | None = None,
    ) -> Device:
        """Make a new device (new key, empty diary) in ``folder``."""
        folder = Path(folder)
        if (folder / "device.key").exists():
            raise SDKError(f"{folder} already holds a device; use Device.open")
        folder.mkdir(parents=True, exist_ok=True)
        DeviceKey.generate().save(folder / "device.key", passphrase=passphrase)
        return cls.open(folder, passphrase=passphrase, consent_url=consent_url, log_key=log_key)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        consent_url: str | None = None,
        log_key: str | None = None,
    ) -> Device:
        """Open the device in ``folder``; ``consent_url`` and the pinned ``log_key`` go together."""
        folder = Path(folder)
        if (consent_url is None) != (log_key is None):
            raise SDKError("pass both consent_url and log_key (the log's pinned verifier key)")
        key = DeviceKey.load(folder / "device.key", passphrase=passphrase)
        diary = Diary.open(folder / "diary.db", passphrase=passphrase)
        consent = None
        if consent_url is not None and log_key is not None:
            consent = ConsentClient(
                key=key, url=consent_url, log_key=log_key, state_path=folder / "consent.json"
            )
        return cls(folder=folder, key=key, diary=diary, consent=consent)

    @property
    def device_key(self) -> str:
        """The device's public identity on the ledger (base64url Ed25519 key)."""
        return self.key.device_key

    @property
    def consent(self) -> ConsentClient:
        if self._consent is None:
            raise SDKError("this device was opened without a consent service (consent_url)")
        return self._consent

    def close(self) -> None:
        self.diary.close()
        if self._consent is not None:
            self._consent.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
