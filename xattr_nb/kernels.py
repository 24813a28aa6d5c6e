"""Batched compute that runs on any torch device: the hot paths of perturbation methods.

- :func:`count_passes` counts forward and backward passes (per example) through a model.
- :func:`batched_forward` runs many inputs in chunks under ``no_grad``.
- :func:`device_budget`, :func:`activation_row_bytes`, :func:`rows_per_chunk` and
  :func:`length_groups` size chunks of transformer rows by a byte budget read from the device (the
  per-core L2 cache on a CPU, a share of free memory on a GPU) and group texts by length, so
  padding wastes little work.
- :func:`compose_masked` and :func:`masked_scores` evaluate one input under many keep-masks,
  building each chunk of masked copies on the fly so memory stays bounded by ``max_bytes``.
- :func:`grid_regions`, :func:`check_regions` and :func:`cumulative_keep` build the region
  partitions and the reveal-one-region-at-a-time masks of insertion/deletion curves.
- :func:`compose_token_masked` and :func:`masked_token_scores` do the same for token sequences
  (erased tokens are replaced by a neutral id).
- :func:`slic_regions` (SLIC-style superpixels) and :func:`labels_to_regions` build other partitions;
  :func:`subset_keep` turns subsets of regions (bool membership ``[M, R]``) into keep-masks and
  :func:`masked_outputs` returns a function's raw outputs on masked copies (set functions of
  :mod:`xattr_nb.attribution.subsets` read several quantities from one batched forward).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_numeric, check_tensor
from xattr_nb.models.io import check_model, input_embeddings, logits_of
from xattr_nb.runtime import Cost, progress

__all__ = [
    "CHUNK_BYTES_ENV",
    "DEFAULT_MAX_BYTES",
    "PassCounter",
    "activation_row_bytes",
    "batched_forward",
    "check_members",
    "check_order",
    "check_regions",
    "check_token_ids",
    "chunk_size",
    "compose_masked",
    "compose_token_masked",
    "count_passes",
    "cpu_cache_bytes",
    "cumulative_keep",
    "device_budget",
    "grid_regions",
    "labels_to_regions",
    "length_groups",
    "masked_outputs",
    "masked_scores",
    "masked_token_scores",
    "real_positions",
    "rows_per_chunk",
    "slic_regions",
    "subset_keep",
    "target_scores",
    "widest_activation",
]

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
    check_model(model)
    counter = PassCounter(started=time.perf_counter())

    def on_forward(_module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        rows = _batch_rows(args, kwargs)
        counter.forward += rows
        try:
            out = logits_of(output)
        except InputError:  # a submodule-like output without logits: count the forward, not the backward
            out = None
        if out is not None and out.requires_grad:

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
    example_bytes = check_int(example_bytes, "example_bytes", low=0)
    if batch_size is not None:
        return check_int(batch_size, "batch_size", low=1)
    check_int(max_bytes, "max_bytes", low=1)
    return max(1, max_bytes // max(1, example_bytes))


# -------------------------------------------------------------------------------- chunk budgets

#: Environment variable that overrides :func:`device_budget` (bytes, e.g. ``XATTR_NB_CHUNK_BYTES=4194304``).
CHUNK_BYTES_ENV = "XATTR_NB_CHUNK_BYTES"
_DEFAULT_CACHE_BYTES = 1 << 20  # when the cache size cannot be read: 1 MiB, a common per-core L2
_DEFAULT_LLC_BYTES = 8 << 20  # one core's share of the last-level cache when it cannot be read
_GPU_SHARE = 8  # a GPU chunk may use 1/8 of the free memory
_OTHER_BUDGET = 256 << 20  # devices with neither (mps, xpu): 256 MiB


def _parse_size(text: str) -> int | None:
    """``"1024K"``, ``"2 MiB"``, ``"32768K"``, ``"1048576"`` -> bytes (``None`` if unreadable)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def cpu_cache_bytes(level: int = 2) -> int | None:
    """One core's share of the data (or unified) cache at ``level`` in bytes: from Linux sysfs
    (``/sys/devices/system/cpu/cpu0/cache/index*/``: its size over the CPUs that share it), else
    from ``lscpu -B`` (the total over the machine's CPUs), else ``None``. Read once per process."""
    return _cpu_cache_bytes(check_int(level, "level", low=1, high=4))


def _count_cpus(cpu_list: str) -> int:
    n = 0
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi) - int(lo) + 1 if hi else 1
    return max(1, n)


@functools.lru_cache(maxsize=8)
def _cpu_cache_bytes(level: int) -> int | None:
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(root)):
            d = os.path.join(root, entry)
            with open(os.path.join(d, "level")) as f_level, open(os.path.join(d, "type")) as f_type:
                if int(f_level.read()) != level or f_type.read().strip() == "Instruction":
                    continue
            with open(os.path.join(d, "size")) as f_size:
                size = _parse_size(f_size.read())
            try:
                with open(os.path.join(d, "shared_cpu_list")) as f_shared:
                    sharing = _count_cpus(f_shared.read())
            except (OSError, ValueError):
                sharing = 1
            if size:
                return size // sharing
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name = {1: "L1d", 2: "L2", 3: "L3", 4: "L4"}[level]
    m = re.search(rf"^{name} cache:\s*(\d+)", out, flags=re.MULTILINE)
    return int(m.group(1)) // max(1, os.cpu_count() or 1) if m else None


def device_budget(device: torch.device | str = "cpu", *, grad: bool = False) -> int:
    """Bytes that the widest activation of one chunk may take on ``device``.

    On a CPU, a forward-only chunk gets the L2 caches of the cores torch computes on (one core's L2,
    :func:`cpu_cache_bytes`, 1 MiB if it cannot be read, times ``torch.get_num_threads()``: intra-op
    threads split each op's rows, and each core has its own L2), so that its largest intermediate
    (the MLP hidden layer, the attention scores, the logits) stays in the cache the next op reads it
    from; a chunk that is also backpropagated (``grad=True``) keeps every layer's activations for the
    backward, which no L2 holds, and gets one core's share of the L3 instead (8 MiB if unknown).
    Measured on a 2-core AMD EPYC (1 MiB L2 per core, 32 MiB shared L3), under load: forwards of the
    4-layer IOI GPT-2 are fastest at 32-64 rows of 15 tokens on one thread and at 64-256 on two (the
    rule gives 64 and 128; 512 rows cost 1.3-1.4x, 2,400 at once 2.1x); forward+backward of MiniLM at
    16-32 rows of 32 tokens on one thread (the L3 rule gives 85; 64 and 128 rows cost 1.06x the best,
    4 rows 1.2x, 256 rows 1.1x); the L3 is shared, so that budget does not grow with the threads.
    On a CUDA GPU: 1/8 of the free memory (``torch.cuda.mem_get_info``), since a GPU gains from the
    widest batch that fits. Elsewhere 256 MiB. The environment variable ``XATTR_NB_CHUNK_BYTES``
    overrides all of these.
    """
    if not isinstance(grad, bool):
        raise InputError(f"`grad` must be a bool; got {type(grad).__name__}")
    env = os.environ.get(CHUNK_BYTES_ENV)
    if env is not None:
        size = _parse_size(env)
        if not size:
            raise InputError(f"{CHUNK_BYTES_ENV} must be a positive byte count (e.g. 1048576 or 4M); got {env!r}")
        return size
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"`device` must be a torch device or its name; got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"`device` {device!r} is not a torch device: {e}") from None
    if dev.type == "cpu":
        if grad:
            return cpu_cache_bytes(3) or _DEFAULT_LLC_BYTES
        threads = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
        return (cpu_cache_bytes(2) or _DEFAULT_CACHE_BYTES) * threads
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return max(1, int(free) // _GPU_SHARE)
    return _OTHER_BUDGET


def _cfg(config: object, *names: str) -> int | None:
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def activation_row_bytes(model: nn.Module, seq_len: int) -> int:
    """Bytes of the widest activation that one input row of ``seq_len`` tokens makes in a forward
    through a Hugging Face transformer (read from ``model.config``): the largest of the MLP hidden
    layer (``T·d_ff``), the fused q/k/v (``3·T·d``), the attention scores (``H·T·T``) and the output
    (``T·V`` logits of an LM head, else one row of ``num_labels``), times the parameters' element size.
    """
    check_model(model)
    seq_len = check_int(seq_len, "seq_len", low=1)
    cfg = getattr(model, "config", None)
    d = _cfg(cfg, "n_embd", "hidden_size", "d_model", "dim")
    if cfg is None or d is None:
        raise InputError(
            f"`model` ({type(model).__name__}) has no config with its width (n_embd / hidden_size); "
            "pass a row count instead of sizing chunks from the model"
        )
    d_ff = _cfg(cfg, "n_inner", "intermediate_size", "ffn_dim", "d_ff", "hidden_dim") or 4 * d
    heads = _cfg(cfg, "n_head", "num_attention_heads", "num_heads", "n_heads") or 1
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        out = seq_len * (_cfg(cfg, "vocab_size") or int(head.weight.shape[0]))
    else:
        out = _cfg(cfg, "num_labels") or 1
    param = next(model.parameters(), None)
    size = param.element_size() if param is not None else 4
    return size * max(seq_len * d_ff, 3 * seq_len * d, heads * seq_len * seq_len, out)


def rows_per_chunk(
    row_bytes: int,
    *,
    device: torch.device | str = "cpu",
    budget: int | None = None,
    grad: bool = False,
    multiple: int = 1,
    total: int | None = None,
) -> int:
    """Rows per chunk: as many rows of ``row_bytes`` (:func:`activation_row_bytes`) as fit in
    ``budget`` bytes (default :func:`device_budget` of ``device`` and ``grad``: whether the rows are
    also backpropagated), rounded down to a multiple of
    ``multiple`` (the rows of one unit of work, e.g. the prompts that one patched component repeats)
    and at least ``multiple``; never more than ``total`` rows rounded up to ``multiple`` (the whole job).
    """
    row_bytes = check_int(row_bytes, "row_bytes", low=1)
    multiple = check_int(multiple, "multiple", low=1)
    budget = device_budget(device, grad=grad) if budget is None else check_int(budget, "budget", low=1)
    rows = max(multiple, budget // row_bytes // multiple * multiple)
    if total is not None:
        total = check_int(total, "total", low=1)
        rows = min(rows, -(-total // multiple) * multiple)
    return rows


def length_groups(lengths: Sequence[int] | torch.Tensor, *, slack: float = 0.1) -> list[list[int]]:
    """Indices of rows grouped by length so that padding each group to its longest row wastes at most
    ``slack`` of its work: sorted by length, a group grows while its longest row is at most
    ``(1 + slack)`` times its shortest. ``slack=0`` groups equal lengths only. Groups come in order of
    length; each group's indices in their original order."""
    if isinstance(lengths, torch.Tensor):
        lengths = check_tensor(lengths, "lengths", ndim=1, dtype="int").tolist()
    elif not isinstance(lengths, (list, tuple)):
        raise InputError(f"`lengths` must be a list of ints or a 1-d int tensor; got {type(lengths).__name__}")
    if not lengths:
        raise InputError("`lengths` is empty: need at least one row")
    lengths = [check_int(v, f"lengths[{i}]", low=0) for i, v in enumerate(lengths)]
    slack = check_float(slack, "slack", low=0.0)
    groups: list[list[int]] = []
    lo = None
    for i in sorted(range(len(lengths)), key=lambda j: (lengths[j], j)):
        if lo is None or lengths[i] > (1 + slack) * lo:
            groups.append([])
            lo = max(1, lengths[i])
        groups[-1].append(i)
    return [sorted(g) for g in groups]


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
    if not callable(model):
        raise InputError(f"`model` must be callable (a torch.nn.Module); got {type(model).__name__}")
    inputs = check_tensor(
        inputs, "inputs", finite=inputs.is_floating_point() if isinstance(inputs, torch.Tensor) else True
    )
    if inputs.ndim == 0:
        raise InputError("`inputs` must have a batch dimension [N, ...]; got a 0-d tensor")
    per = inputs[0].numel() * inputs.element_size()
    step = chunk_size(per, batch_size=batch_size, max_bytes=max_bytes)
    starts = range(0, inputs.shape[0], step)
    outs = [logits_of(model(inputs[s : s + step])) for s in progress(starts, disable=not show_progress, desc="forward")]
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
        logits = logits_of(model(compose_masked(x, keep[s : s + step].to(device), baseline)))
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
    n = check_int(n, "n", low=1)
    order = check_numeric(order, name, ndim=1, dtype="int", layout="[R]").long()
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


def real_positions(mask: torch.Tensor, position: int, name: str = "position") -> torch.Tensor:
    """Index ``[B]`` of the ``position``-th real token of each row of ``mask`` ``[B, T]``.

    Negative values count back from the last real token, so ``-1`` is each row's last real token
    under right or left padding: a right-padded batch of prompts of different lengths is read at
    each prompt's own last token, never at a padding slot.
    """
    mask = check_tensor(mask, "attention_mask", ndim=2, layout="[B, T]").bool()
    position = check_int(position, name)
    n = mask.sum(1)
    want = n + position if position < 0 else torch.full_like(n, position)
    bad = (want < 0) | (want >= n)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise InputError(f"`{name}` {position} is out of range for example {b}, which has {int(n[b])} real tokens")
    # the first index whose running count of real tokens reaches want + 1
    hit = (mask.long().cumsum(1) == (want + 1).unsqueeze(1)) & mask
    return hit.long().argmax(1)


def _vocab_size(model: Callable[..., object]) -> int | None:
    try:
        return int(input_embeddings(model).num_embeddings)
    except InputError:  # no nn.Embedding table to check against
        return None


def check_token_ids(model: Callable[..., object], ids: torch.Tensor, name: str) -> None:
    """Raise unless every id of ``ids`` is a row of the model's input embedding (when it has one)."""
    n = _vocab_size(model)
    if n is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise InputError(
            f"`{name}` holds token ids in [{int(ids.min())}, {int(ids.max())}] but the model's vocabulary "
            f"has {n} ids [0, {n})"
        )


def target_scores(logits: torch.Tensor, target: int, position: int, output: str) -> torch.Tensor:
    """The ``target`` column ``[B]`` of ``logits`` ``[B, C]``, or of ``[B, T, V]`` read at ``position``,
    as ``output`` ``"logit"``, ``"prob"`` (softmax) or ``"logprob"`` (log-softmax)."""
    logits = check_tensor(logits, "logits", ndim=(2, 3), dtype="float", finite=False, layout="[B, C] or [B, T, V]")
    target = check_int(target, "target")
    position = check_int(position, "position")
    output = check_choice(output, ("logit", "prob", "logprob"), "output")
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
    object with ``.logits``. With an ``attention_mask``, ``position`` counts real tokens (``-1``
    is the last real one, see :func:`real_positions`), so a padded sequence is never read at a
    padding slot. Positions where ``keep[m]`` is False get ``replace_id``; the attention
    mask is left as given, so a replaced token is still attended to (it stands for "no
    information", not for "absent"). ``output`` is ``"prob"``, ``"logit"`` or ``"logprob"``.
    """
    check_choice(output, ("prob", "logit", "logprob"), "output")
    position = check_int(position, "position")
    target = check_int(target, "target", low=0)
    input_ids = check_tensor(input_ids, "input_ids", ndim=1, dtype="int", layout="[T]")
    if attention_mask is not None:
        attention_mask = check_tensor(attention_mask, "attention_mask", shape=tuple(input_ids.shape), layout="[T]")
        position = int(real_positions(attention_mask.unsqueeze(0), position)[0])
    ids = compose_token_masked(input_ids, keep, replace_id)  # ints are small: build all at once
    check_token_ids(model, input_ids, "input_ids")
    check_token_ids(model, ids, "replace_id")
    # ~8 KiB of activations per token is a rough guess for a small transformer; pass batch_size to be exact.
    step = chunk_size(8 * 1024 * input_ids.shape[0], batch_size=batch_size, max_bytes=max_bytes)
    scores = []
    for s in progress(range(0, ids.shape[0], step), disable=not show_progress, desc="masked forwards"):
        chunk = ids[s : s + step]
        am = None if attention_mask is None else attention_mask.to(chunk.device).unsqueeze(0).expand_as(chunk)
        logits = logits_of(model(input_ids=chunk, attention_mask=am))
        scores.append(target_scores(logits, target, position, output))
    return torch.cat(scores)


# --------------------------------------------------------------------------------------------
# More partitions: superpixels (SLIC-style) and label maps
# --------------------------------------------------------------------------------------------


def labels_to_regions(labels: torch.Tensor) -> torch.Tensor:
    """Turn an integer label map ``[H, W]`` into a boolean partition ``[R, H, W]``.

    One region per distinct label, in increasing label order (the labels need not be
    consecutive: ``{3, 7, 42}`` gives regions 0, 1, 2). The result is disjoint and covering by
    construction, so it passes :func:`check_regions`.
    """
    labels = check_tensor(labels, "labels", ndim=2, dtype="int", layout="[H, W]")
    values = torch.unique(labels)  # sorted
    return labels.unsqueeze(0) == values[:, None, None]


def _merge_small(labels: torch.Tensor, min_size: int) -> torch.Tensor:
    """Split each label into 4-connected components, then merge every component smaller than
    ``min_size`` pixels into the neighbour it shares the longest border with (vectorised rounds)."""
    import numpy as np
    from scipy import ndimage

    lab = labels.cpu().numpy()
    comp = np.zeros(lab.shape, dtype=np.int64)
    n = 0
    for v in np.unique(lab):
        c, k = ndimage.label(lab == v)
        comp[c > 0] = c[c > 0] + n - 1
        n += k
    for _ in range(64):
        sizes = np.bincount(comp.ravel(), minlength=n)
        small = (sizes > 0) & (sizes < min_size)
        if not small.any() or (sizes > 0).sum() == 1:
            break
        # Border pixel pairs between different components, both directions.
        a = np.concatenate([comp[:, :-1].ravel(), comp[:-1, :].ravel()])
        b = np.concatenate([comp[:, 1:].ravel(), comp[1:, :].ravel()])
        d = a != b
        src, dst = np.concatenate([a[d], b[d]]), np.concatenate([b[d], a[d]])
        # A small component may only merge into a neighbour that ranks higher by (size, id): no cycles.
        ok = small[src] & ((sizes[dst] > sizes[src]) | ((sizes[dst] == sizes[src]) & (dst > src)))
        if not ok.any():
            break
        pair, count = np.unique(src[ok] * n + dst[ok], return_counts=True)
        ps, pd = pair // n, pair % n
        best = np.lexsort((-pd, -count, ps))  # per source: longest border first, then the larger id
        first = np.ones(len(best), dtype=bool)
        first[1:] = ps[best][1:] != ps[best][:-1]
        mapping = np.arange(n)
        mapping[ps[best][first]] = pd[best][first]
        for _ in range(n):  # follow chains small -> small -> large to their end
            nxt = mapping[mapping]
            if np.array_equal(nxt, mapping):
                break
            mapping = nxt
        comp = mapping[comp]
    return torch.from_numpy(comp).to(labels.device)


@torch.no_grad()
def slic_regions(
    image: torch.Tensor,
    n_segments: int = 36,
    compactness: float = 30.0,
    iters: int = 5,
    *,
    min_size_factor: float = 0.5,
) -> torch.Tensor:
    """SLIC-style superpixels of one image ``[C, H, W]`` (values in [0, 1]): a partition ``[R, H, W]``.

    Simple Linear Iterative Clustering (Achanta et al., 2012), written here with torch (and
    ``scipy.ndimage`` for connected components) because neither scikit-image nor OpenCV is a
    dependency. Steps:

    1. Seed ``~n_segments`` cluster centres on a regular grid of step ``S = sqrt(H*W / n_segments)``.
    2. ``iters`` times: assign each pixel to the nearest centre *within a 2S x 2S window* under
       ``d = ||colour - colour_k||^2 + (compactness / S)^2 * ||xy - xy_k||^2`` (colours scaled to
       [0, 100], like the L channel of Lab that ``compactness`` is usually tuned for), then move
       each centre to the mean colour and position of its pixels.
    3. Make the segments connected: split each label into its 4-connected components and merge
       any component smaller than ``min_size_factor * S^2`` pixels into the neighbour it shares
       the longest border with.

    Higher ``compactness`` gives squarer, more grid-like segments; lower follows colour edges but
    fragments on textured backgrounds (ShapesWorld's noise), after which the merging step leaves
    fewer, larger segments: the default 30 keeps ``R`` near ``n_segments`` on ShapesWorld scenes.
    Deterministic (no randomness). The returned masks are disjoint, cover the image, and are
    connected except in rare degenerate cases; ``R`` is close to, not exactly, ``n_segments``.
    """
    image = check_tensor(image, "image", ndim=3, dtype="float", layout="[C, H, W]")
    c, h, w = image.shape
    n_segments = check_int(n_segments, "n_segments", low=1, high=h * w)
    iters = check_int(iters, "iters", low=1)
    compactness = check_float(compactness, "compactness", low=0.0)
    min_size_factor = check_float(min_size_factor, "min_size_factor", low=0.0, high=1.0)

    step = (h * w / n_segments) ** 0.5
    feats = image.detach().cpu().reshape(c, -1).T.float() * 100.0  # [P, C]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1) + 0.5  # [P, 2] pixel centres, so that a pixel never
    # sits exactly halfway between two grid-seeded centres (ties would make the segments uneven)
    rows, cols = max(1, round(h / step)), max(1, round(w / step))
    cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * h / rows
    cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * w / cols
    c_pos = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)  # [K, 2]
    idx = c_pos[:, 0].floor().long().clamp(0, h - 1) * w + c_pos[:, 1].floor().long().clamp(0, w - 1)
    c_col = feats[idx]
    weight = (compactness / step) ** 2
    for _ in range(iters):
        d_pos = torch.cdist(pos, c_pos) ** 2  # [P, K]
        d = torch.cdist(feats, c_col) ** 2 + weight * d_pos
        far = (pos[:, None, :] - c_pos[None, :, :]).abs().amax(-1) > 2 * step
        d = d.masked_fill(far, float("inf"))
        # A pixel outside every window (possible when centres drift) falls back to the nearest centre.
        lonely = torch.isinf(d).all(1)
        d[lonely] = d_pos[lonely]
        assign = d.argmin(1)
        k = c_pos.shape[0]
        counts = torch.bincount(assign, minlength=k).float()
        alive = counts > 0
        c_pos = (torch.zeros_like(c_pos).index_add_(0, assign, pos) / counts.clamp_min(1)[:, None])[alive]
        # A centre that lost all its pixels is dropped.
        c_col = (torch.zeros_like(c_col).index_add_(0, assign, feats) / counts.clamp_min(1)[:, None])[alive]
    d = torch.cdist(feats, c_col) ** 2 + weight * torch.cdist(pos, c_pos) ** 2
    far = (pos[:, None, :] - c_pos[None, :, :]).abs().amax(-1) > 2 * step
    d_all = d.clone()
    d = d.masked_fill(far, float("inf"))
    lonely = torch.isinf(d).all(1)
    d[lonely] = d_all[lonely]
    labels = d.argmin(1).reshape(h, w)
    labels = _merge_small(labels, max(1, int(min_size_factor * step * step)))
    return labels_to_regions(labels).to(image.device)


# --------------------------------------------------------------------------------------------
# Subsets of regions: union masks and batched masked forwards for set functions
# --------------------------------------------------------------------------------------------


def check_members(members: object, n_regions: int, name: str = "members") -> torch.Tensor:
    """Check a batch of subsets given as boolean membership rows ``[M, R]`` (row m, column r: region r in subset m)."""
    members = check_tensor(members, name, ndim=2, dtype="bool", layout="[M, R]")
    n_regions = check_int(n_regions, "n_regions", low=0)
    if members.shape[1] != n_regions:
        raise InputError(f"`{name}` has {members.shape[1]} columns but there are {n_regions} regions")
    return members


def subset_keep(regions: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Keep-masks ``[M, H, W]`` of subsets of regions: mask ``m`` is the union of the regions in ``members[m]``.

    ``regions`` ``[R, H, W]`` is a partition (see :func:`check_regions`); ``members`` ``[M, R]`` is
    bool. The empty subset gives an all-False mask, the full one an all-True mask.
    """
    regions = check_tensor(regions, "regions", ndim=3, dtype="bool", layout="[R, H, W]")
    members = check_members(members, regions.shape[0])
    # A matmul of 0/1 floats counts how many selected regions cover each pixel (exact in float32 up to 2**24).
    cover = members.to(regions.device, torch.float32) @ regions.flatten(1).to(torch.float32)
    return (cover > 0).view(members.shape[0], *regions.shape[1:])


@torch.no_grad()
def masked_outputs(
    fn: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    keep: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> torch.Tensor:
    """Raw outputs of ``fn`` on every masked copy of one image: ``fn(compose_masked(x, keep[chunk]))`` concatenated.

    Like :func:`masked_scores` but returns whatever tensor ``fn`` returns per image (logits
    ``[M, C]``, probabilities, embeddings ``[M, D]``, a detection score ``[M]``...), so a set
    function can read several quantities from one forward. Model outputs with ``.logits`` are
    unwrapped. Chunks are composed on the fly: ``batch_size`` masks each if given, else the first 8
    masks run alone and the widest activation they make sizes the rest (:func:`rows_per_chunk`, the
    device budget), never more composed images than ``max_bytes``.
    """
    x = check_tensor(x, "x", ndim=(3, 4), dtype="float", layout="[C, H, W]")
    keep = check_tensor(keep, "keep", ndim=3, layout="[M, H, W]")
    if not callable(fn):
        raise InputError(f"`fn` must be callable images [B, C, H, W] -> tensor [B, ...]; got {type(fn).__name__}")
    per = (x[0] if x.ndim == 4 else x).numel() * x.element_size()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(x.device)
        out = logits_of(fn(compose_masked(x, chunk, baseline)))
        if out.ndim == 0 or out.shape[0] != chunk.shape[0]:
            raise InputError(f"`fn` must return one row per image ({chunk.shape[0]}); got shape {tuple(out.shape)}")
        return out

    outs, start, n = [], 0, keep.shape[0]
    if batch_size is None:
        # The first few masks are real work and the measurement: the widest activation per row sizes the rest
        # by the device budget (all masks at once ran 2.7x the best chunking of the shapes_cnn on this CPU).
        start = min(n, _PROBE_ROWS)
        with widest_activation() as widest:
            outs.append(run(keep[:start]))
        rows = rows_per_chunk(max(per, widest[0] // start), device=x.device, total=n)
        step = max(1, min(rows, max_bytes // max(1, per)))
    else:
        step = chunk_size(per, batch_size=batch_size, max_bytes=max_bytes)
    for s in progress(range(start, n, step), disable=not show_progress, desc="masked forwards"):
        outs.append(run(keep[s : s + step]))
    return torch.cat(outs)


_PROBE_ROWS = 8


@contextmanager
def widest_activation(*, kept: bool = False) -> Iterator[list[int]]:
    """Yield ``[bytes]``: the largest tensor any ``nn.Module`` returns inside the block, or with
    ``kept=True`` the sum of the leaf modules' outputs (what a backward keeps). A global forward hook,
    so the callable under it may wrap any model; the model's own hooks still count its forwards as
    usual, and no extra forward runs. A module called through ``.forward`` (not ``__call__``) is not
    seen itself, only its submodules."""
    widest = [0]

    def hook(m: nn.Module, _a: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        size = out.numel() * out.element_size()
        if not kept:
            widest[0] = max(widest[0], size)
        elif next(m.children(), None) is None:  # leaves only: a block's output is its last layer's
            widest[0] += size

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield widest
    finally:
        handle.remove()
