"""Cached access for the pages: settings, the read-only release view, the consent log."""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from consent.secret_files import SecretFileError, read_secret_file
from dashboard._cells import number, optional_number
from dashboard.consent_feed import ConsentLog, fetch_consent_log
from dashboard.labels import not_private_warning
from dashboard.settings import DashboardSettings
from dashboard.store import ReleaseStoreError, ReleaseView, read_only_engine

__all__ = [
    "analytics_releases",
    "cells",
    "consent_log",
    "history_epsilon",
    "model_rounds",
    "not_private_banner",
    "releases",
    "round_epsilons",
    "settings",
    "store_url",
    "training_runs",
    "view",
    "warm_up",
]

log = logging.getLogger(__name__)

_warming = threading.Lock()
_warmed: list[threading.Thread] = []


def warm_up() -> None:
    """Import dp-accounting (about 1.5 s) in the background, once per process, from the
    login page on, so the Privacy page does not make the first analyst wait for it."""
    with _warming:
        if not _warmed:
            thread = threading.Thread(
                target=importlib.import_module, args=("privacy",), daemon=True, name="warm-up"
            )
            thread.start()
            _warmed.append(thread)


def settings() -> DashboardSettings:
    """The settings, read once per script run (cheap; environment changes apply at once)."""
    return DashboardSettings()


@st.cache_resource(show_spinner=False)
def _view(url: str, password_file: Path | None = None) -> ReleaseView:
    try:
        password = read_secret_file(password_file) if password_file is not None else None
    except SecretFileError as error:
        raise ReleaseStoreError(str(error)) from error
    view = ReleaseView(read_only_engine(url, password=password))
    try:
        can = view.write_privileges()
    except ReleaseStoreError:
        can = []  # the pages say why the store cannot be read
    if can:
        log.warning(
            "the dashboard's database role could change the release store (%s): "
            "give it a read-only role (moodfed dashboard create-readonly-role)",
            "; ".join(can),
        )
    return view


def view(url: str) -> ReleaseView:
    """The read-only view of the store at ``url`` (its password from the settings)."""
    return _view(url, settings().releases_password_file)


def store_url() -> str:
    """The release store's URL once it is known to be readable; else an error stops the page."""
    url = settings().releases_url
    try:
        view(url).missing_tables()
    except ReleaseStoreError as error:
        st.error(f"The release store cannot be read: {error}")
        st.stop()
    return url


def _ttl() -> int:
    return settings().cache_seconds


def not_private_banner() -> str | None:
    """The warning every page shows when the store holds a seeded (not private) release.

    None when there is none, or when the store cannot be read (the page that reads it
    then says so itself; the Consent page does not need it).
    """
    try:
        frame = releases(settings().releases_url)
    except ReleaseStoreError:
        return None
    return None if frame.empty else not_private_warning(frame["private"])


@st.cache_data(ttl=_ttl(), show_spinner=False)
def cells(url: str, query: str) -> pd.DataFrame:
    """Released cells of ``query`` (see :meth:`ReleaseView.cells`)."""
    return view(url).cells(query)


@st.cache_data(ttl=_ttl(), show_spinner=False)
def analytics_releases(url: str) -> pd.DataFrame:
    return view(url).analytics_releases()


@st.cache_data(ttl=_ttl(), show_spinner=False)
def releases(url: str) -> pd.DataFrame:
    return view(url).releases()


@st.cache_data(ttl=_ttl(), show_spinner=False)
def model_rounds(url: str) -> pd.DataFrame:
    return view(url).model_rounds()


@st.cache_data(ttl=_ttl(), show_spinner=False)
def training_runs(url: str) -> pd.DataFrame:
    return view(url).training_runs()


@st.cache_data(ttl=_ttl(), show_spinner=False)
def consent_log(url: str, log_key: str, timeout: float, max_entries: int) -> ConsentLog:
    return fetch_consent_log(url, log_key=log_key, timeout=timeout, max_entries=max_entries)


@st.cache_data(show_spinner=False)
def history_epsilon(
    history: tuple[tuple[float, float, int], ...], delta: float, method: str
) -> float:
    """Epsilon of a (q, sigma, count) history, through :func:`privacy.history_epsilon`."""
    from privacy import history_epsilon as epsilon_of  # dp-accounting is slow to import

    return epsilon_of(
        {(q, sigma): count for q, sigma, count in history},
        delta=delta,
        method="pld" if method == "pld" else "rdp",
    )


def round_epsilons(rounds: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Each model round's own (incremental) epsilon: as the server recorded it
    (``release_epsilon``), else, in stores that lack it, recomputed from the round's
    (q, sigma) alone as a subsampled Gaussian with its run's accountant."""
    accounting = dict(zip(runs["id"], runs["accounting"], strict=True)) if not runs.empty else {}
    values: list[float] = []
    for row in rounds.itertuples(index=False):
        recorded = optional_number(row.release_epsilon)
        if recorded is None:
            one = ((number(row.sampling_rate), number(row.noise_multiplier), 1),)
            method = str(accounting.get(row.run_id, "rdp"))
            recorded = history_epsilon(one, number(row.delta), method)
        values.append(recorded)
    return pd.Series(values, index=rounds.index, dtype=float)
