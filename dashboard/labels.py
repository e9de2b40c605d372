"""What every privacy figure is called on the pages, in one place so the pages agree.

Two kinds of epsilon are published and they must never be confused: a *composed* figure
is the largest total any person the release may reflect had spent after it (every
purpose; it is what the budget caps), an *incremental* one is what one release (or one
query, or one round) cost by itself. Each release also records how it was made
(``aggregation``) and whether a fixed seed made it reproducible (``private``).
"""

from __future__ import annotations

from typing import Final

import pandas as pd

__all__ = [
    "AGGREGATION",
    "AGGREGATION_MODES",
    "EPS_COMPOSED",
    "EPS_PURPOSE",
    "EPS_QUERY",
    "EPS_RELEASE",
    "EPS_ROUND",
    "EPS_WEEK",
    "PRIVATE",
    "aggregation_label",
    "aggregation_note",
    "not_private_warning",
    "private_label",
]

EPS_COMPOSED: Final = "ε composed (max total spend)"
"""The largest total spend, every purpose, of the people a release may reflect."""
EPS_RELEASE: Final = "ε of this release alone"
EPS_ROUND: Final = "ε of this round alone"
EPS_QUERY: Final = "ε of this query alone"
EPS_WEEK: Final = "ε of its week (all queries)"
EPS_PURPOSE: Final = "ε composed (this purpose only)"

AGGREGATION: Final = "made by"
PRIVATE: Final = "private"

AGGREGATION_MODES: Final = {
    "secure": "secure aggregation with the noise added on the devices: the server saw "
    "only the noised sum",
    "central": "central noise: a trusted server saw the clipped contributions and added the noise",
}
_SHORT: Final = {"secure": "secure aggregation", "central": "central noise"}


def aggregation_label(mode: object) -> str:
    """The short name of an ``aggregation`` value for a table cell.

    >>> aggregation_label("secure"), aggregation_label("central")
    ('secure aggregation', 'central noise')
    """
    return _SHORT.get(str(mode), f"unknown ({mode})")


def private_label(private: object) -> str:
    """A table cell: ``yes`` for a private release, a loud marker for a seeded one.

    >>> private_label(True), private_label(False)
    ('yes', 'NOT PRIVATE (seeded)')
    """
    return "yes" if bool(private) else "NOT PRIVATE (seeded)"


def aggregation_note(modes: pd.Series) -> str:
    """One sentence on how the releases in ``modes`` (their ``aggregation``) were made.

    >>> aggregation_note(pd.Series(["secure", "secure"]))  # doctest: +ELLIPSIS
    'Made by secure aggregation with the noise added on the devices: ... (all 2 releases).'
    >>> aggregation_note(pd.Series(["secure", "central", "secure"]))  # doctest: +ELLIPSIS
    'How the 3 releases were made: 2 by secure aggregation ...; 1 by central noise: ...'
    """
    counts = modes.astype(str).value_counts()
    total = int(counts.sum())
    order = [m for m in ("secure", *sorted(set(counts.index) - {"secure"})) if m in counts.index]
    if len(order) == 1:
        only = order[0]
        what = AGGREGATION_MODES.get(only, only)
        return f"Made by {what} (all {total} release{'s' if total != 1 else ''})."
    parts = [f"{int(counts[m])} by {AGGREGATION_MODES.get(m, m)}" for m in order]
    return f"How the {total} releases were made: " + "; ".join(parts) + "."


def not_private_warning(private: pd.Series) -> str | None:
    """The banner for a store holding seeded releases (``private`` false), else None.

    >>> not_private_warning(pd.Series([True, True])) is None
    True
    >>> not_private_warning(pd.Series([True, False]))  # doctest: +ELLIPSIS
    '**NOT PRIVATE: 1 of 2 releases come from a seeded demo or test run.**...'
    """
    seeded = int((~private.astype(bool)).sum())
    if not seeded:
        return None
    total = len(private)
    which = "All" if seeded == total else f"{seeded} of"
    return (
        f"**NOT PRIVATE: {which} {total} releases come from a seeded demo or test run.** "
        "Its sampling and noise can be reproduced from the seed, so these figures carry "
        "no privacy guarantee, whatever their ε says. Such rows are marked "
        "*NOT PRIVATE (seeded)* in the tables and CSV files."
    )
