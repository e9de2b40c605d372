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
"""

from __future__ import annotations

import hmac
import logging
import time

import streamlit as st

from dashboard.passwords import verify_password
from dashboard.settings import DashboardSettings

__all__ = ["SESSION_KEY", "current_analyst", "logout", "require_analyst"]

log = logging.getLogger(__name__)

SESSION_KEY = "moodfed_analyst"
_FAILURE_DELAY = 1.0  # seconds after a failed password, to slow guessing


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
    # Both checks always run, so timing does not say which one failed.
    user_ok = hmac.compare_digest(user.encode(), settings.analyst_user.encode())
    password_ok = verify_password(settings.analyst_password_hash.get_secret_value(), password)
    if user_ok and password_ok:
        st.session_state[SESSION_KEY] = settings.analyst_user
        log.info("Analyst %s logged in", settings.analyst_user)
        st.rerun()
    log.warning("Failed dashboard login")
    time.sleep(_FAILURE_DELAY)
    st.error("Wrong user name or password.")


def require_analyst(settings: DashboardSettings) -> str:
    """The logged-in analyst; otherwise show the login and stop the script run here."""
    analyst = current_analyst(settings)
    if analyst is not None:
        return analyst
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
