"""Fixtures of the analytics tests: a real accountant and release store in SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from privacy import Accountant
from server.releases import ReleaseStore

DELTA = 1e-5
WEEK = date(2026, 3, 2)  # a Monday


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReleaseStore]:
    with ReleaseStore(f"sqlite:///{tmp_path / 'releases.db'}") as release_store:
        yield release_store


@pytest.fixture
def accountant(tmp_path: Path) -> Iterator[Accountant]:
    url = f"sqlite:///{tmp_path / 'budgets.db'}"
    with Accountant(url, epsilon_budget=50.0, delta=DELTA) as budgets:
        yield budgets
