"""Configuration of ``moodfed witness serve``, from ``MOODFED_WITNESS_`` environment variables.

Defaults run on one machine: a SQLite store and a key under the data folder
(``MOODFED_WITNESS_DATA_DIR``, else ``MOODFED_DATA_DIR``, else ``~/.moodfed``). The logs
it witnesses are given by their verifier keys (``MOODFED_WITNESS_LOG_KEYS``, a JSON list);
a log's origin is its key's name, as the consent log signs it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent.note import NoteError, NoteVerifier
from consent.settings import default_data_dir

__all__ = ["WitnessSettings"]


class WitnessSettings(BaseSettings):
    """Everything ``moodfed witness serve`` reads."""

    model_config = SettingsConfigDict(env_prefix="MOODFED_WITNESS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8710, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    key_file: Path | None = None
    name: str = "moodfed.local/witness"
    log_keys: list[str] = []
    max_body_bytes: int = Field(default=80_000, ge=4096)

    @field_validator("log_keys")
    @classmethod
    def _log_keys_parse(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                NoteVerifier(key)
            except NoteError as exc:
                raise ValueError(f"log key {key!r}: {exc}") from None
        return keys

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'witness.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "witness.key"

    def log_verifiers(self) -> dict[str, list[NoteVerifier]]:
        """The trusted keys of each witnessed log, by origin (a log may have several keys)."""
        logs: dict[str, list[NoteVerifier]] = {}
        for key in self.log_keys:
            verifier = NoteVerifier(key)
            logs.setdefault(verifier.name, []).append(verifier)
        return logs
