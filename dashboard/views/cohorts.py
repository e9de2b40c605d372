"""Cohorts: mean mood by age band and region, side by side; small cohorts are suppressed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, labels, tables
from dashboard._cells import timestamp

auth.require_analyst(data.settings())  # also here: a view must never render for a stranger
url = data.store_url()
st.title("Cohorts")

cells = data.cells(url, "mood-by-cohort")
if cells.empty:
    st.info("No cohort releases yet.")
    st.stop()

threshold = cells["threshold"].iloc[-1]
st.caption(
    "Weekly mean mood per cohort (age band × region), with 95% intervals from the known "
    "noise. A cohort is shown only when its noisy device count reaches the threshold "
    f"(currently {threshold:.0f}), so a cohort of very few people is almost never "
    "published; those cells read **suppressed** (not zero)."
)
weeks = sorted(cells["period"].unique(), reverse=True)


def _week_label(week: object) -> str:
    day = timestamp(week)
    return f"{day:%Y-%m-%d} (ISO week {day.isocalendar().week})"


week = st.selectbox("Week", weeks, format_func=_week_label)
current = cells[cells["period"] == week]
n_suppressed = int(current["suppressed"].sum())
st.markdown(
    f"**{len(current) - n_suppressed}** of {len(current)} cohorts released, "
    f"**{n_suppressed}** suppressed."
)
side, grid = st.tabs(["Side by side", "Age band × region"])
side.altair_chart(charts.cohort_intervals(current), width="stretch")
grid.altair_chart(charts.cohort_heatmap(current), width="stretch")

st.subheader("Over time")
released_cells = current.loc[~current["suppressed"], "cell"].tolist()
chosen = st.multiselect(
    "Cohorts", sorted(cells["cell"].unique()), default=released_cells[:3], max_selections=8
)
if chosen:
    st.altair_chart(
        charts.band_line(
            cells[cells["cell"].isin(chosen)],
            title="Mean mood by cohort",
            y_title="mean mood (1-5)",
            colour="cell",
            limits=(1, 5),
        ),
        width="stretch",
    )

table = tables.released_table(current)
st.dataframe(table, hide_index=True, width="stretch")
st.caption(labels.aggregation_note(current.drop_duplicates("release_id")["aggregation"]))
st.download_button(
    "Download this week's cohort figures (CSV)",
    tables.csv_bytes(table),
    file_name=f"moodfed-cohorts-{pd.Timestamp(week):%Y-%m-%d}.csv",
    mime="text/csv",
)
