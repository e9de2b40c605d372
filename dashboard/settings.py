"""The dashboard's configuration, from ``MOODFED_`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DashboardSettings"]


def _default_releases_url() -> str:
    # The server's default release store (MOODFED_DATA_DIR, as server.settings has it).
    data_dir = Path(os.environ.get("MOODFED_DATA_DIR", Path.home() / ".moodfed"))
    return f"sqlite:///{data_dir / 'releases.db'}"


class DashboardSettings(BaseSettings):
    """Where the releases and the consent log are, and who may log in.

    The password is only ever stored as an argon2id hash (``moodfed dashboard
    hash-password``). OIDC (Streamlit's ``st.login``) is used when ``oidc_provider`` is
    set and ``[auth]`` is configured in ``.streamlit/secrets.toml``; only the e-mail
    addresses in ``oidc_allowed_emails`` get in.
    """

    model_config = SettingsConfigDict(env_prefix="MOODFED_", env_file=".env", extra="ignore")

    releases_url: str = Field(
        default_factory=_default_releases_url,
        description="the release store, opened read-only (SQLite file or PostgreSQL URL)",
    )
    analyst_user: str = Field(default="", description="the analyst's user name")
    analyst_password_hash: SecretStr = Field(
        default=SecretStr(""), description="argon2id hash of the analyst's password"
    )
    oidc_provider: str = Field(
        default="",
        description='"" (off), "default" (the [auth] section) or a named [auth.<provider>]',
    )
    oidc_allowed_emails: list[str] = Field(
        default_factory=list, description="who may log in through OIDC (a JSON list)"
    )
    consent_url: str = Field(default="", description="the consent service, for the Consent page")
    consent_log_key: str = Field(
        default="", description="the consent log's verifier key, pinned (else fetched, and said so)"
    )
    consent_max_entries: int = Field(default=200_000, ge=1)
    consent_timeout_seconds: float = Field(default=5.0, gt=0)
    cache_seconds: int = Field(default=60, ge=0, description="how long read results are reused")

    @property
    def password_login(self) -> bool:
        """True when a user name and a password hash are both configured."""
        return bool(self.analyst_user and self.analyst_password_hash.get_secret_value())
