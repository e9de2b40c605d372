"""``python -m dashboard.launch run dashboard/app.py ...``: Streamlit's own command line, with
the session guard in place before the server accepts its first connection.

``app.py`` installs the guard too, on its first run (so a bare ``streamlit run`` is covered
from then on); starting through here also covers the requests a session can make before
any script has run, such as ``load_git_info``.
"""

from __future__ import annotations

from dashboard import session_guard

__all__ = ["main"]


def main() -> None:
    """Install the session guard, then run Streamlit's command line on ``sys.argv``."""
    session_guard.install()
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    main()
