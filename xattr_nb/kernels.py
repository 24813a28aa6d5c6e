"""Batched compute that runs on any torch device: the hot paths of perturbation methods.

- :func:`count_passes` counts forward and backward passes (per example) through a model.
- :func:`batched_forward` runs many inputs in chunks under ``no_grad``.
- :func:`compose_masked` and :func:`masked_scores` evaluate one input under many keep-masks,
  building each chunk of masked copies on the fly so memory stays bounded by ``max_bytes``.
- :func:`grid_regions`, :func:`check_regions` and :func:`cumulative_keep` build the region
  partitions and the reveal-one-region-at-a-time masks of insertion/deletion curves.
- :func:`compose_token_masked` and :func:`masked_token_scores` do the same for token sequences
  (erased tokens are replaced by a neutral id).
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
    inputs = check_tensor(
        inputs, "inputs", finite=inputs.is_floating_point() if isinstance(inputs, torch.Tensor) else True
    )
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


# --------------------------------------------------------------------------------------------
# Regions: a partition of the image into disjoint masks, revealed one by one (insertion curves)
# --------------------------------------------------------------------------------------------


def grid_regions(h: int, w: int, rows: int, cols: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Split an ``h x w`` image into a ``rows x cols`` grid of disjoint boolean masks ``[rows*cols, h, w]``.

    Region ``i * cols + j`` is the cell in grid row ``i`` and column ``j`` (row-major, like
    ``patches.flatten()``). Cell edges are ``round(k * h / rows)``, so when ``rows`` does not
    divide ``h`` the cells differ by at most one pixel and still cover the image exactly.
    """
    h, w = check_int(h, "h", low=1), check_int(w, "w", low=1)
    rows, cols = check_int(rows, "rows", low=1, high=h), check_int(cols, "cols", low=1, high=w)
    r_edges = [round(k * h / rows) for k in range(rows + 1)]
    c_edges = [round(k * w / cols) for k in range(cols + 1)]
    row_id = torch.bucketize(torch.arange(h), torch.tensor(r_edges[1:-1]), right=True)
    col_id = torch.bucketize(torch.arange(w), torch.tensor(c_edges[1:-1]), right=True)
    cell = (row_id[:, None] * cols + col_id[None, :]).to(device)
    return cell.unsqueeze(0) == torch.arange(rows * cols, device=device)[:, None, None]


def check_regions(regions: object, name: str = "regions", *, hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Check that ``regions`` ``[R, H, W]`` is a boolean partition: disjoint masks that cover every pixel."""
    regions = check_tensor(regions, name, ndim=3, dtype="bool", layout="[R, H, W]")
    if hw is not None and tuple(regions.shape[1:]) != tuple(hw):
        raise InputError(f"`{name}` masks are {tuple(regions.shape[1:])} but the image is {tuple(hw)}")
    per_pixel = regions.sum(0)
    if bool((per_pixel > 1).any()):
        raise InputError(f"`{name}` overlap on {int((per_pixel > 1).sum())} pixel(s); regions must be disjoint")
    if bool((per_pixel == 0).any()):
        raise InputError(
            f"`{name}` leave {int((per_pixel == 0).sum())} pixel(s) uncovered; regions must cover the image"
        )
    return regions


def check_order(order: object, n: int, name: str = "order") -> torch.Tensor:
    """Check that ``order`` is a permutation of ``range(n)`` (a LongTensor ``[n]``)."""
    if isinstance(order, (list, tuple)):
        order = torch.as_tensor(order)
    order = check_tensor(order, name, ndim=1, dtype="int", layout="[R]").long()
    if order.shape[0] != n or not torch.equal(order.sort().values.cpu(), torch.arange(n)):
        raise InputError(f"`{name}` must be a permutation of range({n}) (every region once); got {order.tolist()}")
    return order


def cumulative_keep(regions: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Keep-masks ``[R+1, H, W]`` that reveal the regions one at a time in ``order``.

    Mask ``t`` shows the union of the first ``t`` regions of ``order``: mask 0 is empty, mask
    ``R`` is the whole image (the regions are a partition). These are the inputs of an insertion
    curve; their complements ``~mask`` are the inputs of the deletion curve.
    """
    regions = check_regions(regions)
    order = check_order(order, regions.shape[0]).to(regions.device)
    steps = regions[order].cumsum(0) > 0
    return torch.cat([torch.zeros_like(regions[:1]), steps])


# --------------------------------------------------------------------------------------------
# Text: one token sequence under many keep-masks (erase = replace by a neutral token id)
# --------------------------------------------------------------------------------------------


def compose_token_masked(input_ids: torch.Tensor, keep: torch.Tensor, replace_id: int | torch.Tensor) -> torch.Tensor:
    """Copies of one token sequence ``[T]`` with the positions where ``keep`` is False replaced: ``[M, T]``.

    Replacing (by a pad, mask or filler id) instead of deleting keeps every copy the same length,
    so positions stay aligned and the copies batch together. ``replace_id`` is one id for every
    position, or a LongTensor ``[T]`` of per-position replacements (e.g. a same-category word).
    """
    input_ids = check_tensor(input_ids, "input_ids", ndim=1, dtype="int", layout="[T]")
    keep = check_tensor(keep, "keep", ndim=2, dtype="bool", layout="[M, T]")
    if keep.shape[1] != input_ids.shape[0]:
        raise InputError(f"`keep` has {keep.shape[1]} positions but `input_ids` has {input_ids.shape[0]} tokens")
    if isinstance(replace_id, torch.Tensor):
        repl = check_tensor(replace_id, "replace_id", shape=tuple(input_ids.shape), dtype="int", layout="[T]")
        if bool((repl < 0).any()):
            raise InputError("`replace_id` must hold non-negative token ids")
        repl = repl.to(input_ids)
    else:
        repl = torch.full_like(input_ids, check_int(replace_id, "replace_id", low=0))
    keep = keep.to(input_ids.device)
    return torch.where(keep, input_ids.unsqueeze(0), repl.unsqueeze(0))


def _target_scores(logits: torch.Tensor, target: int, position: int, output: str) -> torch.Tensor:
    if logits.ndim == 3:  # [B, T, V]: a language model, read the prediction at `position`
        if not -logits.shape[1] <= position < logits.shape[1]:
            raise InputError(f"`position` must lie in [-{logits.shape[1]}, {logits.shape[1]}); got {position}")
        logits = logits[:, position]
    elif logits.ndim != 2:
        raise InputError(f"the model must return logits [B, C] or [B, T, V]; got shape {tuple(logits.shape)}")
    if not 0 <= int(target) < logits.shape[-1]:
        raise InputError(f"`target` must lie in [0, {logits.shape[-1]}) for this model; got {target}")
    if output == "prob":
        logits = logits.softmax(-1)
    elif output == "logprob":
        logits = logits.log_softmax(-1)
    return logits[:, int(target)]


@torch.no_grad()
def masked_token_scores(
    model: Callable[..., object],
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    target: int,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> torch.Tensor:
    """Score of ``target`` for each masked copy of one token sequence: ``[M]``.

    ``model(input_ids=[B, T], attention_mask=[B, T])`` returns logits ``[B, C]`` (a classifier)
    or ``[B, T, V]`` (a language model: the score is read at ``position``), as a tensor or an
    object with ``.logits``. Positions where ``keep[m]`` is False get ``replace_id``; the attention
    mask is left as given, so a replaced token is still attended to (it stands for "no
    information", not for "absent"). ``output`` is ``"prob"``, ``"logit"`` or ``"logprob"``.
    """
    check_choice(output, ("prob", "logit", "logprob"), "output")
    position = check_int(position, "position")
    target = check_int(target, "target", low=0)
    input_ids = check_tensor(input_ids, "input_ids", ndim=1, dtype="int", layout="[T]")
    if attention_mask is not None:
        attention_mask = check_tensor(attention_mask, "attention_mask", shape=tuple(input_ids.shape), layout="[T]")
    ids = compose_token_masked(input_ids, keep, replace_id)  # ints are small: build all at once
    # ~8 KiB of activations per token is a rough guess for a small transformer; pass batch_size to be exact.
    step = chunk_size(8 * 1024 * input_ids.shape[0], batch_size=batch_size, max_bytes=max_bytes)
    scores = []
    for s in progress(range(0, ids.shape[0], step), disable=not show_progress, desc="masked forwards"):
        chunk = ids[s : s + step]
        am = None if attention_mask is None else attention_mask.to(chunk.device).unsqueeze(0).expand_as(chunk)
        logits = _logits(model(input_ids=chunk, attention_mask=am))
        scores.append(_target_scores(logits, target, position, output))
    return torch.cat(scores)
