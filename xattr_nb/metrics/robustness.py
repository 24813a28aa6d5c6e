"""Robustness of explanations and of the model they explain.

- :func:`max_sensitivity`: how far an explanation moves under small input perturbations
  (captum's ``sensitivity_max``, seeded);
- :func:`noise_spearman`: whether Gaussian input noise keeps the map's ranking;
- :func:`class_recall`: a class's recall, optionally with channels of a layer ablated to a
  reference, which is how a circuit's necessity is measured (the drop when it is removed).

``explain_fn(inputs, target=...)`` is any function from images ``[B, C, H, W]`` to maps
``[B, ...]``, e.g. ``lambda x, target: attribute(model, x, target, method=...).scores``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_target, check_tensor
from xattr_nb.models.io import check_model, device_of, logits_of

__all__ = ["class_recall", "max_sensitivity", "noise_spearman"]


def _check_images(x: Any, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, ndim=4, dtype="float", layout="[B, C, H, W]")


def _check_explain_fn(explain_fn: Any) -> None:
    if not callable(explain_fn):
        raise InputError(
            f"`explain_fn` must be callable explain_fn(inputs, target=...); got {type(explain_fn).__name__}"
        )


def max_sensitivity(
    explain_fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    target: Any,
    *,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    max_examples_per_batch: int | None = None,
) -> torch.Tensor:
    """Max-sensitivity of an explanation (captum ``sensitivity_max``): ``[B]`` (float64).

    ``explain_fn(inputs, target=...)`` returns maps ``[B, ...]``. For each image, ``n_samples``
    copies are drawn uniformly in the L∞ ball of ``radius``; the score is the largest
    ``‖E(x + δ) − E(x)‖ / ‖E(x)‖`` (Frobenius): 0 for a constant explanation, scale-free. Seeded
    (captum draws with torch's global generator; the caller's state is restored).
    """
    from captum.metrics import sensitivity_max

    _check_explain_fn(explain_fn)
    x = _check_images(x)
    radius = check_float(radius, "radius", low=0.0)
    n_samples = check_int(n_samples, "n_samples", low=1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    tgt = torch.as_tensor(target) if not isinstance(target, (int, np.integer)) else int(target)

    def fn(inputs: Any, **kw: Any) -> Any:
        # captum calls with a 1-tuple for the clean inputs (and expects a tuple back), a tensor for the noisy ones
        if isinstance(inputs, tuple):
            return (explain_fn(inputs[0], **kw),)
        return explain_fn(inputs, **kw)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        s = sensitivity_max(
            fn, x, perturb_radius=radius, n_perturb_samples=n_samples,
            max_examples_per_batch=max_examples_per_batch, target=tgt,
        )  # fmt: skip
    return s.detach().double().cpu()


def noise_spearman(
    explain_fn: Callable[..., torch.Tensor], x: torch.Tensor, target: Any, *, sigma: float = 0.03, seed: int = 0
) -> torch.Tensor:
    """Spearman rank correlation between the maps of ``x`` and of ``x + N(0, sigma²)``: ``[B]`` (float64).

    1 means the noise left the map's ranking intact. A map that is constant on ``x`` or on the noisy
    copy (e.g. a ReLU'd CAM that is all zero) has no ranking: its entry is 0 (no agreement). The
    noise comes from a CPU ``torch.Generator`` seeded with ``seed``.
    """
    from scipy.stats import spearmanr

    _check_explain_fn(explain_fn)
    x = _check_images(x)
    sigma = check_float(sigma, "sigma", low=0.0)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0, high=2**32 - 1))
    noisy = x + sigma * torch.randn(x.shape, generator=gen).to(x)
    a = explain_fn(x, target=target).detach().flatten(1).double().cpu().numpy()
    b = explain_fn(noisy, target=target).detach().flatten(1).double().cpu().numpy()
    out = []
    for u, v in zip(a, b, strict=True):
        const = np.all(u == u[0]) or np.all(v == v[0])
        out.append(0.0 if const else float(spearmanr(u, v).statistic))
    return torch.tensor(out, dtype=torch.float64)


def _class_logits(out: Any) -> torch.Tensor:
    t = logits_of(out)
    if t.ndim != 2:
        raise InputError(f"the model must return logits [B, n_classes]; got shape {tuple(t.shape)}")
    return t


def _ablated_channels(ablate: Any, n: int) -> torch.Tensor:
    """Channel indices ``[S]`` in ``[0, n)`` from an int, a sequence, an array or a tensor."""
    if isinstance(ablate, (int, np.integer)) and not isinstance(ablate, bool):
        ablate = [int(ablate)]
    if isinstance(ablate, (list, tuple, np.ndarray)):
        ablate = torch.as_tensor(np.asarray(ablate, dtype=np.int64))
    t = check_tensor(ablate, "ablate", ndim=1, dtype="int", layout="[S]").long()
    if bool(((t < 0) | (t >= n)).any()):
        raise InputError(f"`ablate` must lie in [0, {n}); got {t[(t < 0) | (t >= n)].tolist()}")
    return t


def _reference(ref: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A reference ``[C, h, w]`` (one map per channel) or ``[C]`` (one value per channel), as ``[C, h, w]``."""
    ref = check_tensor(ref, "ref", ndim=(1, 3), dtype="float", layout="[C, h, w] or [C]")
    c = shape[0]
    if ref.shape[0] != c:
        raise InputError(f"`ref` has {ref.shape[0]} channels but the layer has {c}")
    if ref.ndim == 3 and tuple(ref.shape[1:]) != tuple(shape[1:]):
        raise InputError(f"`ref` maps are {tuple(ref.shape[1:])} but the layer's maps are {tuple(shape[1:])}")
    return ref if ref.ndim == 3 else ref[:, None, None].expand(c, *shape[1:])


def class_recall(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    cls: int,
    *,
    ablate: Any = None,
    layer: str | None = None,
    ref: torch.Tensor | None = None,
) -> float:
    """Recall of class ``cls`` on ``(x, y)``: the share of its images the model predicts as ``cls``.

    With ``ablate`` (channel indices), the channels ``ablate`` of module ``layer``'s output
    ``[B, C, h, w]`` are set to the reference ``ref`` (``[C, h, w]`` or one value per channel
    ``[C]``, e.g. their mean over a reference set) while the images pass, every other channel
    keeping its value (``do(A_u := a*_u)``, through
    :func:`xattr_nb.interventions.patch_output`). ``recall - recall with ablate`` is how much
    the class needs those channels.
    """
    model = check_model(model)
    x = _check_images(x).to(device_of(model))
    with torch.no_grad():
        n_cls = int(_class_logits(model(x[:1])).shape[-1])
    y = check_target(y, n_cls, x.shape[0], "y").to(x.device)
    cls = check_int(cls, "cls", low=0, high=n_cls - 1)
    sel = y == cls
    if not bool(sel.any()):
        raise InputError(f"`y` has no image of class {cls}")
    with torch.no_grad():
        if ablate is None:
            pred = _class_logits(model(x[sel])).argmax(-1)
        else:
            if layer is None or ref is None:
                raise InputError("`layer` and `ref` are required with `ablate`")
            from xattr_nb.interventions.hooks import patch_output

            def edit(out: torch.Tensor) -> torch.Tensor:
                if out.ndim != 4:
                    raise InputError(f"module {layer!r} must output feature maps [B, C, h, w]; got {tuple(out.shape)}")
                r = _reference(ref, tuple(out.shape[1:])).to(out)
                ch = _ablated_channels(ablate, out.shape[1]).to(out.device)
                new = out.clone()
                new[:, ch] = r[ch]
                return new

            with patch_output(model, layer, edit):
                pred = _class_logits(model(x[sel])).argmax(-1)
    return float((pred == cls).float().mean())
