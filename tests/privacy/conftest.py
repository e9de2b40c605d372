"""Shared fixtures of the privacy tests: real database files, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from privacy import Accountant, Method

torch.set_num_threads(1)  # two cores: torch's thread pool only fights pytest for them

DELTA = 1e-5

MakeAccountant = Callable[..., Accountant]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'privacy.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Each backend the ledger supports; PostgreSQL comes from the suite's fixture."""
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("postgres_url")


def _factory(url: str) -> MakeAccountant:
    def make(epsilon_budget: float = 8.0, method: Method = "rdp") -> Accountant:
        return Accountant(url, epsilon_budget=epsilon_budget, delta=DELTA, method=method)

    return make


@pytest.fixture
def make_accountant(sqlite_url: str) -> MakeAccountant:
    """Open an Accountant on the test's SQLite file (call again to reopen it)."""
    return _factory(sqlite_url)


@pytest.fixture
def make_any_accountant(any_database_url: str) -> MakeAccountant:
    """Open an Accountant on each supported backend in turn."""
    return _factory(any_database_url)
