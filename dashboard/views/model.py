"""Model: the shared model's held-out error and the privacy spent, round by round."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, labels

auth.require_analyst(data.settings())  # also here: a view must never render for a stranger
url = data.store_url()
st.title("Shared model")

rounds = data.model_rounds(url)
runs = data.training_runs(url)
if rounds.empty or runs.empty:
    st.info("No model rounds published yet.")
    st.stop()

run_ids = runs["id"].tolist()
run_id = st.selectbox("Training run", run_ids) if len(run_ids) > 1 else run_ids[0]
run = runs[runs["id"] == run_id].iloc[0]
mine = rounds[rounds["run_id"] == run_id].sort_values("round")

st.caption(
    f"Run **{run_id}** ({run['status']}): {run['model'] or 'model'}; "
    f"{int(run['rounds_completed'])} of {int(run['planned_rounds'])} rounds; "
    f"noise multiplier σ = {run['noise_multiplier']:g}, clipping norm C = "
    f"{run['clipping_norm']:g}, about {run['expected_devices']:.0f} devices a round. "
    + (f"Stopped because: {run['stop_reason']}." if run["stop_reason"] else "")
)
if mine.empty:
    st.info("This run has not published a round yet.")
    st.stop()

left, right = st.columns(2)
metric_label = run["metric_label"] or "held-out error"
if mine["holdout_mae"].notna().any():
    left.altair_chart(
        charts.round_line(
            mine.dropna(subset=["holdout_mae"]),
            y="holdout_mae",
            title="Error per round",
            y_title="MAE (mood points)",
        ),
        width="stretch",
    )
    left.caption(metric_label)
else:
    left.info("No error metric was published for this run.")
frame = mine.assign(kind="model round", title="round " + mine["round"].astype(str))
right.altair_chart(
    charts.epsilon_steps(
        frame, budget=float(run["epsilon_budget"]), x="round:Q", x_title="round"
    ).properties(title="ε composed after each round", height=260),
    width="stretch",
)
table = pd.DataFrame(
    {
        "round": mine["round"],
        "MAE": mine["holdout_mae"].round(4),
        labels.EPS_ROUND: data.round_epsilons(mine, runs).round(3),
        labels.EPS_COMPOSED: mine["epsilon"].round(3),
        labels.PRIVATE: mine["private"].map(labels.private_label),
        labels.AGGREGATION: mine["aggregation"].map(labels.aggregation_label),
        "eligible devices": mine["eligible_devices"],
        "expected devices": mine["expected_devices"].round(1),
        "sampling rate q": mine["sampling_rate"].round(4),
        "noise multiplier σ": mine["noise_multiplier"],
        "clipping norm C": mine["clipping_norm"],
        "δ": mine["delta"],
    }
)
st.dataframe(table, hide_index=True, width="stretch")
recomputed = mine["release_epsilon"].isna()
st.caption(
    f"{labels.aggregation_note(mine['aggregation'])} **{labels.EPS_ROUND}** is incremental: "
    "what publishing that round cost by itself. "
    f"**{labels.EPS_COMPOSED}** is the largest total any person the model may reflect had "
    "spent after it, every purpose together: the figure the per-user budget caps."
    + (
        f" The server did not record {labels.EPS_ROUND} for {int(recomputed.sum())} of "
        f"{len(mine)} rounds; for those it is recomputed here from the round's q and σ as a "
        "subsampled Gaussian."
        if recomputed.any()
        else ""
    )
)
