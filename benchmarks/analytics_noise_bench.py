"""Analytics noise benchmark: how much wider the released figures are with distributed noise.

Run from the repository root::

    python benchmarks/analytics_noise_bench.py            # 50, 300 and 3,000 devices
    python benchmarks/analytics_noise_bench.py --quick    # 50 and 300 devices, 3 weeks
    python benchmarks/analytics_noise_bench.py --epsilon 2 --devices 100 1000

For each cohort size N (eligible devices) a synthetic population
(``client_sdk.sim.SyntheticPopulation``) contributes to the four weekly queries
(``client_sdk.queries.standard_queries``), each device's vectors computed by
``Query.contributions`` (the code a device runs, vectorized over devices). The same
contributions are released twice a week, for ``--weeks`` weeks, through the production
round (``server.analytics.AnalyticsRound.release``: plan, charge, aggregate, publish):

- **central**: ``aggregation="central"``, a trusted server sums the bounded vectors and
  adds Gaussian noise of std sigma * sensitivity to every slot;
- **secure** (the default mode): ``aggregation="secure"``, the round's SecAgg+ plan over
  the N devices (``server.secagg.plan_round``: survivor floor t), each device's vector
  encoded with its Skellam noise share (``privacy.DistributedSkellam``, calibrated so the
  sum over t survivors carries the same per-slot noise) and the encodings summed modulo
  2^32 (``server.analytics.in_process_sum``: SecAgg+'s masks cancel in that sum). With
  no dropouts all N shares are in the sum, so each slot's noise std is sqrt(N / t) times
  the central one.

Each week is its own plan of ``--epsilon`` for its four queries at delta 1e-5, and both
modes use that plan's sigma (``AnalyticsPlan.noise_multiplier``); each release records
its own epsilon, shown for both. Measured per query: the noise std of every slot the round reports
(``QueryRelease.noise_std``), and the width of the 95% interval of each released cell,
2 x 1.96 x its ``value_std`` (the delta-method std of noisy sum over noisy count,
``server.figures.release_cells``), median over the released cells of all weeks, and
the median secure/central ratio over the cells released by both in the same week; and
how many cells were released (a cell is suppressed when its noisy count misses the
threshold, which grows with the noise). Ratios are secure over central.

The result is a rich table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client_sdk.queries import Query, iso_week_start, standard_queries  # noqa: E402
from client_sdk.sim.synthetic import SyntheticPopulation  # noqa: E402
from privacy import Accountant  # noqa: E402
from server.analytics import AnalyticsPlan, AnalyticsRound, AnalyticsRun  # noqa: E402
from server.releases import QueryRelease, ReleaseStore  # noqa: E402
from server.secagg import choose_graph  # noqa: E402
from server.settings import Aggregation  # noqa: E402

DELTA = 1e-5
Z95 = 1.959963984540054  # the normal's 97.5% quantile
MODES: tuple[Aggregation, ...] = ("central", "secure")

Contributions = dict[str, dict[str, np.ndarray]]


def weekly_contributions(
    devices: int, *, weeks: int, seed: int
) -> tuple[tuple[Query, ...], list[str], list[tuple[date, Contributions]]]:
    """The queries, the devices' keys and each week's contributions of every device."""
    population = SyntheticPopulation(devices, days=7 * (weeks + 1), seed=seed)
    params = population.params
    queries = standard_queries(
        age_bands=[band.name for band in params.age_bands],
        regions=[region.name for region in params.regions],
    )
    keys = [population.device_key_for(i).device_key for i in range(devices)]
    mood = np.where(population.logged, population.mood, np.nan).astype(np.float64)
    sleep = np.asarray(population.sleep_hours, dtype=np.float64)
    cohort = population.age_band * len(params.regions) + population.region
    first = iso_week_start(population.start)
    if first < population.start:
        first += timedelta(weeks=1)
    out: list[tuple[date, Contributions]] = []
    for week in range(weeks):
        monday = first + timedelta(weeks=week)
        days = slice((monday - population.start).days, (monday - population.start).days + 7)
        vectors = {
            q.name: q.contributions(mood=mood[:, days], sleep=sleep[:, days], cohort=cohort)
            for q in queries
        }
        by_key = {
            key: {name: rows[i] for name, rows in vectors.items()} for i, key in enumerate(keys)
        }
        out.append((monday, by_key))
    return queries, keys, out


def release_weeks(
    mode: Aggregation,
    *,
    queries: tuple[Query, ...],
    keys: list[str],
    weeks: list[tuple[date, Contributions]],
    epsilon: float,
    folder: Path,
) -> list[QueryRelease]:
    """Every week released through the production round in ``mode``, each week its own
    plan (its four queries may cost ``epsilon``)."""
    releases: list[QueryRelease] = []
    with (
        ReleaseStore(f"sqlite:///{folder / f'releases-{mode}.db'}") as store,
        Accountant("sqlite://", epsilon_budget=1e9, delta=DELTA) as accountant,
    ):
        for week, contributions in weeks:
            plan = AnalyticsPlan(weeks=(week,), epsilon=epsilon, delta=DELTA, queries=queries)
            run = AnalyticsRun(
                plan=plan, eligibility=None, accountant=accountant, store=store, aggregation=mode
            )
            report = AnalyticsRound(run, week).release(keys, contributions)
            releases.extend(report.releases)
    return releases


def _widths(releases: list[QueryRelease], query: str) -> list[float]:
    return [
        2 * Z95 * cell.value_std
        for release in releases
        if release.query == query
        for cell in release.cells
        if not cell.suppressed and cell.value_std is not None
    ]


def _paired_ratios(central: list[QueryRelease], secure: list[QueryRelease]) -> list[float]:
    """secure / central width of every cell released by both in the same week."""
    stds = {
        (release.period, cell.cell): cell.value_std
        for release in central
        for cell in release.cells
        if not cell.suppressed and cell.value_std
    }
    return [
        cell.value_std / stds[(release.period, cell.cell)]
        for release in secure
        for cell in release.cells
        if not cell.suppressed and cell.value_std and (release.period, cell.cell) in stds
    ]


def _cells(releases: list[QueryRelease], query: str) -> tuple[int, int]:
    cells = [cell for r in releases if r.query == query for cell in r.cells]
    return sum(not cell.suppressed for cell in cells), len(cells)


def measure_size(
    devices: int, *, weeks: int, epsilon: float, seed: int, folder: Path
) -> dict[str, Any]:
    """Both modes over the same weeks of the same ``devices``; per query figures."""
    started = time.perf_counter()
    queries, keys, contributions = weekly_contributions(devices, weeks=weeks, seed=seed)
    released = {
        mode: release_weeks(
            mode,
            queries=queries,
            keys=keys,
            weeks=contributions,
            epsilon=epsilon,
            folder=folder / f"n{devices}",
        )
        for mode in MODES
    }
    graph = choose_graph(devices)
    rows = []
    for query in queries:
        figures: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            ours = [r for r in released[mode] if r.query == query.name]
            widths = _widths(ours, query.name)
            shown, total = _cells(ours, query.name)
            figures[mode] = {
                "noise_std": statistics.median(r.noise_std for r in ours),
                "round_epsilon": statistics.median(r.round_epsilon for r in ours),
                "threshold": statistics.median(r.threshold for r in ours),
                "width_median": statistics.median(widths) if widths else None,
                "cells_released": shown,
                "cells": total,
            }
        central, secure = figures["central"], figures["secure"]
        paired = _paired_ratios(
            [r for r in released["central"] if r.query == query.name],
            [r for r in released["secure"] if r.query == query.name],
        )
        row: dict[str, Any] = {"query": query.name, "unit": query.unit}
        row.update(figures)
        row["noise_ratio"] = secure["noise_std"] / central["noise_std"]
        row["width_ratio_paired"] = statistics.median(paired) if paired else None
        row["paired_cells"] = len(paired)
        rows.append(row)
    return {
        "devices": devices,
        "threshold_t": graph.min_survivors,
        "sqrt_n_over_t": (devices / graph.min_survivors) ** 0.5,
        "weeks": weeks,
        "queries": rows,
        "seconds": time.perf_counter() - started,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("server").setLevel(logging.WARNING)
    sizes = args.devices or ((50, 300) if args.quick else (50, 300, 3000))
    weeks = args.weeks or (3 if args.quick else 10)
    with tempfile.TemporaryDirectory(prefix="moodfed-analytics-noise-") as name:
        rows = [
            measure_size(n, weeks=weeks, epsilon=args.epsilon, seed=args.seed, folder=Path(name))
            for n in sizes
        ]
    return {"epsilon": args.epsilon, "delta": DELTA, "weeks": weeks, "sizes": rows}


def _width(value: float | None) -> str:
    return "suppressed" if value is None else f"{value:.3f}"


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"95% interval width of released analytics, distributed (secure) vs central noise; "
            f"ε={result['epsilon']:g} per week (4 queries), δ={result['delta']:g}, "
            f"{result['weeks']} weeks"
        ),
        caption=(
            "width: median over released cells of 2 x 1.96 x value_std, in the query's unit "
            "(share of days, or mood 1-5); its x: median secure/central ratio over the cells "
            "released by both in the same week (how many); noise std: per slot of the summed "
            "vectors; cells: "
            "released / all (suppressed below the noisy-count threshold). secure: SecAgg+ "
            "with every device's Skellam share in the sum, calibrated for t survivors."
        ),
    )
    for column in (
        "devices (t)",
        "query",
        "noise std central",
        "secure",
        "x",
        "width central",
        "secure",
        "x",
        "cells central",
        "secure",
        "ε central / secure",
    ):
        table.add_column(column, justify="left" if column == "query" else "right")
    for size in result["sizes"]:
        for index, row in enumerate(size["queries"]):
            central, secure = row["central"], row["secure"]
            table.add_row(
                f"{size['devices']:,} ({size['threshold_t']:,})" if index == 0 else "",
                row["query"],
                f"{central['noise_std']:.3f}",
                f"{secure['noise_std']:.3f}",
                f"{row['noise_ratio']:.3f}",
                _width(central["width_median"]),
                _width(secure["width_median"]),
                "-"
                if row["width_ratio_paired"] is None
                else f"{row['width_ratio_paired']:.3f} ({row['paired_cells']})",
                f"{central['cells_released']}/{central['cells']}",
                f"{secure['cells_released']}/{secure['cells']}",
                f"{central['round_epsilon']:.3f} / {secure['round_epsilon']:.3f}",
                end_section=index == len(size["queries"]) - 1,
            )
    Console(width=180).print(table)
    for size in result["sizes"]:
        print(
            f"N={size['devices']:,}: t={size['threshold_t']:,}, "
            f"sqrt(N/t)={size['sqrt_n_over_t']:.3f} (the secure noise's factor with no "
            f"dropouts); {size['seconds']:.1f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", help="cohort sizes (50 300 3000)")
    parser.add_argument("--weeks", type=int, help="weeks released per size (default 10)")
    parser.add_argument(
        "--epsilon", type=float, default=1.0, help="ε of one week's 4 queries (each week's plan)"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50 and 300 devices, 3 weeks")
    args = parser.parse_args(argv)
    if args.devices and min(args.devices) < 3:
        parser.error("a secure sum needs at least 3 devices")
    if args.weeks is not None and args.weeks < 1:
        parser.error("--weeks must be at least 1")
    if not args.epsilon > 0:
        parser.error("--epsilon must be positive")
    result = run(args)
    show(result)
    result["quick"] = args.quick
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({"benchmark": "moodfed.analytics_noise", **result}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
