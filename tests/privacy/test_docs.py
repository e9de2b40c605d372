"""The privacy package's public surface says what each name is for."""

from __future__ import annotations

import privacy


def test_every_exported_name_exists_and_says_what_it_is_for() -> None:
    assert {"Accountant", "DeviceAccountant", "epsilon_for", "clip_update"} <= set(privacy.__all__)
    for name in privacy.__all__:
        exported = getattr(privacy, name)
        assert name == "Method" or (exported.__doc__ or "").strip(), name
