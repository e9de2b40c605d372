"""The ``>>>`` examples in the SDK's docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "client_sdk",
    "client_sdk.diary",
    "client_sdk.entry",
    "client_sdk.features",
    "client_sdk.importers.daylio",
    "client_sdk.importers.state_of_mind",
    "client_sdk.keys",
    "client_sdk.synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), raise_on_error=False, verbose=False)

    assert result.failed == 0
    assert name == "client_sdk" or result.attempted > 0
