"""Population mood: weekly distribution, mean, low-mood share and mood by sleep, with bands."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, labels, tables

auth.require_analyst(data.settings())  # also here: a view must never render for a stranger
url = data.store_url()
st.title("Population mood")
st.caption(
    "Weekly figures over every consenting device. Bands are 95% intervals computed from "
    "the noise added to each release, whose size is published with it."
)

distribution = data.cells(url, "mood-distribution")
low = data.cells(url, "low-mood-share")
sleep = data.cells(url, "mood-by-sleep")

if distribution.empty and low.empty and sleep.empty:
    st.info("No population releases yet.")
    st.stop()

weeks = sorted(pd.concat([f["period"] for f in (distribution, low, sleep) if not f.empty]).unique())
first: pd.Timestamp  # the periods are datetimes (ReleaseView.cells), so weeks are Timestamps
last: pd.Timestamp
if len(weeks) > 1:
    first, last = st.select_slider(
        "Weeks",
        options=weeks,
        value=(weeks[0], weeks[-1]),
        format_func=lambda w: f"{pd.Timestamp(w):%Y-%m-%d}",
    )
else:
    first = last = weeks[0]


def _window(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame["period"] >= first) & (frame["period"] <= last)]


distribution, low, sleep = _window(distribution), _window(low), _window(sleep)

if not distribution.empty:
    mean = distribution[distribution["cell"] == "mean"]
    st.altair_chart(
        charts.band_line(mean, title="Mean mood", y_title="mean mood (1-5)", limits=(1, 5)),
        width="stretch",
    )
    st.altair_chart(charts.distribution_area(distribution), width="stretch")
left, right = st.columns(2)
if not low.empty:
    left.altair_chart(
        charts.low_mood_share(low),
        width="stretch",
    )
if not sleep.empty:
    right.altair_chart(
        charts.bin_intervals(
            sleep,
            label="sleep_bin",
            title="Next-day mood by sleep the night before (weeks shown)",
            y_title="mean mood (1-5)",
        ),
        width="stretch",
    )
    st.altair_chart(
        charts.band_line(
            sleep,
            title="Next-day mood by sleep, week by week",
            y_title="mean mood (1-5)",
            colour="sleep_bin",
            bands=False,
        ),
        width="stretch",
    )

table = pd.concat(
    [
        tables.released_table(distribution[distribution["cell"] != "mean"], percent=True),
        tables.released_table(distribution[distribution["cell"] == "mean"]),
        tables.released_table(low, percent=True),
        tables.released_table(sleep),
    ],
    ignore_index=True,
)
shown = [f for f in (distribution, low, sleep) if not f.empty]
if shown:
    modes = pd.concat(shown).drop_duplicates("release_id")["aggregation"]
    st.caption(
        f"{labels.aggregation_note(modes)} Each figure's {labels.EPS_QUERY} is incremental; "
        f"its {labels.EPS_COMPOSED} is the largest total any person it may reflect had "
        "spent after it, every purpose (see the Privacy page)."
    )
with st.expander("Released figures"):
    st.dataframe(table, hide_index=True, width="stretch")
st.download_button(
    "Download these figures (CSV)",
    tables.csv_bytes(table),
    file_name="moodfed-population.csv",
    mime="text/csv",
)
