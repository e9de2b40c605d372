"""Each page renders from a seeded release store, after a login, with what it promises."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.labels import EPS_COMPOSED, EPS_PURPOSE

from .conftest import APP, TRAINING_ROUNDS, log_in, logged_in_app


def _charts(app: AppTest) -> int:
    return len(app.get("vega_lite_chart"))


def _texts(app: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "error", "warning")
        for e in app.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


@pytest.mark.usefixtures("dashboard_env")
def test_nothing_is_shown_before_the_analyst_logs_in() -> None:
    app = AppTest.from_file(APP, default_timeout=60).run()

    assert not app.exception
    assert app.text_input(key="login_password") is not None
    assert not app.metric and not _charts(app)


@pytest.mark.usefixtures("dashboard_env")
def test_a_wrong_password_is_refused() -> None:
    app = AppTest.from_file(APP, default_timeout=60).run()

    log_in(app, password="wrong")

    assert [e.value for e in app.error] == ["Wrong user name or password."]
    assert not app.metric and not _charts(app)


def test_without_any_login_configured_nobody_gets_in(
    monkeypatch: pytest.MonkeyPatch, seeded_url: str
) -> None:
    monkeypatch.setenv("MOODFED_RELEASES_URL", seeded_url)
    for name in ("MOODFED_ANALYST_USER", "MOODFED_ANALYST_PASSWORD_HASH", "MOODFED_OIDC_PROVIDER"):
        monkeypatch.delenv(name, raising=False)

    app = AppTest.from_file(APP, default_timeout=60).run()

    assert "No analyst login is configured" in app.error[0].value
    assert not app.text_input and not _charts(app)


@pytest.mark.usefixtures("dashboard_env")
def test_the_overview_shows_the_headline_figures() -> None:
    app = logged_in_app()

    assert app.title[0].value == "Population mood at a glance"
    labels = [m.label for m in app.metric]
    assert "Mean mood (1-5)" in labels and EPS_COMPOSED in labels
    assert "Held-out error (MAE)" in labels
    assert _charts(app) == 2


@pytest.mark.usefixtures("dashboard_env")
def test_the_population_page_draws_every_population_query_with_a_csv() -> None:
    app = logged_in_app().switch_page("views/population.py").run()

    assert not app.exception and not app.error
    assert app.title[0].value == "Population mood"
    assert _charts(app) == 5
    table = app.dataframe[0].value
    assert set(table["query"]) == {"mood-distribution", "low-mood-share", "mood-by-sleep"}
    assert len(app.get("download_button")) == 1


@pytest.mark.usefixtures("dashboard_env")
def test_suppressed_cohorts_read_suppressed_never_zero() -> None:
    app = logged_in_app().switch_page("views/cohorts.py").run()
    weeks = app.selectbox[0].options

    found = False
    for week in weeks:
        app.selectbox[0].select(week).run()
        table = app.dataframe[0].value
        hidden = table[table["status"] == "suppressed"]
        assert (hidden["value"] == "suppressed").all()
        assert (hidden[["95% low", "95% high", "devices (noisy)"]] == "").all().all()
        found = found or not hidden.empty
        assert not app.exception and not app.error
    assert found
    assert _charts(app) >= 2


@pytest.mark.usefixtures("dashboard_env")
def test_the_model_page_shows_error_and_epsilon_per_round() -> None:
    app = logged_in_app().switch_page("views/model.py").run()

    assert not app.exception and not app.error
    assert app.title[0].value == "Shared model"
    assert _charts(app) == 2
    assert list(app.dataframe[0].value["round"]) == list(range(1, TRAINING_ROUNDS + 1))


@pytest.mark.usefixtures("dashboard_env")
def test_the_privacy_page_shows_spend_against_budget_per_purpose_and_release() -> None:
    app = logged_in_app().switch_page("views/privacy.py").run()

    assert not app.exception and not app.error
    assert "e^ε" in _texts(app)
    purposes = app.dataframe[0].value
    assert any(p.startswith("model-training") for p in purposes["purpose"])
    assert "population-analytics" in set(purposes["purpose"])
    assert (purposes[EPS_PURPOSE] <= purposes["budget"]).all()
    per_release = app.dataframe[1].value
    assert set(per_release["kind"]) == {"analytics", "model-round"}
    assert _charts(app) == 2


@pytest.mark.usefixtures("dashboard_env")
def test_the_consent_page_says_when_no_consent_service_is_configured() -> None:
    app = logged_in_app().switch_page("views/consent.py").run()

    assert not app.exception
    assert "MOODFED_CONSENT_URL" in app.info[0].value


def test_every_page_renders_from_an_empty_store(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, empty_url: str
) -> None:
    monkeypatch.setenv("MOODFED_RELEASES_URL", empty_url)
    app = logged_in_app()

    for page in ("population", "cohorts", "model", "privacy"):
        app.switch_page(f"views/{page}.py").run()
        assert not app.exception and not app.error, page
        assert app.info, page


def test_a_missing_store_is_a_clear_error(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MOODFED_RELEASES_URL", f"sqlite:///{tmp_path / 'nowhere.db'}")

    app = logged_in_app()

    assert not app.exception
    assert "release store cannot be read" in app.error[0].value


@pytest.mark.usefixtures("dashboard_env")
def test_logging_out_returns_to_the_login() -> None:
    app = logged_in_app()

    app.sidebar.button[0].click().run()

    assert app.text_input(key="login_password") is not None
    assert not app.metric and not _charts(app)


@pytest.mark.parametrize(
    "view", ["overview", "population", "cohorts", "model", "privacy", "consent"]
)
@pytest.mark.usefixtures("dashboard_env")
def test_no_view_renders_for_a_visitor_who_has_not_logged_in(view: str) -> None:
    app = AppTest.from_file(APP, default_timeout=60).run()

    app.switch_page(f"views/{view}.py").run()

    assert not app.exception
    assert app.text_input(key="login_password") is not None
    assert not app.metric and not _charts(app) and not app.dataframe
