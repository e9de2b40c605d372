"""The analysts' Streamlit dashboard, which reads the release store only (read-only).

Run it with ``streamlit run dashboard/app.py`` (or ``moodfed dashboard run``). Nothing
here imports ``client_sdk``: the dashboard sees published figures, never devices.
"""

from dashboard.consent_feed import (
    ConsentLog,
    ConsentUnreachableError,
    ConsentVerificationError,
    active_grants_by_day,
    fetch_consent_log,
)
from dashboard.passwords import hash_password, verify_password
from dashboard.settings import DashboardSettings
from dashboard.store import ReleaseStoreError, ReleaseView, read_only_engine
from dashboard.throttle import LoginThrottle, ThrottlePolicy

__all__ = [
    "ConsentLog",
    "ConsentUnreachableError",
    "ConsentVerificationError",
    "DashboardSettings",
    "LoginThrottle",
    "ReleaseStoreError",
    "ReleaseView",
    "ThrottlePolicy",
    "active_grants_by_day",
    "fetch_consent_log",
    "hash_password",
    "read_only_engine",
    "verify_password",
]
