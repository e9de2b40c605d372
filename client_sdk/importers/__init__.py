"""Importers that turn other apps' exports (Daylio CSV, Apple State of Mind JSON) into entries.

Each reads a file named by a ``str`` or ``os.PathLike`` (as ``open()`` does) or given as
its ``bytes``; text already in memory goes through ``text=``:
``import_daylio("export.csv")``, ``import_daylio(text=csv_text)``.
"""

from client_sdk.importers.daylio import DEFAULT_MOOD_MAP, import_daylio
from client_sdk.importers.report import ImportReport, RowError
from client_sdk.importers.state_of_mind import VALENCE_CLASSIFICATIONS, import_state_of_mind

__all__ = [
    "DEFAULT_MOOD_MAP",
    "VALENCE_CLASSIFICATIONS",
    "ImportReport",
    "RowError",
    "import_daylio",
    "import_state_of_mind",
]
