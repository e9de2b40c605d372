"""Helpers that treat numpy arrays and torch tensors alike without importing torch."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13


def torch_module() -> Any:
    # torch is imported only if the caller already did: the server need not load it.
    return sys.modules.get("torch")


def is_tensor(value: object) -> TypeIs[torch.Tensor]:
    torch = torch_module()
    return torch is not None and isinstance(value, torch.Tensor)
