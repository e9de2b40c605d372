"""Configuration of the consent service, from ``MOODFED_`` environment variables.

Defaults run on one machine: a SQLite ledger and a log key under ``~/.moodfed``.
Secrets come from the environment or from a file only the service's user can read,
never from the command line (which every local user sees in ``ps``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent.models import Controller
from consent.secret_files import read_secret_file

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
    eligibility_token_file: Path | None = None
    # HTTPS served by the service itself (PEM files); both or neither.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    log_origin: str = "moodfed.local/consent-log"
    purposes: list[str] = ["model-training", "population-analytics"]
    policies: dict[str, Policy] = {"1": Policy()}
    clock_skew_seconds: int = Field(default=300, ge=0)
    # A statement from the future is a device clock that is ahead: allowed only by this
    # much, or a grant dated ahead would out-rank the withdrawal signed after it.
    future_skew_seconds: int = Field(default=5, ge=0)
    max_body_bytes: int = Field(default=8192, ge=512)
    max_eligibility_keys: int = Field(default=100_000, ge=1)
    max_entries_per_page: int = Field(default=1000, ge=1)
    batch_max: int = Field(default=512, ge=1)
    # Witnesses (C2SP tlog-witness): their submission URLs and verifier keys, in the same
    # order; a checkpoint is served once `witness_quorum` of them cosigned it (default all).
    witness_urls: list[str] = []
    witness_keys: list[str] = []
    witness_quorum: int | None = Field(default=None, ge=1)
    # Slow and hostile clients (see consent/README.md): absolute deadlines for a
    # request's head and body, a cap on open connections per worker process, and a
    # cap on the head's size. uvicorn alone bounds none of these.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=20.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    max_connections: int = Field(default=4096, ge=1)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    access_log: bool = True
    # Refused bearer tokens: the first few lines per window, then one line counting
    # the rest (a token-guessing client must not write the log at its own rate).
    auth_log_burst: int = Field(default=10, ge=0)
    auth_log_window_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_token_source(self) -> ConsentSettings:
        if self.eligibility_token is not None and self.eligibility_token_file is not None:
            raise ValueError(
                "set MOODFED_ELIGIBILITY_TOKEN or MOODFED_ELIGIBILITY_TOKEN_FILE, not both"
            )
        return self

    @model_validator(mode="after")
    def _certificate_and_key(self) -> ConsentSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("HTTPS needs both --ssl-certfile and --ssl-keyfile (PEM files)")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile is not None else "http"

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
        """The configured token, else the token file's, else one kept in a 0600 file.

        A token file must be a regular file that neither group nor others can read:
        :class:`ValueError` says what to fix otherwise.
        """
        if self.eligibility_token is not None:
            return self.eligibility_token
        if self.eligibility_token_file is not None:
            self.eligibility_token = SecretStr(read_secret_file(self.eligibility_token_file))
            return self.eligibility_token
        path = self.token_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        self.eligibility_token = SecretStr(path.read_text().strip())
        return self.eligibility_token
