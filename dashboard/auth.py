"""The analyst's login: OIDC through Streamlit's ``st.login`` or a user name and password.

Production: configure OIDC in ``.streamlit/secrets.toml`` and set
``MOODFED_OIDC_PROVIDER`` (``default`` for the ``[auth]`` section itself) and
``MOODFED_OIDC_ALLOWED_EMAILS`` (a JSON list; nobody else gets in)::

    [auth]
    redirect_uri = "https://dashboard.example.org/oauth2callback"
    cookie_secret = "<32+ random bytes>"
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://accounts.example.org/.well-known/openid-configuration"

Otherwise a single analyst account: ``MOODFED_ANALYST_USER`` and
``MOODFED_ANALYST_PASSWORD_HASH`` (argon2id, from ``moodfed dashboard hash-password``).
With neither configured nobody gets in: the dashboard never runs open.

Password attempts go through the login throttle (:mod:`dashboard.throttle`) per user name
and per client address: a locked user name or source is refused before argon2id runs.
Failures are logged with the user name and the source (never the password), rate-limited.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard.loglimit import RateLimitedLog, safe_text
from dashboard.passwords import verify_password
from dashboard.session_guard import AUTHENTICATED_KEY
from dashboard.settings import DashboardSettings
from dashboard.throttle import Admitted, LoginThrottle, ThrottlePolicy, source_key, user_key

__all__ = ["SESSION_KEY", "current_analyst", "login_throttle", "logout", "require_analyst"]

log = logging.getLogger(__name__)

SESSION_KEY = "moodfed_analyst"
FAILED_LOGIN_MESSAGE = "Wrong user name or password."

_throttles: dict[tuple[str, ThrottlePolicy], LoginThrottle] = {}
_throttles_lock = threading.Lock()
# Failures are logged at most once a minute per (user name, source), 30 lines a minute in all.
_failure_log = RateLimitedLog(log)


def login_throttle(settings: DashboardSettings) -> LoginThrottle:
    """The process's throttle on ``settings.login_state_url`` (opened once, shared by sessions).

    Kept here rather than in ``st.cache_resource``, which any logged-in session may clear.
    """
    key = (settings.login_state_url, settings.throttle_policy)
    with _throttles_lock:
        throttle = _throttles.get(key)
        if throttle is None:
            throttle = LoginThrottle(settings.login_state_url, policy=settings.throttle_policy)
            _throttles[key] = throttle
        return throttle


def _client_address() -> str | None:
    """The client's address as Streamlit saw it (None on loopback).

    The websocket's peer, or behind a reverse proxy that uvicorn trusts
    (``FORWARDED_ALLOW_IPS``, 127.0.0.1 by default) the address it forwards.
    """
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # AppTest gives a mock object


def current_analyst(settings: DashboardSettings) -> str | None:
    """Who is logged in (password session or allowed OIDC user), or None."""
    name = st.session_state.get(SESSION_KEY)
    if name:
        return str(name)
    if settings.oidc_provider and st.user.get("is_logged_in", False):
        email = str(st.user.get("email") or "")
        allowed = {e.casefold() for e in settings.oidc_allowed_emails}
        if email and email.casefold() in allowed:
            return email
    return None


def logout() -> None:
    """End the session, whichever way it was opened."""
    st.session_state.pop(SESSION_KEY, None)
    st.session_state.pop(AUTHENTICATED_KEY, None)
    if st.user.get("is_logged_in", False):
        st.logout()


def _oidc_login(settings: DashboardSettings) -> None:
    if st.user.get("is_logged_in", False):
        st.error(f"{st.user.get('email', 'This account')} may not use this dashboard.")
        st.button("Log out", on_click=st.logout)
        return
    provider = None if settings.oidc_provider == "default" else settings.oidc_provider
    st.button("Log in with single sign-on", type="primary", on_click=st.login, args=(provider,))


def _password_login(settings: DashboardSettings) -> None:
    with st.form("login"):
        user = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        return
    address = _client_address()
    who = (user_key(user), source_key(address))
    try:
        throttle = login_throttle(settings)
        admission = throttle.admit(user=user, source=address)
    except (OSError, ValueError, SQLAlchemyError) as error:
        # Without a record of failures there is no limit on guesses: refuse, say why.
        log.error("dashboard login unavailable: cannot record attempts: %s", error)
        st.error("Logging in is unavailable: the dashboard cannot record login attempts.")
        return
    if not isinstance(admission, Admitted):
        _failure_log.warning(
            ("refused", *who),
            "dashboard login refused without checking the password: user %s from %s "
            "(locked: %s, %.0f s left)",
            safe_text(user),
            who[1],
            " and ".join(admission.locked),
            admission.retry_after,
        )
        st.error(
            "Too many failed logins for this user name or from this address. Try again in "
            f"{math.ceil(admission.retry_after)} s, or ask the operator to unlock it."
        )
        return
    # Both checks always run, so timing does not say which one failed.
    user_ok = hmac.compare_digest(user.encode(), settings.analyst_user.encode())
    password_ok = verify_password(settings.analyst_password_hash.get_secret_value(), password)
    if user_ok and password_ok:
        throttle.succeeded(user=user, source=address)
        st.session_state[SESSION_KEY] = settings.analyst_user
        log.info("Analyst %s logged in from %s", settings.analyst_user, who[1])
        st.rerun()
    _failure_log.warning(
        ("failed", *who),
        "dashboard login failed: user %s from %s (%d failures in a row for this user name, "
        "%d from this source)",
        safe_text(user),
        who[1],
        admission.user_failures,
        admission.source_failures,
    )
    st.error(FAILED_LOGIN_MESSAGE)


def require_analyst(settings: DashboardSettings) -> str:
    """The logged-in analyst; otherwise show the login and stop the script run here.

    A logged-in session is marked (:data:`~dashboard.session_guard.AUTHENTICATED_KEY`)
    so that the session guard lets its other websocket requests through.
    """
    analyst = current_analyst(settings)
    if analyst is not None:
        st.session_state[AUTHENTICATED_KEY] = analyst
        return analyst
    st.session_state.pop(AUTHENTICATED_KEY, None)
    st.title("moodfed analytics")
    st.caption("Differentially private figures about population mood. Analysts only.")
    if not settings.oidc_provider and not settings.password_login:
        st.error(
            "No analyst login is configured. Set MOODFED_ANALYST_USER and "
            "MOODFED_ANALYST_PASSWORD_HASH (make a hash with `moodfed dashboard "
            "hash-password`), or configure OIDC (MOODFED_OIDC_PROVIDER with [auth] in "
            ".streamlit/secrets.toml)."
        )
        st.stop()
    if settings.oidc_provider:
        _oidc_login(settings)
    if settings.password_login:
        _password_login(settings)
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises
