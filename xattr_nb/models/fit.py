"""A small, deterministic training loop for the tiny models: :func:`fit` and :func:`accuracy`.

Batches are ``(*inputs, target)``: everything but the last tensor goes to ``model(...)``
positionally, the last is the target. So ``(x, y)`` trains an image classifier and
``(input_ids, attention_mask, y)`` an :class:`~xattr_nb.models.text.EncoderClassifier`.
A model may return logits or an HF output with ``.logits``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.models.io import check_model, device_of, eval_mode, logits_of
from xattr_nb.runtime import pick_device, progress

Batch = Sequence[torch.Tensor]


@dataclass
class FitHistory:
    """What :func:`fit` did, one entry per epoch.

    ``loss``: mean training loss (the task loss plus ``extra_loss``); ``extra``: mean of
    ``extra_loss`` alone (zeros when there is none); ``val_accuracy``: accuracy on ``val`` after
    each epoch (empty without ``val``).
    """

    loss: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's figures, e.g. for ``record`` or a zoo manifest's metrics."""
        out = {"loss": self.loss[-1]} if self.loss else {}
        if self.val_accuracy:
            out["val_accuracy"] = self.val_accuracy[-1]
        return out


def _check_tensors(data: Any, name: str) -> tuple[torch.Tensor, ...]:
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise InputError(f"`{name}` must be a tuple (*inputs, target) of tensors, e.g. (x, y), or a DataLoader")
    tensors = tuple(check_tensor(t, f"{name}[{i}]", finite=False) for i, t in enumerate(data))
    n = tensors[0].shape[0]
    if any(t.ndim == 0 or t.shape[0] != n for t in tensors):
        raise InputError(
            f"`{name}` tensors must share their first (batch) dimension; got shapes {[tuple(t.shape) for t in tensors]}"
        )
    return tensors


def _check_ce_target(y: torch.Tensor, logits: torch.Tensor, name: str) -> None:
    if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1:
        raise InputError(
            f"`{name}` targets must be a 1-D integer tensor of class indices for cross-entropy; "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    if logits.ndim != 2:
        raise InputError(f"cross-entropy needs logits [B, n_classes]; the model returned shape {tuple(logits.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
        raise InputError(
            f"`{name}` targets must lie in [0, {logits.shape[1]}) (the model's classes); "
            f"got [{int(y.min())}, {int(y.max())}]"
        )


def accuracy(model: nn.Module, x: torch.Tensor | Batch, y: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of examples whose arg-max logit equals ``y`` (``x`` a tensor or a tuple of input tensors).

    Runs in eval mode under ``no_grad`` on the model's device; restores each submodule's previous mode.
    """
    check_model(model)
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    tensors = _check_tensors((*inputs, y), "(x, y)")
    *inputs, y = tensors
    batch_size = check_int(batch_size, "batch_size", low=1)
    device = device_of(model)
    correct = 0
    with eval_mode(model), torch.no_grad():
        for s in range(0, y.shape[0], batch_size):
            logits = logits_of(model(*(t[s : s + batch_size].to(device) for t in inputs)))
            yb = y[s : s + batch_size].to(device)
            _check_ce_target(yb, logits, "y")
            correct += int((logits.argmax(-1) == yb).sum())
    return correct / y.shape[0]


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, ...] | DataLoader,
    *,
    epochs: int,
    lr: float,
    batch_size: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_loss: Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    val: tuple[torch.Tensor, ...] | None = None,
    seed: int = 0,
    device: str = "cpu",
    show_progress: bool = True,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
) -> FitHistory:
    """Train ``model`` in place with AdamW for ``epochs`` passes over ``train``; return a :class:`FitHistory`.

    - ``train``: ``(*inputs, y)`` tensors, shuffled each epoch by a generator seeded with ``seed``
      in batches of ``batch_size`` (default 64); or a ``DataLoader`` yielding such tuples (it
      brings its own batch size and shuffling, so ``batch_size`` must stay ``None``).
    - ``loss_fn(logits, y)``: default cross-entropy (then ``y`` must hold class indices).
    - ``extra_loss(model, inputs, y, logits)``: a scalar added to the loss, e.g. an attribution
      prior or a consistency term (``inputs`` is the tuple of input tensors of the batch).
    - ``val``: ``(*inputs, y)`` scored by :func:`accuracy` after each epoch.

    Deterministic for a given ``seed`` and initial weights (the global RNG is seeded inside a
    forked RNG state, so dropout is reproducible and the caller's RNG is untouched). The model
    ends in eval mode.
    """
    check_model(model)
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_float(lr, "lr", low=0.0)
    if lr == 0.0:
        raise InputError("`lr` must be > 0")
    weight_decay = check_float(weight_decay, "weight_decay", low=0.0)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    if grad_clip is not None:
        grad_clip = check_float(grad_clip, "grad_clip", low=0.0)
    for name, fn in (("loss_fn", loss_fn), ("extra_loss", extra_loss)):
        if fn is not None and not callable(fn):
            raise InputError(f"`{name}` must be callable or None; got {type(fn).__name__}")
    if isinstance(train, DataLoader):
        if batch_size is not None:
            raise InputError("`batch_size` must be None when `train` is a DataLoader (it has its own batch size)")
        tensors = None
    else:
        tensors = _check_tensors(train, "train")
        batch_size = check_int(64 if batch_size is None else batch_size, "batch_size", low=1)
    val_tensors = _check_tensors(val, "val") if val is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("`model` has no trainable parameters (all have requires_grad=False)")

    dev = pick_device(device)
    model.to(dev)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    hist = FitHistory()
    t0 = time.perf_counter()
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        bar = progress(range(epochs), desc="fit", unit="epoch", **({"disable": True} if not show_progress else {}))
        for _ in bar:
            model.train()
            if tensors is not None:
                order = torch.randperm(tensors[0].shape[0], generator=gen)
                batches = ([t[order[s : s + batch_size]] for t in tensors] for s in range(0, len(order), batch_size))
            else:
                batches = iter(train)
            total = extra_total = 0.0
            seen = 0
            for batch in batches:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise InputError("each batch of `train` must be a tuple (*inputs, target) of tensors")
                *inputs, y = (t.to(dev) for t in batch)
                logits = logits_of(model(*inputs))
                if loss_fn is None:
                    _check_ce_target(y, logits, "train")
                    loss = torch.nn.functional.cross_entropy(logits, y)
                else:
                    loss = loss_fn(logits, y)
                extra = extra_loss(model, tuple(inputs), y, logits) if extra_loss is not None else None
                if extra is not None:
                    loss = loss + extra
                if not torch.isfinite(loss):
                    raise InputError(f"the training loss became {float(loss)} at step {hist.steps}; lower `lr`")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                n = y.shape[0]
                total += float(loss.detach()) * n
                extra_total += float(extra.detach()) * n if extra is not None else 0.0
                seen += n
                hist.steps += 1
            if seen == 0:
                raise InputError("`train` yielded no batches")
            hist.loss.append(total / seen)
            hist.extra.append(extra_total / seen)
            postfix = {"loss": f"{hist.loss[-1]:.4g}"}
            if val_tensors is not None:
                hist.val_accuracy.append(accuracy(model, val_tensors[:-1], val_tensors[-1], batch_size or 256))
                postfix["val_acc"] = f"{hist.val_accuracy[-1]:.3f}"
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(postfix)
    model.eval()
    hist.wall_s = time.perf_counter() - t0
    return hist
