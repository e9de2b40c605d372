"""Released figures as tables for display and CSV: suppressed cells say so, never zero.

Every row carries its privacy: the epsilon of its query alone (incremental), the composed
epsilon after it, how it was made, and a loud marker when a seed made it not private.
"""

from __future__ import annotations

import pandas as pd

from dashboard._cells import optional_number, timestamp
from dashboard.charts import Z95
from dashboard.labels import (
    AGGREGATION,
    EPS_COMPOSED,
    EPS_QUERY,
    PRIVATE,
    aggregation_label,
    private_label,
)

__all__ = ["csv_bytes", "released_table"]


def _fmt(value: float | None, *, percent: bool) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.2%}" if percent else f"{value:.3f}"


def released_table(frame: pd.DataFrame, *, percent: bool = False) -> pd.DataFrame:
    """One row per released cell: week, cell, value, its 95% interval, noisy count, its
    privacy (epsilon of the query alone and composed, how it was made, private) and status.

    Numbers are text, so a suppressed cell shows ``suppressed`` instead of a value.
    """
    columns = [
        "week",
        "query",
        "cell",
        "value",
        "95% low",
        "95% high",
        "devices (noisy)",
        "status",
        PRIVATE,
        EPS_QUERY,
        EPS_COMPOSED,
        AGGREGATION,
        "noise std (sums)",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for row in frame.itertuples(index=False):
        suppressed = bool(row.suppressed)
        value = None if suppressed else optional_number(row.value)
        std = None if suppressed else optional_number(row.value_std)
        status = "suppressed" if suppressed else ("derived" if row.derived else "released")
        low = high = ""
        if value is not None and std is not None:
            low = _fmt(value - Z95 * std, percent=percent)
            high = _fmt(value + Z95 * std, percent=percent)
        rows.append(
            {
                "week": timestamp(row.period).date().isoformat(),
                "query": row.query,
                "cell": row.cell,
                "value": "suppressed" if suppressed else _fmt(value, percent=percent),
                "95% low": low,
                "95% high": high,
                "devices (noisy)": "" if suppressed else f"{row.noisy_count:.0f}",
                "status": status,
                PRIVATE: private_label(row.private),
                EPS_QUERY: f"{row.epsilon:.3f}",
                EPS_COMPOSED: f"{row.epsilon_composed:.3f}",
                AGGREGATION: aggregation_label(row.aggregation),
                "noise std (sums)": f"{row.noise_std:.3f}",
            }
        )
    return pd.DataFrame(rows)


def csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV, for ``st.download_button``."""
    return table.to_csv(index=False).encode("utf-8")
