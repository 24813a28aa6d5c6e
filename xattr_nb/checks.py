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

    kinds = "an int class index, a list of ints or a 1-D integer tensor [B]"
    if isinstance(target, bool):
        raise InputError(f"`{name}` must be {kinds}; got bool")
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and any(isinstance(v, str) for v in target)):
        raise InputError(
            f"`{name}` must be {kinds}; got the class name(s) {target!r}, which this function cannot look up"
        )
    if not isinstance(target, (int, np.integer, list, tuple, np.ndarray, torch.Tensor)):
        raise InputError(f"`{name}` must be {kinds}; got {type(target).__name__}")
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


def check_placement(x: Any, model: Any, name: str = "inputs", *, dtype: bool = True) -> None:
    """Raise :class:`InputError` unless the tensor ``x`` can go into ``model`` as it is.

    ``model`` is an ``nn.Module`` (its first parameter, or buffer, stands for it) or one of its
    parameters. Refused, each with a message naming both sides:

    - ``x`` or the model on the ``meta`` device, which holds shapes but no data;
    - ``x`` on another device than the model's parameters;
    - with ``dtype=True``, a floating-point ``x`` whose dtype differs from the model's floating-point
      parameters (float64 images into a float32 model): nothing is cast silently.

    A model without parameters or buffers, or with floating parameters of several dtypes, is not
    checked for dtype. Reads only metadata: no device synchronisation.
    """
    import torch

    if x.device.type == "meta":
        raise InputError(
            f"`{name}` is on the meta device, which holds shapes but no data; create or load it on a real "
            "device (e.g. 'cpu' or 'cuda')"
        )
    if isinstance(model, torch.Tensor):
        ref, dtypes = model, {model.dtype} if model.is_floating_point() else set()
    else:
        ref = next(iter(model.parameters()), None)
        if ref is None:
            ref = next(iter(model.buffers()), None)
        if ref is None:
            return
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if ref.device.type == "meta":
        raise InputError(
            "the model's parameters are on the meta device (no weights loaded); load or materialise them "
            f"(e.g. model.to_empty(device='cpu') then load a state dict) before passing `{name}`"
        )
    if x.device != ref.device:
        raise InputError(
            f"`{name}` is on {x.device} but the model's parameters are on {ref.device}; move one of them "
            f"(e.g. `{name}.to({str(ref.device)!r})`)"
        )
    if dtype and x.is_floating_point() and len(dtypes) == 1 and x.dtype not in dtypes:
        (want,) = dtypes
        short = str(want).removeprefix("torch.")
        raise InputError(
            f"`{name}` is {str(x.dtype).removeprefix('torch.')} but the model's parameters are {short}; "
            f"convert one of them (e.g. `{name}.to(torch.{short})`): nothing is cast silently"
        )


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


def check_int_range(value: Any, name: str, *, low: int, high: int) -> tuple[int, int]:
    """A ``(lo, hi)`` pair of ints with ``low <= lo <= hi <= high`` (a range of counts a world draws from)."""
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value)
        or not low <= value[0] <= value[1] <= high
    ):
        raise InputError(
            f"`{name}` must be a (low, high) pair of ints with {low} <= low <= high <= {high}; got {value!r}"
        )
    return int(value[0]), int(value[1])


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"`{name}` must be a number; got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise InputError(f"`{name}` must be finite; got {v}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise InputError(f"`{name}` must lie in [{low}, {high}]; got {v}")
    return v


def check_numeric(x: Any, name: str, **kwargs: Any):
    """``x`` (a tensor, a NumPy array, or a (nested) list of numbers) as a checked tensor: the
    conversion itself raises :class:`InputError` naming ``name``; ``kwargs`` go to :func:`check_tensor`."""
    import torch

    if not isinstance(x, (torch.Tensor, np.ndarray)):
        if isinstance(x, (str, bytes, dict)) or x is None or not hasattr(x, "__len__"):
            raise InputError(f"`{name}` must be a tensor, an array or a list of numbers; got {type(x).__name__}")
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"`{name}` must be a tensor, an array or a list of numbers: {exc}") from None
    elif isinstance(x, np.ndarray) and x.dtype == object:
        raise InputError(f"`{name}` must hold numbers; got an array of Python objects")
    return check_tensor(x, name, **kwargs)
