"""Claims that match the code: every epsilon says whether it is composed or incremental,
every release says how it was made, and seeded (not private) releases are marked so."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect
from streamlit.testing.v1 import AppTest

from dashboard import ReleaseView, read_only_engine
from dashboard.labels import (
    AGGREGATION,
    EPS_COMPOSED,
    EPS_PURPOSE,
    EPS_QUERY,
    EPS_RELEASE,
    EPS_ROUND,
    PRIVATE,
)
from dashboard.tables import csv_bytes, released_table
from server.releases import readers

from .conftest import logged_in_app
from .stores import NEW_RELEASE_COLUMNS, ROUND_EPSILONS, WEEKS

PAGES = ("overview", "population", "cohorts", "model", "privacy", "consent")
SEEDED = "NOT PRIVATE (seeded)"
EPSILON_LABELS = {EPS_COMPOSED, EPS_PURPOSE, EPS_QUERY, EPS_RELEASE, EPS_ROUND}


def _use(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("MOODFED_RELEASES_URL", url)


def _page(view: str) -> AppTest:
    app = logged_in_app()
    if view != "overview":
        app.switch_page(f"views/{view}.py").run()
    assert not app.exception, (view, app.exception)
    return app


def _warnings(app: AppTest) -> list[str]:
    return [str(w.value) for w in app.warning]


def _texts(app: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption") for e in app.get(kind))


def _epsilon_headers(app: AppTest) -> set[str]:
    """Every table column and metric label on the page that shows an epsilon."""
    names = {str(c) for frame in app.dataframe for c in frame.value.columns}
    names |= {m.label for m in app.metric}
    return {n for n in names if "ε" in n or "epsilon" in n.lower()}


# -- readers ----------------------------------------------------------------------------


def test_the_readers_return_composed_and_incremental_epsilon_mode_and_privacy(
    private_url: str,
) -> None:
    engine = read_only_engine(private_url)

    releases = readers.releases(engine)
    rounds = readers.model_rounds(engine)
    analytics = readers.analytics_releases(engine)
    cells = readers.analytics_cells(engine)
    engine.dispose()

    for rows in (releases, rounds, analytics):
        assert {"release_epsilon", "aggregation", "private"} <= set(rows[0])
    assert [r["release_epsilon"] for r in rounds] == list(ROUND_EPSILONS)
    assert [r["epsilon"] for r in rounds] == pytest.approx([0.41, 0.84, 1.31])
    assert {r["aggregation"] for r in rounds} == {"secure"}
    assert {(r["aggregation"], r["private"]) for r in analytics} == {("central", True)}
    assert {r["release_epsilon"] for r in analytics} == {0.6}  # the week's queries together
    assert {r["round_epsilon"] for r in releases if r["kind"] == "analytics"} == {0.6}
    assert {r["aggregation"] for r in releases} == {"secure", "central"}
    assert all(r["private"] is True for r in releases)
    assert {(c["aggregation"], c["private"], c["epsilon"]) for c in cells} == {
        ("central", True, 0.2)
    }
    assert max(c["epsilon_composed"] for c in cells) == pytest.approx(1.31 + 1.2)


def test_the_readers_see_a_seeded_store_as_secure_and_not_private(seeded_url: str) -> None:
    engine = read_only_engine(seeded_url)

    releases = readers.releases(engine)
    cells = readers.analytics_cells(engine, query="mood-by-cohort")
    engine.dispose()

    assert {(r["aggregation"], r["private"]) for r in releases} == {("secure", False)}
    assert {c["private"] for c in cells} == {False}


def test_the_readers_read_an_old_store_as_the_servers_migration_would(old_url: str) -> None:
    engine = read_only_engine(old_url)
    present = {c["name"] for c in inspect(engine).get_columns("release")}
    assert not present & set(NEW_RELEASE_COLUMNS)  # really an old store

    releases = readers.releases(engine)
    rounds = readers.model_rounds(engine)
    analytics = readers.analytics_releases(engine)
    cells = readers.analytics_cells(engine)
    engine.dispose()

    for rows in (releases, rounds, analytics, cells):
        assert {(r["aggregation"], r["private"]) for r in rows} == {("central", True)}
    for rows in (releases, rounds, analytics):
        assert {r["release_epsilon"] for r in rows} == {None}
    assert [r["epsilon"] for r in rounds] == pytest.approx([0.41, 0.84, 1.31])


def test_reading_an_old_store_changes_nothing_in_it(old_url: str) -> None:
    engine = read_only_engine(old_url)
    ReleaseView(engine).releases()
    engine.dispose()

    writable = create_engine(old_url)
    present = {c["name"] for c in inspect(writable).get_columns("release")}
    writable.dispose()
    assert not present & set(NEW_RELEASE_COLUMNS)


# -- the warning for seeded stores --------------------------------------------------------


@pytest.mark.parametrize("view", PAGES)
@pytest.mark.usefixtures("dashboard_env")
def test_a_seeded_store_puts_the_not_private_warning_on_every_page(view: str) -> None:
    app = _page(view)  # dashboard_env points at the seeded store

    warnings = [w for w in _warnings(app) if "NOT PRIVATE" in w]
    assert len(warnings) == 1, _warnings(app)
    assert "seeded" in warnings[0] and "no privacy guarantee" in warnings[0]
    assert "All 54 releases" in warnings[0]


@pytest.mark.parametrize("view", PAGES)
def test_a_private_store_shows_no_such_warning(
    view: str, dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, private_url: str
) -> None:
    _use(monkeypatch, private_url)

    app = _page(view)

    assert not [w for w in _warnings(app) if "PRIVATE" in w], _warnings(app)
    assert not app.error
    for frame in app.dataframe:
        if PRIVATE in frame.value.columns:
            assert set(frame.value[PRIVATE]) == {"yes"}


@pytest.mark.usefixtures("dashboard_env")
def test_every_seeded_row_is_marked_in_the_tables() -> None:
    for view in ("population", "cohorts", "model", "privacy"):
        app = _page(view)
        marked = [f.value for f in app.dataframe if PRIVATE in f.value.columns]
        assert marked, view
        for table in marked:
            assert set(table[PRIVATE]) == {SEEDED}, view


def test_the_csv_export_marks_seeded_rows_and_only_those(seeded_url: str, private_url: str) -> None:
    seeded = ReleaseView(read_only_engine(seeded_url)).cells("mood-by-cohort")
    private = ReleaseView(read_only_engine(private_url)).cells("mood-by-cohort")

    seeded_csv = pd.read_csv(io.BytesIO(csv_bytes(released_table(seeded))))
    private_csv = pd.read_csv(io.BytesIO(csv_bytes(released_table(private))))

    assert set(seeded_csv[PRIVATE]) == {SEEDED} and len(seeded_csv) == len(seeded)
    assert set(private_csv[PRIVATE]) == {"yes"}
    assert set(private_csv[AGGREGATION]) == {"central noise"}
    assert {EPS_QUERY, EPS_COMPOSED} <= set(private_csv.columns)
    assert "epsilon" not in private_csv.columns


# -- labels and the aggregation mode ------------------------------------------------------


def test_the_privacy_page_explains_and_labels_composed_and_incremental_epsilon(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, private_url: str
) -> None:
    _use(monkeypatch, private_url)

    app = _page("privacy")

    text = _texts(app)
    assert f"**{EPS_COMPOSED}**" in text and "*incremental*" in text
    assert f"**{EPS_RELEASE}**" in text
    assert _epsilon_headers(app) <= EPSILON_LABELS | {"Worst-case likelihood ratio"}
    assert EPS_COMPOSED in {m.label for m in app.metric}
    per_release = app.dataframe[1].value
    rounds = per_release[per_release["kind"] == "model-round"].sort_values("#")
    assert list(rounds[EPS_RELEASE]) == list(ROUND_EPSILONS)  # as recorded, not recomputed
    assert list(rounds[EPS_COMPOSED]) == pytest.approx([0.41, 0.84, 1.31])
    weeks = per_release[per_release["kind"] == "analytics"]
    assert set(weeks[EPS_RELEASE]) == {0.6} and len(weeks) == 3 * len(WEEKS)


def test_the_aggregation_mode_of_every_release_is_shown_with_a_note(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, private_url: str
) -> None:
    _use(monkeypatch, private_url)

    app = _page("privacy")

    per_release = app.dataframe[1].value
    made = dict(zip(per_release["kind"], per_release[AGGREGATION], strict=False))
    assert made == {"model-round": "secure aggregation", "analytics": "central noise"}
    text = _texts(app)
    assert "How the 9 releases were made: 3 by secure aggregation with the noise added on " in text
    assert "; 6 by central noise: a trusted server saw the clipped contributions" in text


def test_the_model_page_shows_each_rounds_own_and_composed_epsilon_and_its_mode(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, private_url: str
) -> None:
    _use(monkeypatch, private_url)

    app = _page("model")

    table = app.dataframe[0].value
    assert list(table[EPS_ROUND]) == list(ROUND_EPSILONS)
    assert list(table[EPS_COMPOSED]) == pytest.approx([0.41, 0.84, 1.31])
    assert set(table[AGGREGATION]) == {"secure aggregation"}
    assert _epsilon_headers(app) <= EPSILON_LABELS
    assert "recomputed" not in _texts(app)


@pytest.mark.parametrize("view", ["overview", "population", "cohorts", "model", "privacy"])
@pytest.mark.usefixtures("dashboard_env")
def test_no_page_shows_an_unlabelled_epsilon(view: str) -> None:
    app = _page(view)

    assert _epsilon_headers(app) <= EPSILON_LABELS | {
        "ε composed after the latest round",
        "Worst-case likelihood ratio",
    }


# -- old stores ----------------------------------------------------------------------------


@pytest.mark.parametrize("view", PAGES)
def test_an_old_store_still_renders_every_page(
    view: str, dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, old_url: str
) -> None:
    _use(monkeypatch, old_url)

    app = _page(view)

    assert not app.error and not [w for w in _warnings(app) if "PRIVATE" in w]
    for frame in app.dataframe:
        if AGGREGATION in frame.value.columns:
            assert set(frame.value[AGGREGATION]) == {"central noise"}


def test_an_old_store_recomputes_a_rounds_own_epsilon_and_says_so(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, old_url: str
) -> None:
    _use(monkeypatch, old_url)

    app = _page("model")

    own = list(app.dataframe[0].value[EPS_ROUND])
    assert len(set(own)) == 1 and 0 < own[0] < 5  # one (q, sigma) step, same every round
    assert own != list(ROUND_EPSILONS)
    assert "did not record ε of this round alone for 3 of 3 rounds" in _texts(app)
