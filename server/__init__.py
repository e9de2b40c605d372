"""The moodfed server side: the Flower ServerApp, accounting and the release store."""

__all__: list[str] = []
