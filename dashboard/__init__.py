"""The analysts' Streamlit dashboard, which reads the release store only."""

__all__: list[str] = []
