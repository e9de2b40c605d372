"""Before login, a browser session may only run the script (the login page) and stay connected.

Streamlit serves every websocket request of every session, logged in or not: a
``clear_cache`` message empties ``st.cache_data`` and ``st.cache_resource``, which are
process-wide, so one message from a visitor who never logged in throws away every
analyst's cached reads; ``load_git_info`` answers with the checkout's branch and its
untracked and uncommitted file names. ``client.toolbarMode`` only hides the menu, and
Streamlit has no setting that turns the messages off. :func:`install` therefore wraps
``AppSession.handle_backmsg`` once per process: :mod:`dashboard.launch` does before the
server starts, and the top of ``app.py`` does on the first run, before any cache can be
filled (for a bare ``streamlit run``). Until the session's own script run has put
:data:`AUTHENTICATED_KEY` in its session state (:func:`dashboard.auth.require_analyst`
does, after a login), every message but those in :data:`ALLOWED_BEFORE_LOGIN` is
dropped, with a rate-limited warning, and so are widget values whose ids no widget can
have (Streamlit would fail the run on them, with a traceback in the server log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.state.common import GENERATED_ELEMENT_ID_PREFIX

from dashboard.loglimit import RateLimitedLog
from dashboard.throttle import source_key

__all__ = ["ALLOWED_BEFORE_LOGIN", "AUTHENTICATED_KEY", "install", "is_authenticated"]

log = logging.getLogger(__name__)

AUTHENTICATED_KEY: Final = "moodfed_authenticated"
ALLOWED_BEFORE_LOGIN: Final = frozenset({"rerun_script", "app_heartbeat", "stop_script"})
_GUARD_MARK: Final = "_moodfed_session_guard"

_installing = threading.Lock()
_dropped = RateLimitedLog(log)


def _source(session: AppSession) -> str:
    """The session's client address as the login throttle counts it (for the log line)."""
    try:
        from streamlit.runtime import get_instance

        client = get_instance().get_client(session.id)
        context = client.client_context if client is not None else None
        address = context.remote_ip if context is not None else None
    except Exception:  # no runtime (tests) or changed internals: the line still goes out
        address = None
    return source_key(address)


def _drop_foreign_widget_values(session: AppSession, msg: BackMsg) -> None:
    """Drop widget values whose ids no widget can have (every id Streamlit makes starts with
    ``$$ID``): Streamlit fails the run on them with a traceback in the server log, which a
    visitor could repeat at will."""
    widgets = msg.rerun_script.widget_states.widgets
    kept = [w for w in widgets if w.id.startswith(GENERATED_ELEMENT_ID_PREFIX)]
    if len(kept) == len(widgets):
        return
    dropped = len(widgets) - len(kept)
    del widgets[:]
    widgets.extend(kept)
    source = _source(session)
    _dropped.warning(
        ("widget values", source),
        "dropped %d widget values with ids no widget has from %s, a session that has not "
        "logged in (session %s)",
        dropped,
        source,
        session.id[:8],
    )


def is_authenticated(session: AppSession) -> bool:
    """True once this session's script run has recorded a login; False if unsure."""
    state = getattr(session, "_session_state", None)
    if state is None:
        return False
    try:
        return AUTHENTICATED_KEY in state
    except Exception:  # Streamlit's internals changed: refuse rather than guess
        return False


def install() -> None:
    """Drop every message but :data:`ALLOWED_BEFORE_LOGIN` from sessions not logged in.

    Idempotent: a second call (another script run, a reloaded module) changes nothing.
    """
    with _installing:
        original: Callable[[AppSession, BackMsg], None] = AppSession.handle_backmsg
        if getattr(original, _GUARD_MARK, False):
            return

        def guarded(self: AppSession, msg: BackMsg) -> None:
            kind = msg.WhichOneof("type")
            if is_authenticated(self):
                original(self, msg)
                return
            if kind == "rerun_script":
                _drop_foreign_widget_values(self, msg)
            if kind in ALLOWED_BEFORE_LOGIN:
                original(self, msg)
                return
            source = _source(self)
            _dropped.warning(
                (kind, source),
                "dropped a %s request from %s, a session that has not logged in (session %s)",
                kind,
                source,
                self.id[:8],
            )

        setattr(guarded, _GUARD_MARK, True)
        AppSession.handle_backmsg = guarded  # type: ignore[method-assign]  # Streamlit has no hook
