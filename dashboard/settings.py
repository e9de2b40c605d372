"""The dashboard's configuration, from ``MOODFED_`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dashboard.throttle import ThrottlePolicy

__all__ = ["DashboardSettings"]


def _data_dir() -> Path:
    # The server's data folder (MOODFED_DATA_DIR, as server.settings has it).
    return Path(os.environ.get("MOODFED_DATA_DIR", Path.home() / ".moodfed"))


def _default_releases_url() -> str:
    return f"sqlite:///{_data_dir() / 'releases.db'}"


def _default_login_state_url() -> str:
    return f"sqlite:///{_data_dir() / 'dashboard-logins.db'}"


class DashboardSettings(BaseSettings):
    """Where the releases and the consent log are, and who may log in.

    The password is only ever stored as an argon2id hash (``moodfed dashboard
    hash-password``). OIDC (Streamlit's ``st.login``) is used when ``oidc_provider`` is
    set and ``[auth]`` is configured in ``.streamlit/secrets.toml``; only the e-mail
    addresses in ``oidc_allowed_emails`` get in. Password attempts are throttled
    (``login_*``; see :mod:`dashboard.throttle`), their state kept at ``login_state_url``.
    """

    model_config = SettingsConfigDict(env_prefix="MOODFED_", env_file=".env", extra="ignore")

    releases_url: str = Field(
        default_factory=_default_releases_url,
        description="the release store, opened read-only (SQLite file or PostgreSQL URL)",
    )
    releases_password_file: Path | None = Field(
        default=None,
        description="a 0600 file holding the PostgreSQL role's password (never in the URL)",
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
    login_state_url: str = Field(
        default_factory=_default_login_state_url,
        description="where failed logins and lockouts are kept (SQLite file or PostgreSQL URL)",
    )
    login_free_attempts: int = Field(
        default=5, ge=1, description="failures in a row before a user name or source is locked"
    )
    login_backoff_seconds: float = Field(
        default=1.0, gt=0, description="the first lockout; it doubles with each further failure"
    )
    login_max_lockout_seconds: float = Field(default=900.0, gt=0)
    login_reset_seconds: float = Field(
        default=86_400.0, gt=0, description="failures are forgotten this long after the last one"
    )

    @property
    def throttle_policy(self) -> ThrottlePolicy:
        """The login throttle's policy from these settings."""
        return ThrottlePolicy(
            free_attempts=self.login_free_attempts,
            backoff_seconds=self.login_backoff_seconds,
            max_lockout_seconds=max(self.login_max_lockout_seconds, self.login_backoff_seconds),
            reset_seconds=self.login_reset_seconds,
        )

    @property
    def password_login(self) -> bool:
        """True when a user name and a password hash are both configured."""
        return bool(self.analyst_user and self.analyst_password_hash.get_secret_value())
