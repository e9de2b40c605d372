"""moodfed's on-device SDK: the device, its encrypted diary and key, consent, importers, features.

>>> from client_sdk import Device, Diary, DeviceKey, import_daylio, make_examples
"""

from client_sdk.consent_client import (
    ConsentClient,
    ConsentRefusedError,
    ConsentServiceError,
    Decision,
    LogVerificationError,
)
from client_sdk.device import Device
from client_sdk.diary import Diary
from client_sdk.entry import Entry
from client_sdk.errors import (
    DiaryClosedError,
    DiaryCorruptError,
    DiaryError,
    DiaryImportError,
    EntryNotFoundError,
    InvalidArgumentError,
    InvalidEntryError,
    KeyFileError,
    PassphraseRequiredError,
    SDKError,
    WrongPassphraseError,
)
from client_sdk.features import (
    FEATURE_DIM,
    DailySeries,
    daily_series,
    feature_dim,
    feature_names,
    latest_features,
    make_examples,
)
from client_sdk.importers import (
    DEFAULT_MOOD_MAP,
    ImportReport,
    RowError,
    import_daylio,
    import_state_of_mind,
)
from client_sdk.keys import DeviceKey
from client_sdk.synthetic import PopulationParams, SyntheticPopulation, generate_population

__all__ = [
    "DEFAULT_MOOD_MAP",
    "FEATURE_DIM",
    "ConsentClient",
    "ConsentRefusedError",
    "ConsentServiceError",
    "DailySeries",
    "Decision",
    "Device",
    "DeviceKey",
    "Diary",
    "DiaryClosedError",
    "DiaryCorruptError",
    "DiaryError",
    "DiaryImportError",
    "Entry",
    "EntryNotFoundError",
    "ImportReport",
    "InvalidArgumentError",
    "InvalidEntryError",
    "KeyFileError",
    "LogVerificationError",
    "PassphraseRequiredError",
    "PopulationParams",
    "RowError",
    "SDKError",
    "SyntheticPopulation",
    "WrongPassphraseError",
    "daily_series",
    "feature_dim",
    "feature_names",
    "generate_population",
    "import_daylio",
    "import_state_of_mind",
    "latest_features",
    "make_examples",
]
