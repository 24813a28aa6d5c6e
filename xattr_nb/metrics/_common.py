"""Small input helpers shared by the metric modules (not public)."""

from __future__ import annotations

from typing import Any

import torch

from xattr_nb.checks import check_numeric


def _vector(v: Any, name: str) -> torch.Tensor:
    v = check_numeric(v, name, ndim=1, layout="[S]")
    if not v.is_floating_point():
        v = v.double()
    return v
