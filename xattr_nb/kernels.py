"""Batched compute that runs on any torch device: the hot paths of perturbation methods.

- :func:`count_passes` counts forward and backward passes (per example) through a model.
- :func:`batched_forward` runs many inputs in chunks under ``no_grad``.
- :func:`compose_masked` and :func:`masked_scores` evaluate one input under many keep-masks,
  building each chunk of masked copies on the fly so memory stays bounded by ``max_bytes``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_int, check_tensor
from xattr_nb.runtime import Cost, progress

DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass
class PassCounter:
    """Forward and backward passes seen by :func:`count_passes`, counted per example."""

    forward: int = 0
    backward: int = 0
    started: float = 0.0

    def cost(self) -> Cost:
        return Cost(self.forward, self.backward, time.perf_counter() - self.started)


def _batch_rows(args: tuple, kwargs: dict) -> int:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and a.ndim > 0:
            return int(a.shape[0])
    return 1


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCounter]:
    """Count the examples pushed forward through ``model`` and backpropagated out of it.

    A batch of 32 counts 32 forward passes; a backward through that batch's output counts 32
    backward passes. Hooks are removed on exit, also when the body raises.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    counter = PassCounter(started=time.perf_counter())

    def on_forward(_module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        rows = _batch_rows(args, kwargs)
        counter.forward += rows
        out = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        if out is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            out = output[0]
        if isinstance(out, torch.Tensor) and out.requires_grad:

            def on_backward(grad: torch.Tensor) -> None:
                counter.backward += rows

            out.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()


def chunk_size(example_bytes: int, *, batch_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Examples per chunk: ``batch_size`` if given, else as many as fit in ``max_bytes``."""
    if batch_size is not None:
        return check_int(batch_size, "batch_size", low=1)
    check_int(max_bytes, "max_bytes", low=1)
    return max(1, max_bytes // max(1, example_bytes))


def _logits(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise InputError(f"the model must return a tensor or an object with `.logits`; got {type(output).__name__}")


@torch.no_grad()
def batched_forward(
    model: Callable[[torch.Tensor], object],
    inputs: torch.Tensor,
    *,
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> torch.Tensor:
    """Run ``model`` over ``inputs`` ``[N, ...]`` in chunks without gradients; outputs stay on the model's device."""
    inputs = check_tensor(inputs, "inputs", finite=inputs.is_floating_point() if isinstance(inputs, torch.Tensor) else True)
    per = inputs[0].numel() * inputs.element_size()
    step = chunk_size(per, batch_size=batch_size, max_bytes=max_bytes)
    starts = range(0, inputs.shape[0], step)
    outs = [_logits(model(inputs[s : s + step])) for s in progress(starts, disable=not show_progress, desc="forward")]
    return torch.cat(outs)


def compose_masked(x: torch.Tensor, keep: torch.Tensor, baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Masked copies of one image: ``x * keep + baseline * (1 - keep)``.

    ``x`` is ``[C, H, W]`` (or ``[1, C, H, W]``), ``keep`` is ``[M, H, W]`` (bool or float in
    [0, 1]), ``baseline`` a scalar or a ``[C, H, W]`` image (black, mean colour, a blurred copy).
    Returns ``[M, C, H, W]``.
    """
    x = check_tensor(x, "x", ndim=(3, 4), dtype="float", layout="[C, H, W]")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"`x` must be one image [C, H, W] or [1, C, H, W]; got shape {tuple(x.shape)}")
        x = x[0]
    keep = check_tensor(keep, "keep", ndim=3, layout="[M, H, W]")
    if tuple(keep.shape[1:]) != tuple(x.shape[1:]):
        raise InputError(f"`keep` masks are {tuple(keep.shape[1:])} but the image is {tuple(x.shape[1:])}")
    k = keep.to(x.dtype).unsqueeze(1)
    if isinstance(baseline, torch.Tensor):
        b = check_tensor(baseline, "baseline", shape=tuple(x.shape), dtype="float", layout="[C, H, W]").to(x)
    else:
        b = torch.full_like(x, float(baseline))
    return x * k + b * (1 - k)


@torch.no_grad()
def masked_scores(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    keep: torch.Tensor,
    target: int,
    *,
    baseline: float | torch.Tensor = 0.0,
    output: str = "prob",
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> torch.Tensor:
    """Score of class ``target`` for each masked copy of ``x``: ``[M]``.

    ``output`` is ``"prob"`` (softmax), ``"logit"`` or ``"logprob"``. Copies are composed one chunk
    at a time on the model's device, so ``M`` can be in the thousands.
    """
    check_choice(output, ("prob", "logit", "logprob"), "output")
    keep = check_tensor(keep, "keep", ndim=3, layout="[M, H, W]")
    per = x[0].numel() * x.element_size() * (x.shape[0] if x.ndim == 3 else x.shape[1])
    step = chunk_size(per, batch_size=batch_size, max_bytes=max_bytes)
    device = x.device
    scores = []
    for s in progress(range(0, keep.shape[0], step), disable=not show_progress, desc="masked forwards"):
        logits = _logits(model(compose_masked(x, keep[s : s + step].to(device), baseline)))
        if not 0 <= int(target) < logits.shape[-1]:
            raise InputError(f"`target` must lie in [0, {logits.shape[-1]}) for this model; got {target}")
        if output == "prob":
            logits = logits.softmax(-1)
        elif output == "logprob":
            logits = logits.log_softmax(-1)
        scores.append(logits[:, int(target)])
    return torch.cat(scores)
