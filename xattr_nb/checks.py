"""Input validation shared by every layer.

Every public function of the library checks its arguments with these helpers, so that a bad
input fails early with a message that names the argument, what was expected and what came in.
Nothing is silently truncated, cast or broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class InputError(ValueError):
    """A public function received an argument it cannot use (shape, dtype, range, emptiness)."""


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(x, "shape", ()))


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Iterable[int] | None = None,
    shape: Sequence[int | None] | None = None,
    dtype: str | None = None,
    finite: bool = True,
    nonempty: bool = True,
    layout: str | None = None,
):
    """Return ``x`` as a torch tensor after checking it; raise :class:`InputError` otherwise.

    ``dtype`` is ``"float"``, ``"int"`` or ``"bool"`` (a family, not an exact dtype).
    ``shape`` entries that are ``None`` match any size. ``layout`` is a human hint such as
    ``"[B, C, H, W]"`` used in the message.
    """
    import torch

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"`{name}` must be a torch.Tensor{' ' + layout if layout else ''}; got {type(x).__name__}")
    hint = f" {layout}" if layout else ""
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise InputError(f"`{name}` must be a {want} tensor{hint}; got shape {_shape(x)}")
    if shape is not None and (
        x.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape, strict=False))
    ):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"`{name}` must have shape {want}{hint}; got {_shape(x)}")
    if nonempty and x.numel() == 0:
        raise InputError(f"`{name}` is empty (shape {_shape(x)})")
    if dtype == "float" and not x.is_floating_point():
        raise InputError(f"`{name}` must be a floating-point tensor; got {x.dtype}")
    if dtype == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise InputError(f"`{name}` must be an integer tensor; got {x.dtype}")
    if dtype == "bool" and x.dtype != torch.bool:
        raise InputError(f"`{name}` must be a boolean tensor; got {x.dtype}")
    if finite and x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"`{name}` contains {bad} NaN or infinite value(s)")
    return x


def check_target(target: Any, n_classes: int, batch: int, name: str = "target"):
    """Return ``target`` as a LongTensor of shape ``[batch]``.

    Accepts an int (broadcast to the batch: one target for every example is a common, explicit
    intent), a sequence or a 1-D integer tensor of length ``batch``. Each value must lie in
    ``[0, n_classes)``.
    """
    import torch

    if isinstance(target, bool):
        raise InputError(f"`{name}` must be an int or integer tensor of class indices; got bool")
    if isinstance(target, (int, np.integer)):
        t = torch.full((batch,), int(target), dtype=torch.long)
    else:
        if isinstance(target, (list, tuple, np.ndarray)):
            target = torch.as_tensor(np.asarray(target))
        t = check_tensor(target, name, ndim=1, dtype="int", layout="[B]")
        if t.shape[0] != batch:
            raise InputError(f"`{name}` has {t.shape[0]} entries but the batch has {batch}")
        t = t.long()
    bad = (t < 0) | (t >= n_classes)
    if bool(bad.any()):
        raise InputError(f"`{name}` must lie in [0, {n_classes}) for this model; got {t[bad].unique().tolist()}")
    return t


def check_text(text: Any, name: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"`{name}` must be a str; got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"`{name}` is empty: give at least one non-whitespace character")
    return text


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        return [check_text(texts, name)]
    if not isinstance(texts, Sequence) or len(texts) == 0:
        raise InputError(f"`{name}` must be a non-empty list of strings")
    return [check_text(t, f"{name}[{i}]") for i, t in enumerate(texts)]


def check_choice(value: Any, choices: Iterable[Any], name: str):
    opts = list(choices)
    if value not in opts:
        raise InputError(f"`{name}` must be one of {opts}; got {value!r}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"`{name}` must be an int; got {type(value).__name__}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise InputError(f"`{name}` must lie in [{lo}, {hi}]; got {v}")
    return v


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"`{name}` must be a number; got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise InputError(f"`{name}` must be finite; got {v}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise InputError(f"`{name}` must lie in [{low}, {high}]; got {v}")
    return v
