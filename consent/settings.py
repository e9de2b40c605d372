"""Configuration of the consent service, from ``MOODFED_`` environment variables.

Defaults run on one machine: a SQLite ledger and a log key under ``~/.moodfed``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent.models import Controller

__all__ = ["ConsentSettings", "Controller", "Policy", "default_data_dir"]


def default_data_dir() -> Path:
    return Path(os.environ.get("MOODFED_DATA_DIR", Path.home() / ".moodfed"))


class Policy(BaseModel):
    """The receipt fields one policy version promises (Kantara v1.1 / ISO/IEC TS 27560)."""

    controller: Controller = Controller()
    jurisdiction: str = "EU"
    language: str = "en"
    data_categories: list[str] = [
        "self-reported mood (1-5) and valence",
        "emotion and activity labels",
        "sleep duration and step count",
    ]
    recipients: list[str] = [
        "moodfed server: differentially private model updates only",
        "public-health analysts: differentially private aggregates only",
    ]
    retention: str = (
        "Diaries never leave the device. Consent records are kept in the append-only "
        "ledger for as long as the log exists; aggregates until withdrawn from publication."
    )
    withdrawal_method: str = (
        "Call withdraw(purpose) in the app; a signed withdrawal takes effect from the next round."
    )
    policy_url: str = "https://moodfed.invalid/policy/1"


class ConsentSettings(BaseSettings):
    """Everything ``moodfed consent serve`` and ``audit`` read."""

    model_config = SettingsConfigDict(env_prefix="MOODFED_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    key_file: Path | None = None
    eligibility_token: SecretStr | None = None
    log_origin: str = "moodfed.local/consent-log"
    purposes: list[str] = ["model-training", "population-analytics"]
    policies: dict[str, Policy] = {"1": Policy()}
    clock_skew_seconds: int = Field(default=300, ge=0)
    max_body_bytes: int = Field(default=8192, ge=512)
    max_eligibility_keys: int = Field(default=100_000, ge=1)
    max_entries_per_page: int = Field(default=1000, ge=1)
    batch_max: int = Field(default=512, ge=1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'consent.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "consent-log.key"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "eligibility-token"

    def ensure_eligibility_token(self) -> SecretStr:
        """The configured token, else one kept in a 0600 file in the data folder."""
        if self.eligibility_token is not None:
            return self.eligibility_token
        path = self.token_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        self.eligibility_token = SecretStr(path.read_text().strip())
        return self.eligibility_token
