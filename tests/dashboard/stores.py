"""Small release stores written through the real :class:`ReleaseStore`, for the cases the
seeded pipeline store does not cover: private releases, both aggregation modes, and a store
made by an older version (without ``release_epsilon``, ``aggregation`` and ``private``).
"""

from __future__ import annotations

from datetime import date
from typing import Final

import numpy as np
from sqlalchemy import create_engine, text

from server.releases import CellRelease, QueryRelease, ReleaseStore

__all__ = [
    "NEW_RELEASE_COLUMNS",
    "ROUND_EPSILONS",
    "RUN_ID",
    "WEEKS",
    "write_another_week",
    "write_old_store",
    "write_private_store",
]

RUN_ID: Final = "private-run"
ROUND_EPSILONS: Final = (0.41, 0.43, 0.47)  # recorded per round: distinct from any recomputation
WEEKS: Final = (date(2026, 1, 5), date(2026, 1, 12))
NEW_RELEASE_COLUMNS: Final = ("release_epsilon", "aggregation", "private")


def _cells(query: str, week: int) -> tuple[CellRelease, ...]:
    if query == "mood-distribution":
        shares = (0.05, 0.1, 0.3, 0.4, 0.15)
        levels = tuple(
            CellRelease(
                cell=str(level),
                labels={"level": str(level)},
                value=share,
                value_std=0.02,
                noisy_sum=share * 200,
                noisy_count=200.0 + week,
                suppressed=False,
            )
            for level, share in enumerate(shares, start=1)
        )
        mean = CellRelease(
            cell="mean",
            labels={"level": "mean"},
            value=3.5 + 0.1 * week,
            value_std=0.05,
            noisy_sum=None,
            noisy_count=200.0 + week,
            suppressed=False,
            derived=True,
        )
        return (*levels, mean)
    if query == "low-mood-share":
        return (
            CellRelease(
                cell="<=2",
                labels={"level": "<=2"},
                value=0.15,
                value_std=0.02,
                noisy_sum=30.0,
                noisy_count=200.0,
                suppressed=False,
            ),
        )
    return (
        CellRelease(
            cell="18-29 / north",
            labels={"age_band": "18-29", "region": "north"},
            value=3.4,
            value_std=0.3,
            noisy_sum=100.0,
            noisy_count=40.0,
            suppressed=False,
        ),
        CellRelease(
            cell="65+ / north",
            labels={"age_band": "65+", "region": "north"},
            value=None,
            value_std=None,
            noisy_sum=None,
            noisy_count=None,
            suppressed=True,
        ),
    )


def _week(period: date, week: int) -> list[QueryRelease]:
    return [
        QueryRelease(
            query=query,
            title=query,
            statistic="mean" if query == "mood-by-cohort" else "share",
            unit="",
            period=period,
            round_id=f"{period}/all",
            noise_multiplier=4.0,
            sensitivity=1.0,
            noise_std=4.0,
            threshold=20.0,
            min_contributors=11,
            false_release_bound=1e-3,
            epsilon=0.2,
            delta=1e-5,
            round_epsilon=0.6,
            purpose_epsilon=0.6 * (week + 1),
            epsilon_budget=10.0,
            n_eligible=300,
            cells=_cells(query, week),
        )
        for query in ("mood-distribution", "low-mood-share", "mood-by-cohort")
    ]


def write_private_store(url: str) -> None:
    """Three secure-aggregation model rounds and two weeks of central-noise analytics, all
    private (no seed), each with its composed and its own epsilon."""
    with ReleaseStore(url) as store:
        store.start_run(
            run_id=RUN_ID,
            flower_run_id="1",
            purpose="model-training",
            planned_rounds=len(ROUND_EPSILONS),
            epsilon_budget=10.0,
            delta=1e-5,
            accounting="rdp",
            noise_multiplier=1.0,
            clipping_norm=1.0,
            expected_devices=30.0,
        )
        composed = 0.0
        for number, own in enumerate(ROUND_EPSILONS, start=1):
            composed += own
            store.record_model_round(
                run_id=RUN_ID,
                round_number=number,
                weights=[np.zeros(3)],
                epsilon=composed,
                delta=1e-5,
                sampling_rate=0.1,
                noise_multiplier=1.0,
                clipping_norm=1.0,
                eligible_devices=300,
                expected_devices=30.0,
                holdout_mae=0.9 - 0.01 * number,
                release_epsilon=own,
                aggregation="secure",
                private=True,
            )
        for week, period in enumerate(WEEKS):
            composed += 0.6
            store.record_analytics_week(
                _week(period, week),
                epsilon=composed,
                purpose="population-analytics",
                aggregation="central",
                private=True,
            )


def write_another_week(url: str, period: date) -> None:
    """One more private week of analytics after :data:`WEEKS` (a store that changed)."""
    with ReleaseStore(url) as store:
        store.record_analytics_week(
            _week(period, len(WEEKS)),
            epsilon=0.6 * (len(ROUND_EPSILONS) + len(WEEKS) + 1),
            purpose="population-analytics",
            aggregation="central",
            private=True,
        )


def write_old_store(url: str) -> None:
    """A store as a version before ``release_epsilon``, ``aggregation`` and ``private`` left it."""
    write_private_store(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        for column in NEW_RELEASE_COLUMNS:
            connection.execute(text(f"ALTER TABLE release DROP COLUMN {column}"))
    engine.dispose()
