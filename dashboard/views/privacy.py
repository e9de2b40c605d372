"""Privacy: what every release cost, per purpose and per release, against the budget."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data
from dashboard._cells import number

auth.require_analyst(data.settings())  # also here: a view must never render for a stranger
url = data.store_url()
st.title("Privacy")

releases = data.releases(url)
analytics = data.analytics_releases(url)
rounds = data.model_rounds(url)
runs = data.training_runs(url)

with st.expander("What epsilon means here", expanded=releases.empty):
    st.markdown(
        """
Every figure on this dashboard is computed from people's diaries **without** the
diaries leaving their phones, and with random noise added on purpose.
**ε (epsilon)** measures how much any single person can change what is published:
whatever an analyst sees, it was at most **e^ε times** more (or less) likely with that
person's diary than without it, except with a tiny probability **δ**. Smaller is more
private. The costs of all releases add up for each person (they compose), so every
person has a **budget**: once a release would take anyone past it, the server refuses
to publish it. "Largest user" below is the person who has spent the most so far:
everyone else has spent at most that much.
"""
    )

if releases.empty:
    st.info("Nothing has been published yet, so no privacy has been spent.")
    st.stop()

budgets = pd.concat([releases["run_epsilon_budget"], releases["analytics_epsilon_budget"]])
budgets = budgets.dropna()
budget = float(budgets.max()) if not budgets.empty else None
spent = float(releases["epsilon"].max())
delta = float(releases["delta"].max())
cols = st.columns(3)
cols[0].metric("Spent by the largest user", f"ε = {spent:.2f}")
cols[1].metric("Per-user budget", "n/a" if budget is None else f"ε = {budget:g}")
cols[2].metric(
    "Worst-case likelihood ratio",
    f"× {math.exp(spent):,.0f}" if spent < 20 else "very large",
    help=f"e^ε at δ = {delta:g}: how much one person can shift the odds of any outcome.",
)
if budget is not None:
    st.progress(min(spent / budget, 1.0), text=f"{spent / budget:.0%} of the budget spent")

frame = releases.assign(release=range(1, len(releases) + 1))
st.altair_chart(
    charts.epsilon_steps(
        frame, budget=budget, x="release:Q", x_title="release (in order)"
    ).properties(title="Privacy spent after each release (largest user, all purposes)", height=280),
    width="stretch",
)

st.subheader("Per purpose")
per_purpose = []
if not analytics.empty:
    per_purpose.append(
        {
            "purpose": "population-analytics",
            "releases": len(analytics),
            "ε of this purpose alone": float(analytics["purpose_epsilon"].max()),
            "budget": float(analytics["epsilon_budget"].max()),
        }
    )
if not rounds.empty and not runs.empty:
    for run in runs.itertuples(index=False):
        mine = rounds[rounds["run_id"] == run.id]
        if mine.empty:
            continue
        counts = Counter(zip(mine["sampling_rate"], mine["noise_multiplier"], strict=True))
        history = tuple(sorted((float(q), float(s), n) for (q, s), n in counts.items()))
        per_purpose.append(
            {
                "purpose": f"{run.purpose} (run {run.id})",
                "releases": len(mine),
                "ε of this purpose alone": data.history_epsilon(
                    history, number(run.delta), str(run.accounting)
                ),
                "budget": number(run.epsilon_budget),
            }
        )
st.caption(
    "Each purpose's spend for a person eligible for every one of its releases. Spends "
    "compose into the total above, which is less than their sum."
)
st.dataframe(pd.DataFrame(per_purpose).round(3), hide_index=True, width="stretch")

if not analytics.empty:
    by_week = analytics.groupby("period", as_index=False).agg(
        epsilon=("purpose_epsilon", "max"), budget=("epsilon_budget", "max")
    )
    by_week["kind"] = "population-analytics"
    by_week["title"] = "week of " + by_week["period"].dt.strftime("%Y-%m-%d")
    st.markdown("**Analytics alone: spent so far by a person in every weekly release**")
    st.altair_chart(
        charts.epsilon_steps(by_week, budget=budget, x="period:T", x_title="week").properties(
            height=240
        ),
        width="stretch",
    )

st.subheader("Per release")
own = frame["own_epsilon"].copy()
if not rounds.empty and not runs.empty:
    accounting = dict(zip(runs["id"], runs["accounting"], strict=True))
    for row in rounds.itertuples(index=False):  # a model round alone: one (q, sigma) step
        one = ((number(row.sampling_rate), number(row.noise_multiplier), 1),)
        method = str(accounting.get(row.run_id, "rdp"))
        own[frame["id"] == row.release_id] = data.history_epsilon(one, number(row.delta), method)
table = pd.DataFrame(
    {
        "#": frame["release"],
        "kind": frame["kind"],
        "purpose": frame["purpose"],
        "what": frame["title"],
        "ε of this release": own.round(3),
        "ε after (largest user)": frame["epsilon"].round(3),
        "δ": frame["delta"],
    }
)
st.dataframe(table.iloc[::-1], hide_index=True, width="stretch")
