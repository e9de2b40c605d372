"""moodfed's on-device SDK: the device, its encrypted diary and key, consent, importers, features.

The synthetic population and the simulated devices live in :mod:`client_sdk.sim`, which
nothing here imports.

>>> from client_sdk import Device, Diary, DeviceKey, import_daylio, make_examples
"""

import importlib
from typing import TYPE_CHECKING, Any

from client_sdk.consent_client import (
    ConsentClient,
    ConsentRefusedError,
    ConsentServiceError,
    Decision,
    HeldReceipt,
    LogVerificationError,
    PendingDecision,
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
from client_sdk.policy import DevicePolicy, RefusalCounter

if TYPE_CHECKING:
    from client_sdk.dpsgd import DPSGD
    from client_sdk.model import (
        MoodModel,
        create_model,
        get_weights,
        mean_absolute_error,
        predict,
        set_weights,
    )
    from client_sdk.training import (
        LocalTrainingConfig,
        LocalTrainingResult,
        train_locally,
        train_nonprivate,
    )

# Loaded on first use: they import torch (~4 s), which logging a mood never needs.
_LAZY = {
    "DPSGD": "client_sdk.dpsgd",
    "MoodModel": "client_sdk.model",
    "create_model": "client_sdk.model",
    "get_weights": "client_sdk.model",
    "mean_absolute_error": "client_sdk.model",
    "predict": "client_sdk.model",
    "set_weights": "client_sdk.model",
    "LocalTrainingConfig": "client_sdk.training",
    "LocalTrainingResult": "client_sdk.training",
    "train_locally": "client_sdk.training",
    "train_nonprivate": "client_sdk.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'client_sdk' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MOOD_MAP",
    "DPSGD",
    "FEATURE_DIM",
    "ConsentClient",
    "ConsentRefusedError",
    "ConsentServiceError",
    "DailySeries",
    "Decision",
    "Device",
    "DeviceKey",
    "DevicePolicy",
    "Diary",
    "DiaryClosedError",
    "DiaryCorruptError",
    "DiaryError",
    "DiaryImportError",
    "Entry",
    "EntryNotFoundError",
    "HeldReceipt",
    "ImportReport",
    "InvalidArgumentError",
    "InvalidEntryError",
    "KeyFileError",
    "LocalTrainingConfig",
    "LocalTrainingResult",
    "LogVerificationError",
    "MoodModel",
    "PassphraseRequiredError",
    "PendingDecision",
    "RefusalCounter",
    "RowError",
    "SDKError",
    "WrongPassphraseError",
    "create_model",
    "daily_series",
    "feature_dim",
    "feature_names",
    "get_weights",
    "import_daylio",
    "import_state_of_mind",
    "latest_features",
    "make_examples",
    "mean_absolute_error",
    "predict",
    "set_weights",
    "train_locally",
    "train_nonprivate",
]
