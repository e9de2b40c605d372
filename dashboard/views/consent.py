"""Consent: grants in force per purpose over time, from the verified public consent log."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import auth, data
from dashboard.consent_feed import (
    ConsentUnreachableError,
    ConsentVerificationError,
    active_grants_by_day,
)

settings = data.settings()
auth.require_analyst(settings)  # also here: a view must never render for a stranger
st.title("Consent")
st.caption(
    "Read from the consent service's public, append-only log (not from the release "
    "store): every entry is checked against the log's signed checkpoint before counting."
)
if not settings.consent_url:
    st.info("No consent service is configured: set MOODFED_CONSENT_URL to show consent counts.")
    st.stop()
try:
    log = data.consent_log(
        settings.consent_url,
        settings.consent_log_key,
        settings.consent_timeout_seconds,
        settings.consent_max_entries,
    )
except ConsentUnreachableError as error:
    st.error(
        f"The consent service at {settings.consent_url} is unreachable, so consent counts "
        f"cannot be shown right now. ({error})"
    )
    st.stop()
except ConsentVerificationError as error:
    st.error(f"The consent log does NOT verify; its figures are not shown. ({error})")
    st.stop()

cols = st.columns(3)
cols[0].metric("Log entries", f"{log.checkpoint.size:,}")
cols[1].metric("Checkpoint", "verified", help=f"Log {log.checkpoint.origin}")
cols[2].metric("Verifier key", "pinned" if log.key_pinned else "fetched")
if not log.key_pinned:
    st.warning(
        "The log's verifier key was fetched from the service itself, which only shows the "
        "service agrees with itself. Pin it with MOODFED_CONSENT_LOG_KEY."
    )
counts = active_grants_by_day(log.records)
if counts.empty:
    st.info("The log holds no consent decisions yet.")
    st.stop()
latest = counts.sort_values("day").groupby("purpose").tail(1)
metric_cols = st.columns(max(len(latest), 1))
for col, row in zip(metric_cols, latest.itertuples(index=False), strict=False):
    col.metric(f"Active grants: {row.purpose}", f"{row.active_grants:,}")
chart = (
    alt.Chart(counts)
    .mark_line(interpolate="step-after", point=True)
    .encode(
        x=alt.X("day:T", title="day"),
        y=alt.Y("active_grants:Q", title="active grants"),
        color=alt.Color("purpose:N"),
        tooltip=["day:T", "purpose:N", "active_grants:Q"],
    )
    .properties(title="Grants in force at the end of each day", height=300)
)
st.altair_chart(chart, width="stretch")
