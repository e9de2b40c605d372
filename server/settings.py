"""Configuration of private federated training, from ``MOODFED_`` environment variables.

Non-secret knobs may also come from Flower's run config (``[tool.flwr.app.config]`` or
``flwr run -c``, hyphenated keys); secrets and deployment addresses (the consent
service, its eligibility token, the databases) come from the environment only, so they
never travel inside a Flower run config or a FAB.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent.settings import default_data_dir

__all__ = ["RUN_CONFIG_KEYS", "TRAINING_PURPOSE", "TrainSettings"]

TRAINING_PURPOSE = "model-training"

# Settings a Flower run config may set (hyphenated, as in pyproject.toml). Everything
# else (URLs, tokens, database locations) is environment-only on purpose.
RUN_CONFIG_KEYS = (
    "rounds",
    "expected-devices",
    "noise-multiplier",
    "clipping-norm",
    "epsilon-budget",
    "delta",
    "accounting",
    "local-epochs",
    "batch-size",
    "learning-rate",
    "device-noise-multiplier",
    "device-max-grad-norm",
    "device-epsilon-budget",
    "device-delta",
    "seed",
    "min-nodes",
    "node-wait-seconds",
    "round-timeout",
    "holdout-devices",
    "days",
    "grant-fraction",
    "withdraw-fraction",
    "withdraw-at-round",
    "sim-root",
)


# Secrets, and URLs that may embed a database password.
_NOT_DESCRIBED = {"eligibility_token", "release_database_url", "accountant_database_url"}


class TrainSettings(BaseSettings):
    """Everything a training run reads: DP parameters, local training, where things live.

    >>> TrainSettings(expected_devices=10, rounds=3).sampling_rate(eligible=40)
    0.25
    """

    model_config = SettingsConfigDict(env_prefix="MOODFED_", extra="ignore")

    # User-level DP-FedAvg on the server.
    rounds: int = Field(default=5, ge=1)
    expected_devices: float = Field(default=10.0, gt=0)
    noise_multiplier: float = Field(default=1.0, gt=0)
    clipping_norm: float = Field(default=1.0, gt=0)
    epsilon_budget: float = Field(default=8.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    accounting: Literal["rdp", "pld"] = "rdp"

    # Record-level DP-SGD on the device (sent in each train message; a device may keep
    # a stricter budget of its own in its node config).
    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    device_noise_multiplier: float = Field(default=1.0, gt=0)
    device_max_grad_norm: float = Field(default=1.0, gt=0)
    device_epsilon_budget: float = Field(default=10.0, gt=0)
    device_delta: float = Field(default=1e-4, gt=0, lt=1)

    # Sampling: None draws each round's sample from the OS's CSPRNG (production);
    # an integer makes sampling and server noise reproducible (tests only).
    seed: int | None = None
    min_nodes: int = Field(default=1, ge=1)
    node_wait_seconds: float = Field(default=30.0, ge=0)
    round_timeout: float = Field(default=600.0, gt=0)
    attestation_timeout: float = Field(default=120.0, gt=0)

    # Where the consent service and the stores are.
    consent_url: str | None = None
    eligibility_token: SecretStr | None = None
    eligibility_timeout: float = Field(default=30.0, gt=0)
    data_dir: Path = Field(default_factory=default_data_dir)
    release_database_url: str | None = None
    accountant_database_url: str | None = None

    # Simulation only: the synthetic federation (held-out devices for the server's
    # quality metric, diary length, who grants and who withdraws part-way).
    holdout_devices: int = Field(default=20, ge=0)
    days: int = Field(default=120, ge=14)
    grant_fraction: float = Field(default=0.9, ge=0, le=1)
    withdraw_fraction: float = Field(default=0.0, ge=0, le=1)
    withdraw_at_round: int = Field(default=0, ge=0)
    sim_root: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.consent_url is not None and self.eligibility_token is None:
            raise ValueError(
                "a consent_url needs its eligibility token: set MOODFED_ELIGIBILITY_TOKEN"
            )
        return self

    @property
    def resolved_release_database_url(self) -> str:
        return self.release_database_url or f"sqlite:///{self.data_dir / 'releases.db'}"

    @property
    def resolved_accountant_database_url(self) -> str:
        """The per-user budgets: their own database, never where the dashboard reads."""
        return self.accountant_database_url or f"sqlite:///{self.data_dir / 'privacy.db'}"

    def sampling_rate(self, *, eligible: int) -> float:
        """q = expected devices / eligible devices, at most 1."""
        if eligible < 1:
            raise ValueError("no eligible devices: nothing to sample")
        return min(1.0, self.expected_devices / eligible)

    def expected_count(self, *, eligible: int) -> float:
        """The DP-FedAvg denominator q * |eligible| (fixed before sampling)."""
        return self.sampling_rate(eligible=eligible) * eligible

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], **overrides: Any) -> TrainSettings:
        """Settings from a Flower run config on top of the environment.

        Only :data:`RUN_CONFIG_KEYS` are read; an empty string means "not set" so the
        environment (or the default) still applies.
        """
        values: dict[str, Any] = {}
        for key in RUN_CONFIG_KEYS:
            value = run_config.get(key)
            if value is None or value == "":
                continue
            if key == "seed" and isinstance(value, int | float) and value < 0:
                continue  # a negative seed in pyproject.toml means "CSPRNG"
            values[key.replace("-", "_")] = value
        values.update(overrides)
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """The non-secret settings, for the release store and logs."""
        return {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in self.model_dump(exclude=_NOT_DESCRIBED).items()
            if value is None or isinstance(value, int | float | str | bool | Path)
        }
