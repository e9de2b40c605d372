"""Overview: the latest weekly figures and their trends, the model and the privacy spent."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, labels

auth.require_analyst(data.settings())  # also here: a view must never render for a stranger
url = data.store_url()
st.title("Population mood at a glance")

distribution = data.cells(url, "mood-distribution")
low = data.cells(url, "low-mood-share")
rounds = data.model_rounds(url)
releases = data.releases(url)

if distribution.empty:
    st.info(
        "No analytics releases yet: the figures appear once the server has run a "
        "weekly analytics round."
    )
else:
    mean = distribution[distribution["cell"] == "mean"].sort_values("period")
    released = mean[~mean["suppressed"]]
    latest_week = mean["period"].max()
    st.caption(
        f"Latest week: {latest_week:%Y-%m-%d} (ISO week {latest_week.isocalendar().week}). "
        "± is a 95% interval from the known noise."
    )
    cols = st.columns(4)
    if released.empty:
        cols[0].metric("Mean mood", "suppressed")
    else:
        last = released.iloc[-1]
        delta = None
        if len(released) > 1:
            delta = f"{last['value'] - released.iloc[-2]['value']:+.2f} vs previous week"
        cols[0].metric(
            "Mean mood (1-5)",
            f"{last['value']:.2f} ± {charts.Z95 * last['value_std']:.2f}",
            delta=delta,
            help="Derived from the week's released mood distribution.",
        )
        cols[2].metric(
            "Devices contributing (noisy)",
            f"{last['noisy_count']:,.0f}",
            help="Noisy count of devices that logged that week (no extra privacy cost).",
        )
    low_released = low[~low["suppressed"]].sort_values("period") if not low.empty else low
    if low_released.empty:
        cols[1].metric("Low-mood days", "suppressed")
    else:
        last_low = low_released.iloc[-1]
        cols[1].metric(
            "Low-mood days (mood ≤ 2)",
            f"{last_low['value']:.1%} ± {charts.Z95 * last_low['value_std']:.1%}",
        )
    if not releases.empty:
        spent = float(releases["epsilon"].max())
        budgets = pd.concat(
            [releases["run_epsilon_budget"], releases["analytics_epsilon_budget"]]
        ).dropna()
        budget = f" of {budgets.max():g}" if not budgets.empty else ""
        cols[3].metric(
            labels.EPS_COMPOSED,
            f"ε = {spent:.2f}{budget}",
            help="The largest total any person has spent so far, every release and purpose "
            "together, against the per-user budget. See the Privacy page.",
        )
    left, right = st.columns(2)
    left.altair_chart(
        charts.band_line(mean, title="Weekly mean mood", y_title="mean mood (1-5)", limits=(1, 5)),
        width="stretch",
    )
    if not low.empty:
        right.altair_chart(
            charts.low_mood_share(low),
            width="stretch",
        )

st.subheader("Shared model")
if rounds.empty:
    st.info("No model rounds published yet.")
else:
    last_round = rounds.sort_values(["created_at", "round"]).iloc[-1]
    model_cols = st.columns(3)
    mae = last_round["holdout_mae"]
    model_cols[0].metric(
        "Held-out error (MAE)", "n/a" if pd.isna(mae) else f"{mae:.3f}", help="Mood points."
    )
    model_cols[1].metric("Rounds published", f"{len(rounds)}")
    model_cols[2].metric(
        "ε composed after the latest round",
        f"ε = {last_round['epsilon']:.2f}",
        help="Composed: the largest total spend, every purpose, of the people this model "
        "may reflect, not the cost of the round alone (the Model page has both).",
    )
if not releases.empty:
    st.caption(labels.aggregation_note(releases["aggregation"]))
