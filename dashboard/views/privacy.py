"""Privacy: what every release cost, per purpose and per release, against the budget."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, labels, tables
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
        f"""
Every figure on this dashboard is computed from people's diaries **without** the
diaries leaving their phones, and with random noise added on purpose.
**ε (epsilon)** measures how much any single person can change what is published:
whatever an analyst sees, it was at most **e^ε times** more (or less) likely with that
person's diary than without it, except with a tiny probability **δ**. Smaller is more
private. The costs of all releases add up for each person (they compose), so every
person has a **budget**: once a release would take anyone past it, the server refuses
to publish it.

Two kinds of ε are shown, and each is labelled:

- **{labels.EPS_COMPOSED}**: the largest *total* any person had spent after a release,
  over every release and every purpose so far (composed, so less than the plain sum).
  It is what the budget caps; everyone else has spent at most that much.
- **{labels.EPS_RELEASE}** (or *of this round*, *of this query alone*): *incremental*,
  what that one release cost by itself. A week's analytics queries are charged together,
  so an analytics release shows its week's cost.

How a release was made (the **{labels.AGGREGATION}** column):
**secure aggregation**: the devices added the noise themselves and their updates were
masked (SecAgg+), so the server saw only the noised sum; **central noise**: a trusted
server saw each device's clipped contribution and added the noise itself.
A release marked **NOT PRIVATE (seeded)** comes from a demo or test run with a fixed
seed: its sampling and noise can be reproduced, so its ε promises nothing.
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
cols[0].metric(
    labels.EPS_COMPOSED,
    f"ε = {spent:.2f}",
    help="The largest total any person has spent, every release and purpose together.",
)
cols[1].metric("Per-user budget", "n/a" if budget is None else f"ε = {budget:g}")
cols[2].metric(
    "Worst-case likelihood ratio",
    f"× {math.exp(spent):,.0f}" if spent < 20 else "very large",
    help=f"e^ε (ε composed) at δ = {delta:g}: how much one person can shift the odds of "
    "any outcome.",
)
if budget is not None:
    st.progress(min(spent / budget, 1.0), text=f"{spent / budget:.0%} of the budget spent")

frame = releases.assign(release=range(1, len(releases) + 1))
st.altair_chart(
    charts.epsilon_steps(
        frame, budget=budget, x="release:Q", x_title="release (in order)"
    ).properties(
        title="ε composed (max total spend, every purpose) after each release", height=280
    ),
    width="stretch",
)

st.subheader("Per purpose")
per_purpose = []
if not analytics.empty:
    per_purpose.append(
        {
            "purpose": "population-analytics",
            "releases": len(analytics),
            labels.EPS_PURPOSE: float(analytics["purpose_epsilon"].max()),
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
                labels.EPS_PURPOSE: data.history_epsilon(
                    history, number(run.delta), str(run.accounting)
                ),
                "budget": number(run.epsilon_budget),
            }
        )
st.caption(
    "Each purpose's own spend, composed over its releases only, for a person eligible for "
    "every one of them. The purposes compose into the total above, which is less than "
    "their sum."
)
st.dataframe(pd.DataFrame(per_purpose).round(3), hide_index=True, width="stretch")

if not analytics.empty:
    by_week = analytics.groupby("period", as_index=False).agg(
        epsilon=("purpose_epsilon", "max"), budget=("epsilon_budget", "max")
    )
    by_week["kind"] = "population-analytics"
    by_week["title"] = "week of " + by_week["period"].dt.strftime("%Y-%m-%d")
    st.markdown("**Analytics only: composed spend of a person in every weekly release**")
    st.altair_chart(
        charts.epsilon_steps(
            by_week, budget=budget, x="period:T", x_title="week", y_title=labels.EPS_PURPOSE
        ).properties(height=240),
        width="stretch",
    )

st.subheader("Per release")
own = frame["release_epsilon"].astype(float).fillna(frame["round_epsilon"].astype(float))
if not rounds.empty and not runs.empty:  # recorded, or recomputed in old stores
    alone = dict(zip(rounds["release_id"], data.round_epsilons(rounds, runs), strict=True))
    own = own.fillna(frame["id"].map(alone))
table = pd.DataFrame(
    {
        "#": frame["release"],
        "what": frame["title"],
        labels.EPS_RELEASE: own.round(3),
        labels.EPS_COMPOSED: frame["epsilon"].round(3),
        labels.PRIVATE: frame["private"].map(labels.private_label),
        labels.AGGREGATION: frame["aggregation"].map(labels.aggregation_label),
        "kind": frame["kind"],
        "purpose": frame["purpose"],
        "δ": frame["delta"],
    }
)
st.dataframe(table.iloc[::-1], hide_index=True, width="stretch")
st.caption(
    f"{labels.aggregation_note(frame['aggregation'])} **{labels.EPS_RELEASE}** is "
    f"incremental; **{labels.EPS_COMPOSED}** is the total after it."
    + (
        " Where the server did not record a release's own ε, an analytics release shows its "
        "week's round and a model round's is recomputed from its q and σ as a subsampled "
        "Gaussian."
        if frame["release_epsilon"].isna().any()
        else ""
    )
)
st.download_button(
    "Download the releases (CSV)",
    tables.csv_bytes(table),
    file_name="moodfed-releases.csv",
    mime="text/csv",
)
