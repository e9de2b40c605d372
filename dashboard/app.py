"""The analysts' dashboard: ``streamlit run dashboard/app.py`` (or ``moodfed dashboard run``).

Log in first (:mod:`dashboard.auth`, throttled per user name and address; until then the
session guard drops every websocket request but running this script), then six pages,
each reading the release store read-only (:mod:`dashboard.store`); the Consent page reads
the public consent log.

The pages live in ``views/``, not ``pages/``: Streamlit serves every file of a ``pages/``
folder next to the main script at its own URL whenever ``st.navigation`` has not run,
which is exactly the case before login. Each view also checks the login itself.

When the store holds a seeded release (``private`` false: reproducible sampling and
noise, so no privacy guarantee), a warning stands above every page.
"""

from __future__ import annotations

import streamlit as st

from dashboard import auth, data, session_guard

# First, before anything can fill a cache: sessions that have not logged in may only run
# this script (the login page) and keep their connection (see dashboard.session_guard).
session_guard.install()

st.set_page_config(page_title="moodfed analytics", page_icon=":material/mood:", layout="wide")
st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button for analysts
st.set_option("client.showErrorDetails", "none")  # errors name no internals in the browser

data.warm_up()  # while the analyst types a password
analyst = auth.require_analyst(data.settings())

pages = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/population.py", title="Population mood", icon=":material/groups:"),
    st.Page("views/cohorts.py", title="Cohorts", icon=":material/grid_view:"),
    st.Page("views/model.py", title="Model", icon=":material/model_training:"),
    st.Page("views/privacy.py", title="Privacy", icon=":material/shield:"),
    st.Page("views/consent.py", title="Consent", icon=":material/verified_user:"),
]
seeded = data.not_private_banner()  # above every page, the Consent page included
with st.sidebar:
    st.caption(f"Logged in as **{analyst}**")
    st.button("Log out", on_click=auth.logout)
    st.caption(
        "Figures from seeded runs are NOT private: see the warning above each page."
        if seeded
        else "Every figure here is differentially private: noised sums of bounded "
        "contributions from consenting devices, each with its privacy cost."
    )
if seeded:
    st.warning(seeded, icon=":material/warning:")
st.navigation(pages).run()
