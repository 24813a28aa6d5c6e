"""What every world's dataclass shares: length, indexing, splitting, moving to a device.

Each world returns a dataclass whose class attribute ``_items`` names the fields that hold one
entry per example (tensors indexed on their first dimension, or lists). Everything else (class
names, grid scale, vocabulary) is shared by all examples and is kept as is when subsetting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_int

D = TypeVar("D", bound="WorldData")


@dataclasses.dataclass
class WorldData:
    """Base of every world dataclass: ``len``, ``subset``, ``split`` and ``to(device)``."""

    _items: ClassVar[tuple[str, ...]] = ()

    def __len__(self) -> int:
        for name in self._items:
            value = getattr(self, name)
            if value is not None:
                return len(value)
        return 0

    def subset(self: D, idx: Any) -> D:
        """The examples at ``idx`` (ints, a LongTensor or a bool mask of length ``len(self)``)."""
        return subset(self, idx)

    def split(self: D, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> tuple[D, ...]:
        """Random disjoint parts with the given fractions; see :func:`split`."""
        return split(self, fractions, seed)

    def to(self: D, device: Any) -> D:
        """A copy with every tensor field (and tensors inside list fields) moved to ``device``."""

        def move(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.to(device)
            if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
                return [t.to(device) for t in v]
            return v

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _as_index(idx: Any, n: int) -> torch.Tensor:
    if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
        idx = [int(idx)]
    t = torch.as_tensor(np.asarray(idx)) if not isinstance(idx, torch.Tensor) else idx
    if t.dtype == torch.bool:
        if t.ndim != 1 or t.shape[0] != n:
            raise InputError(f"`idx` as a boolean mask must have shape ({n},); got {tuple(t.shape)}")
        return t.nonzero().flatten()
    if t.ndim != 1 or t.is_floating_point():
        raise InputError(
            f"`idx` must be a 1-D sequence of ints or a bool mask; got dtype {t.dtype}, shape {tuple(t.shape)}"
        )
    t = t.long()
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise InputError(f"`idx` must lie in [0, {n}); got values in [{int(t.min())}, {int(t.max())}]")
    return t % max(n, 1)


def subset(data: D, idx: Any) -> D:
    """The examples of any world dataclass at ``idx`` (ints, LongTensor or bool mask), order kept."""
    if not isinstance(data, WorldData):
        raise InputError(f"`data` must be a world dataclass (ShapesData, GridData, ...); got {type(data).__name__}")
    n = len(data)
    ix = _as_index(idx, n)
    pos = ix.tolist()
    changes: dict[str, Any] = {}
    for name in data._items:
        value = getattr(data, name)
        if value is None:
            continue
        changes[name] = value[ix] if isinstance(value, torch.Tensor) else [value[i] for i in pos]
    return dataclasses.replace(data, **changes)


def split(data: D, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> tuple[D, ...]:
    """Split any world dataclass into disjoint random parts.

    ``fractions`` are positive and sum to 1 (within 1e-6); part sizes are rounded down and the
    remainder goes to the last part, so every example lands in exactly one part. The permutation
    comes from ``numpy.random.default_rng(seed)``, so the split is reproducible.
    """
    if not isinstance(data, WorldData):
        raise InputError(f"`data` must be a world dataclass (ShapesData, GridData, ...); got {type(data).__name__}")
    fr = [float(f) for f in fractions]
    if not fr or any(not np.isfinite(f) or f <= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"`fractions` must be positive numbers that sum to 1; got {list(fractions)}")
    seed = check_int(seed, "seed", low=0)
    n = len(data)
    perm = np.random.default_rng(seed).permutation(n)
    sizes = [int(np.floor(f * n)) for f in fr[:-1]]
    sizes.append(n - sum(sizes))
    cuts = np.cumsum([0, *sizes])
    return tuple(subset(data, torch.as_tensor(perm[a:b])) for a, b in itertools.pairwise(cuts))


def config_hash(config: Any) -> str:
    """A short sha256 of a JSON-serialisable configuration (stable across runs and machines)."""
    blob = json.dumps(config, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_n(n: Any, name: str = "n") -> int:
    """``n`` must be a positive int (the number of examples to generate)."""
    return check_int(n, name, low=1)


def check_seed(seed: Any) -> int:
    return check_int(seed, "seed", low=0, high=2**32 - 1)


def check_names(values: Any, allowed: Sequence[str], name: str, *, distinct: bool = True) -> tuple[str, ...]:
    """A non-empty sequence of names from ``allowed`` (no duplicates when ``distinct``)."""
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise InputError(f"`{name}` must be a non-empty list of names from {list(allowed)}; got {values!r}")
    for v in values:
        if v not in allowed:
            raise InputError(f"`{name}` contains unknown name {v!r}; choose from {list(allowed)}")
    if distinct and len(set(values)) != len(values):
        raise InputError(f"`{name}` has duplicate names: {list(values)}")
    return tuple(values)
