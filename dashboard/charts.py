"""Altair charts of released figures: values with their noise bands, never raw data."""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard.labels import EPS_COMPOSED

__all__ = [
    "Z95",
    "band_line",
    "bin_intervals",
    "cohort_heatmap",
    "cohort_intervals",
    "distribution_area",
    "epsilon_steps",
    "low_mood_share",
    "round_line",
]

Z95 = 1.959964
"""Half-width of a 95% interval in standard deviations (the released noise std)."""

_BLUE = "#0068c9"
_KIND_COLOURS = {"analytics": _BLUE, "population-analytics": _BLUE, "model-round": "#ff7f0e"}
_LEVEL_COLOURS = ["#d7191c", "#fdae61", "#e0e0a0", "#a6d96a", "#1a9641"]


def _with_band(frame: pd.DataFrame) -> pd.DataFrame:
    banded = frame.copy()
    banded["low"] = banded["value"] - Z95 * banded["value_std"]
    banded["high"] = banded["value"] + Z95 * banded["value_std"]
    return banded


def _week_axis(frame: pd.DataFrame) -> alt.X:
    span = frame["period"].max() - frame["period"].min() if not frame.empty else pd.Timedelta(0)
    fmt = "%b %Y" if span > pd.Timedelta(days=300) else "%d %b"
    return alt.X("period:T", title="week", axis=alt.Axis(format=fmt, labelOverlap=True))


def band_line(
    frame: pd.DataFrame,
    *,
    title: str,
    y_title: str,
    colour: str | None = None,
    percent: bool = False,
    bands: bool = True,
    limits: tuple[float, float] | None = None,
    height: int = 260,
) -> alt.LayerChart:
    """A weekly line with its 95% noise band (value +- 1.96 std), optionally one per ``colour``.

    Suppressed cells (no value) leave a gap: they are not drawn as zero. ``limits`` (the
    statistic's possible range, e.g. 1-5 for mood) clip the band, never the value.
    """
    data = _with_band(frame[~frame["suppressed"]])
    if limits is not None:
        data["low"] = data["low"].clip(*limits)
        data["high"] = data["high"].clip(*limits)
    fmt = ".1%" if percent else ".2f"
    base = alt.Chart(data).encode(x=_week_axis(data))
    scale = alt.Scale(zero=False)
    tooltip = [
        alt.Tooltip("period:T", title="week"),
        alt.Tooltip("value:Q", title=y_title, format=fmt),
        alt.Tooltip("low:Q", title="95% band from", format=fmt),
        alt.Tooltip("high:Q", title="95% band to", format=fmt),
    ]
    axis = alt.Axis(format="%") if percent else alt.Axis()
    order = list(dict.fromkeys(frame[colour])) if colour else None
    colour_enc = alt.Color(f"{colour}:N", title=None, sort=order) if colour else alt.Undefined
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title=y_title, scale=scale, axis=axis),
        y2="high:Q",
        color=alt.Color(f"{colour}:N", sort=order, legend=None) if colour else alt.Undefined,
    )
    line = base.mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        y=alt.Y("value:Q", title=y_title, scale=scale, axis=axis),
        color=colour_enc,
        tooltip=tooltip + ([alt.Tooltip(f"{colour}:N")] if colour else []),
    )
    layers = [band, line] if bands else [line]
    chart = alt.LayerChart(layer=layers).properties(title=title, height=height)
    return chart.resolve_legend(color="independent") if colour else chart


def low_mood_share(frame: pd.DataFrame) -> alt.LayerChart:
    """The weekly share of low-mood days with its noise band (Overview and Population)."""
    return band_line(
        frame,
        title="Share of low-mood days (mood ≤ 2)",
        y_title="share",
        percent=True,
        limits=(0, 1),
    )


def bin_intervals(frame: pd.DataFrame, *, label: str, title: str, y_title: str) -> alt.LayerChart:
    """Each bin's mean over the weeks shown, with a 95% interval, in the bins' own order.

    Averaging released weekly values is post-processing; the std of the average is the
    root of the summed variances over the number of weeks (independent noise).
    """
    released = frame[~frame["suppressed"]]
    order = list(dict.fromkeys(frame[label]))
    pooled = (
        released.groupby(label, sort=False)
        .agg(
            value=("value", "mean"),
            variance=("value_std", lambda s: float((s**2).sum()) / max(len(s), 1) ** 2),
            weeks=("value", "size"),
        )
        .reset_index()
    )
    pooled["value_std"] = pooled["variance"] ** 0.5
    data = _with_band(pooled)
    x = alt.X(f"{label}:N", title=None, sort=order, axis=alt.Axis(labelAngle=0))
    scale = alt.Scale(zero=False)
    rule = (
        alt.Chart(data)
        .mark_rule(strokeWidth=3, color=_BLUE, opacity=0.6)
        .encode(x=x, y=alt.Y("low:Q", title=y_title, scale=scale), y2="high:Q")
    )
    point = (
        alt.Chart(data)
        .mark_point(filled=True, size=90, color=_BLUE)
        .encode(
            x=x,
            y=alt.Y("value:Q", scale=scale),
            tooltip=[
                alt.Tooltip(f"{label}:N", title="bin"),
                alt.Tooltip("value:Q", title=y_title, format=".2f"),
                alt.Tooltip("low:Q", title="95% from", format=".2f"),
                alt.Tooltip("high:Q", title="95% to", format=".2f"),
                alt.Tooltip("weeks:Q", title="weeks released"),
            ],
        )
    )
    return alt.LayerChart(layer=[rule, point]).properties(title=title, height=260)


def distribution_area(frame: pd.DataFrame, *, height: int = 260) -> alt.Chart:
    """Stacked weekly shares of mood levels 1-5 (released cells only)."""
    data = frame[(~frame["suppressed"]) & (frame["level"].isin(["1", "2", "3", "4", "5"]))]
    # mark_*() are declared to return Self, but through altair's use_signature decorator
    # mypy sees Any: the annotation restores the declared type.
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_area()
        .encode(
            x=_week_axis(data),
            y=alt.Y("value:Q", stack="normalize", title="share of days", axis=alt.Axis(format="%")),
            color=alt.Color(
                "level:O",
                title="mood",
                scale=alt.Scale(domain=["1", "2", "3", "4", "5"], range=_LEVEL_COLOURS),
                sort="descending",
            ),
            order=alt.Order("level:O", sort="ascending"),
            tooltip=[
                alt.Tooltip("period:T", title="week"),
                alt.Tooltip("level:O", title="mood"),
                alt.Tooltip("value:Q", title="share", format=".1%"),
            ],
        )
        .properties(title="Distribution of daily mood levels", height=height)
    )
    return chart


def cohort_intervals(frame: pd.DataFrame, *, height: int | None = None) -> alt.LayerChart:
    """Each cohort's mean with its 95% interval, side by side; suppressed ones say so."""
    data = _with_band(frame)
    data["status"] = data["suppressed"].map({True: "suppressed", False: "released"})
    released = data[~data["suppressed"]]
    lo = float(released["low"].min()) if not released.empty else 1.0
    hi = float(released["high"].max()) if not released.empty else 5.0
    data["text_x"] = lo
    y = alt.Y("cell:N", title=None, sort=None, axis=alt.Axis(labelOverlap=False, labelLimit=200))
    base = alt.Chart(data)
    x_scale = alt.Scale(domain=[lo - 0.05, hi + 0.05], zero=False)
    rule = (
        base.transform_filter("datum.status == 'released'")
        .mark_rule(strokeWidth=2)
        .encode(
            x=alt.X("low:Q", title="mean mood (1-5), 95% interval", scale=x_scale),
            x2="high:Q",
            y=y,
            color=alt.Color("age_band:N", title="age band"),
        )
    )
    point = (
        base.transform_filter("datum.status == 'released'")
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X("value:Q", scale=x_scale),
            y=y,
            color=alt.Color("age_band:N"),
            tooltip=[
                alt.Tooltip("cell:N", title="cohort"),
                alt.Tooltip("value:Q", title="mean mood", format=".2f"),
                alt.Tooltip("low:Q", title="95% from", format=".2f"),
                alt.Tooltip("high:Q", title="95% to", format=".2f"),
                alt.Tooltip("noisy_count:Q", title="devices (noisy)", format=".0f"),
            ],
        )
    )
    label = (
        base.transform_filter("datum.status == 'suppressed'")
        .mark_text(align="left", color="#888", fontStyle="italic")
        .encode(x=alt.X("text_x:Q", scale=x_scale), y=y, text=alt.value("suppressed"))
    )
    rows = max(len(data), 1)
    return alt.LayerChart(layer=[rule, point, label]).properties(
        height=height or min(24 * rows + 40, 1600)
    )


def cohort_heatmap(frame: pd.DataFrame) -> alt.LayerChart:
    """Age band x region: colour and text for released means, "suppressed" otherwise."""
    data = frame.copy()
    data["label"] = [
        "suppressed" if hidden else f"{value:.2f}"
        for hidden, value in zip(data["suppressed"], data["value"], strict=True)
    ]
    base = alt.Chart(data).encode(
        x=alt.X("region:N", title="region", sort=None, axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("age_band:N", title="age band", sort=None),
    )
    tiles = base.mark_rect().encode(
        color=alt.condition(
            "datum.suppressed",
            alt.value("#eeeeee"),
            alt.Color("value:Q", title="mean mood", scale=alt.Scale(scheme="redyellowgreen")),
        ),
        tooltip=[
            alt.Tooltip("cell:N", title="cohort"),
            alt.Tooltip("label:N", title="mean mood"),
        ],
    )
    text = base.mark_text(fontSize=10).encode(
        text="label:N",
        color=alt.condition("datum.suppressed", alt.value("#777777"), alt.value("black")),
    )
    return alt.LayerChart(layer=[tiles, text]).properties(
        height=40 * max(data["age_band"].nunique(), 1) + 40
    )


def epsilon_steps(
    frame: pd.DataFrame,
    *,
    budget: float | None,
    x: str,
    x_title: str,
    y_title: str = EPS_COMPOSED,
) -> alt.LayerChart:
    """Composed epsilon (the largest total any user has spent) after each release, with
    the budget: one staircase through every release in order; the points say which kind
    each was. ``frame["epsilon"]`` must be a composed figure, never an incremental one.
    """
    x_enc = alt.X(x, title=x_title)
    if x.endswith(":T"):
        x_enc = alt.X(x, title=x_title, axis=alt.Axis(format="%d %b %y"))
    elif x.endswith(":Q"):  # releases and rounds are counted: no 1.5th release
        x_enc = alt.X(x, title=x_title, axis=alt.Axis(format="d", tickMinStep=1))
    y_enc = alt.Y("epsilon:Q", title=y_title)
    kinds = sorted(frame["kind"].unique())
    line = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", color="#8fa8c8")
        .encode(x=x_enc, y=y_enc)
    )
    points = (
        alt.Chart(frame)
        .mark_point(filled=True, size=30)
        .encode(
            x=x_enc,
            y=y_enc,
            color=alt.Color(
                "kind:N",
                title="release",
                scale=alt.Scale(domain=kinds, range=[_KIND_COLOURS.get(k, "#888") for k in kinds]),
            ),
            tooltip=[
                alt.Tooltip("title:N"),
                alt.Tooltip("epsilon:Q", title=y_title, format=".3f"),
            ],
        )
    )
    steps = alt.LayerChart(layer=[line, points])
    if budget is None:
        return steps
    rule = (
        alt.Chart(pd.DataFrame({"budget": [budget]}))
        .mark_rule(color="#c0392b", strokeDash=[6, 3])
        .encode(y="budget:Q", tooltip=[alt.Tooltip("budget:Q", title="budget (epsilon)")])
    )
    return alt.LayerChart(layer=[steps, rule])


def round_line(frame: pd.DataFrame, *, y: str, title: str, y_title: str) -> alt.Chart:
    """One value per model round."""
    chart: alt.Chart = (  # the declared type of mark_line() (see distribution_area)
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("round:Q", title="round", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
            tooltip=[alt.Tooltip("round:Q"), alt.Tooltip(f"{y}:Q", format=".3f")],
        )
        .properties(title=title, height=260)
    )
    return chart
