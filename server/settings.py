"""Configuration of private federated training, from ``MOODFED_`` environment variables.

Non-secret knobs may also come from Flower's run config (``[tool.flwr.app.config]`` or
``flwr run -c``, hyphenated keys); secrets and deployment addresses (the consent
service, its eligibility token, the databases) come from the environment only, so they
never travel inside a Flower run config or a FAB.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client_sdk.protocol import TrainConfig
from consent.secret_files import read_secret_file
from consent.settings import default_data_dir
from privacy import Accountant

__all__ = ["ENV_ONLY", "Aggregation", "TrainSettings"]

Aggregation = Literal["secure", "central"]
"""secure: SecAgg+ with the noise added on the devices (the server sees only the noised
sum); central: a trusted server sees the clipped contributions and adds the noise."""

# Where things live and how to reach them: from the environment only, never from a Flower
# run config (which travels inside a FAB and may be logged).
ENV_ONLY: Final = frozenset(
    {
        "consent_url",
        "eligibility_token",
        "eligibility_token_file",
        "eligibility_timeout",
        "data_dir",
        "release_database_url",
        "accountant_database_url",
        "transcript_dir",
    }
)

# Secrets, and URLs that may embed a database password.
_NOT_DESCRIBED = {"eligibility_token", "release_database_url", "accountant_database_url"}


class TrainSettings(BaseSettings):
    """Everything a training run reads: DP parameters, local training, where things live.

    >>> TrainSettings(expected_devices=10, rounds=3).sampling_rate(eligible=40)
    0.25
    """

    model_config = SettingsConfigDict(env_prefix="MOODFED_", extra="ignore")

    # User-level DP-FedAvg on the server. Each description is also the help text of the
    # matching `moodfed train` option.
    rounds: int = Field(default=5, ge=1, description="planned rounds")
    expected_devices: float = Field(
        default=10.0, gt=0, description="expected devices per round (q = expected / eligible)"
    )
    noise_multiplier: float = Field(default=1.0, gt=0, description="server noise multiplier σ")
    clipping_norm: float = Field(default=1.0, gt=0, description="update clipping norm C")
    epsilon_budget: float = Field(default=8.0, gt=0, description="per-user budget ε (hard stop)")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="δ of the per-user budget")
    accounting: Literal["rdp", "pld"] = Field(
        default="rdp", description="how epsilon is computed: RDP or PLD (dp-accounting)"
    )

    # Record-level DP-SGD on the device (sent in each train message; a device may keep
    # a stricter budget of its own in its node config).
    local_steps: int = Field(default=5, ge=1, description="DP-SGD steps on each device a round")
    sample_rate: float = Field(
        default=0.2, gt=0, le=1, description="DP-SGD's Poisson sampling rate on each device"
    )
    learning_rate: float = Field(default=0.05, gt=0, description="DP-SGD learning rate")
    device_noise_multiplier: float = Field(
        default=1.0,
        gt=0,
        description="DP-SGD noise asked of each device (it uses at least its own minimum)",
    )
    aggregation: Aggregation = Field(
        default="secure",
        description=(
            "secure: SecAgg+ with noise added on the devices, the server sees only the noised "
            "sum; central: a trusted server sees clipped updates and adds the noise"
        ),
    )

    # Sampling: None draws each round's sample from the OS's CSPRNG (production);
    # an integer makes sampling and server noise reproducible (tests only).
    seed: int | None = Field(
        default=None, description="reproducible sampling and noise (simulations and tests only)"
    )
    min_nodes: int = Field(default=1, ge=1, description="nodes to wait for before starting")
    node_wait_seconds: float = Field(default=30.0, ge=0, description="how long to wait for them")
    round_timeout: float = Field(default=600.0, gt=0, description="seconds a round waits")
    attestation_timeout: float = Field(
        default=120.0, gt=0, description="seconds the attestation waits"
    )

    # Where the consent service and the stores are.
    consent_url: str | None = Field(default=None, description="the consent service's URL")
    eligibility_token: SecretStr | None = None
    eligibility_token_file: Path | None = Field(
        default=None,
        description="a file only this user can read (0600) holding the eligibility token",
    )
    eligibility_timeout: float = Field(
        default=30.0, gt=0, description="seconds an eligibility query may take"
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="where the release store and budgets live",
    )
    release_database_url: str | None = None
    accountant_database_url: str | None = None
    transcript_dir: Path | None = Field(
        default=None,
        description="write every reply the server receives here (server.transcript)",
    )

    seeded_runs_allowed: ClassVar[bool] = False
    """Whether a seed may go with a consent service: only simulations (synthetic devices)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.eligibility_token_file is not None:
            if self.eligibility_token is not None:
                raise ValueError(
                    "set MOODFED_ELIGIBILITY_TOKEN or MOODFED_ELIGIBILITY_TOKEN_FILE, not both"
                )
            self.eligibility_token = SecretStr(read_secret_file(self.eligibility_token_file))
        if self.consent_url is not None and self.eligibility_token is None:
            raise ValueError(
                "a consent_url needs its eligibility token: set MOODFED_ELIGIBILITY_TOKEN_FILE "
                "(a 0600 file) or MOODFED_ELIGIBILITY_TOKEN"
            )
        if self.seed is not None and self.consent_url is not None and not self.seeded_runs_allowed:
            raise ValueError(
                "a seed makes the sampling and the noise reproducible, so its releases would "
                "not be private: unset MOODFED_SEED (and the run config's seed) when a consent "
                "service is configured; seeds are for simulations"
            )
        return self

    @property
    def resolved_release_database_url(self) -> str:
        return self.release_database_url or f"sqlite:///{self.data_dir / 'releases.db'}"

    @property
    def resolved_accountant_database_url(self) -> str:
        """The per-user budgets: their own database, never where the dashboard reads."""
        return self.accountant_database_url or f"sqlite:///{self.data_dir / 'privacy.db'}"

    def open_accountant(self) -> Accountant:
        """The per-user budgets these settings run under (close it, or use it in ``with``)."""
        return Accountant(
            self.resolved_accountant_database_url,
            epsilon_budget=self.epsilon_budget,
            delta=self.delta,
            method=self.accounting,
        )

    def sampling_rate(self, *, eligible: int) -> float:
        """q = expected devices / eligible devices, at most 1."""
        if eligible < 1:
            raise ValueError("no eligible devices: nothing to sample")
        return min(1.0, self.expected_devices / eligible)

    def expected_count(self, *, eligible: int) -> float:
        """The DP-FedAvg denominator q * |eligible| (fixed before sampling)."""
        return self.sampling_rate(eligible=eligible) * eligible

    @classmethod
    def run_config_keys(cls) -> tuple[str, ...]:
        """The settings a Flower run config may set, hyphenated as in pyproject.toml:
        every field but :data:`ENV_ONLY`."""
        return tuple(name.replace("_", "-") for name in cls.model_fields if name not in ENV_ONLY)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], **overrides: Any) -> Self:
        """Settings from a Flower run config on top of the environment.

        Only :meth:`run_config_keys` are read; an empty string means "not set" so the
        environment (or the default) still applies, and a negative seed means "no seed".
        """
        values: dict[str, Any] = {}
        for key in cls.run_config_keys():
            value = run_config.get(key)
            if value is None or value == "":
                continue
            if key == "seed" and isinstance(value, int | float) and value < 0:
                continue  # a negative seed in pyproject.toml means "CSPRNG"
            values[key.replace("-", "_")] = value
        values.update(overrides)
        return cls(**values)

    def train_config(self, round_number: int, *, participation_rate: float) -> TrainConfig:
        """The ``train-config`` a round sends: the round, its participation rate, and every
        other field of :class:`TrainConfig` from the setting of the same name."""
        fixed = {"round", "participation_rate"}
        names = [name for name in TrainConfig.field_names() if name not in fixed]
        return TrainConfig(
            round=round_number,
            participation_rate=participation_rate,
            **{name: getattr(self, name) for name in names},
        )

    def describe(self) -> dict[str, Any]:
        """The non-secret settings, for the release store and logs."""
        return {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in self.model_dump(exclude=_NOT_DESCRIBED).items()
            if value is None or isinstance(value, int | float | str | bool | Path)
        }
