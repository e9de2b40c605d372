"""The privacy package's public surface and the examples in its docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

import privacy

DOCUMENTED = [
    "privacy.accounting",
    "privacy.budget",
    "privacy.clipping",
    "privacy.device",
    "privacy.errors",
    "privacy.mechanisms",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_the_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_every_exported_name_exists_and_says_what_it_is_for() -> None:
    assert {"Accountant", "DeviceAccountant", "epsilon_for", "clip_update"} <= set(privacy.__all__)
    for name in privacy.__all__:
        exported = getattr(privacy, name)
        assert name == "Method" or (exported.__doc__ or "").strip(), name
