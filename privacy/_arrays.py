"""Helpers that treat numpy arrays and torch tensors alike without importing torch."""

from __future__ import annotations

import sys
from typing import Any


def torch_module() -> Any:
    # torch is imported only if the caller already did: the server need not load it.
    return sys.modules.get("torch")


def is_tensor(value: object) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(value, torch.Tensor)
