"""One ``attribute(model, inputs, target, method=...)`` over captum's methods and ours.

The entry point validates the arguments, runs the method with the model in eval mode, measures
its cost with :func:`xattr_nb.kernels.count_passes` (forward and backward passes as rows through
the model, **totalled over the batch**: saliency on a batch of 4 costs 4 forwards and 4 backwards;
divide by ``len(result)`` for the cost per example) and wall time, and returns an
:class:`Attribution`.

What the inputs are decides what the scores are:

- ``[B, C, H, W]`` float images → ``kind="pixels"``, scores ``[B, H, W]`` (channels summed);
- ``[B, F]`` float features → ``kind="features"``, scores ``[B, F]``;
- ``[B, T]`` integer token ids → ``kind="tokens"``, scores ``[B, T]`` (methods in
  :mod:`xattr_nb.attribution.text`, which registers them when the package is imported).

The model must return logits ``[B, C]`` (or an object with ``.logits``); token models may return
``[B, T, V]`` (a causal LM, see :mod:`~xattr_nb.attribution.text`).

**Eval mode.** Attributions of a model in training mode are noisy (dropout) and can even change
the model (batch-norm running statistics move on every forward). ``attribute`` therefore runs
the model in eval mode; if it was in training mode it warns, and restores every submodule's
own training flag afterwards, so a training loop that calls ``attribute`` keeps working.

**Methods are a registry.** :func:`register_method` adds a method (a later paper's RISE or LiMA
registers itself the same way), :func:`list_methods` lists them as rows a notebook can print as a
table. A method function is called as ``fn(model, inputs, target, **kw)`` with the model in eval
mode, ``inputs`` validated and ``target`` a LongTensor ``[B]`` already checked against the
model's output size; it returns the scores (``[B, H, W]`` / ``[B, F]`` / ``[B, T]``), a pair
``(scores, meta)``, or an :class:`Attribution`. The cost is measured around the call.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.attribution.registry import MethodSpec, list_methods, lookup_method, register_method
from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int, check_placement, check_target, check_tensor
from xattr_nb.kernels import count_passes, rows_per_chunk, widest_activation
from xattr_nb.models.io import check_model, check_token_inputs, eval_mode, logits_of

__all__ = [
    "QUADRATURES",
    "MethodSpec",
    "attribute",
    "class_index",
    "default_cam_layer",
    "find_layer",
    "input_kind",
    "is_class_names",
    "list_methods",
    "lookup_method",
    "register_method",
]


# ----------------------------------------------------------------------------- helpers


def input_kind(inputs: torch.Tensor) -> str:
    """``"pixels"`` for float ``[B, C, H, W]``, ``"features"`` for float ``[B, F]``, ``"tokens"`` for int ``[B, T]``."""
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"`inputs` must be a torch.Tensor; got {type(inputs).__name__}")
    if inputs.is_floating_point():
        if inputs.ndim == 4:
            return "pixels"
        if inputs.ndim == 2:
            return "features"
        raise InputError(
            f"`inputs` must be images [B, C, H, W] or features [B, F] (float) or token ids [B, T] (int); "
            f"got a float tensor of shape {tuple(inputs.shape)}"
        )
    if inputs.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) and inputs.ndim == 2:
        return "tokens"
    raise InputError(
        f"`inputs` must be images [B, C, H, W] or features [B, F] (float) or token ids [B, T] (int); "
        f"got {inputs.dtype} of shape {tuple(inputs.shape)}"
    )


# Modules that keep a conv's feature maps' shape and belong to its block (normalisation, activation).
_NORM_ACT = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at when none is given: the output of the model's last conv *block*.

    That is the layer captum and pytorch-grad-cam users point Grad-CAM at (``model.layer4[-1]`` of
    a ResNet, the project's ``TinyCNN.last_conv``): feature maps after the block's normalisation
    and activation, not the raw convolution before them. Resolved in this order:

    1. ``model.last_conv`` when the model names its last conv block so and it is a submodule
       (:class:`~xattr_nb.models.TinyCNN` and the detector of :mod:`xattr_nb.models.detection` do);
    2. else the last ``nn.Conv2d`` (registration order) is found: if its parent is a block of its
       own (a custom module, not ``nn.Sequential`` / ``nn.ModuleList`` and not the model itself,
       e.g. a conv → norm → ReLU block or a residual block), the parent, whose output is the block's;
    3. else (the conv sits in an ``nn.Sequential`` or directly in the model) the last of the
       normalisation / activation modules that follow it without a gap (``Conv2d, BatchNorm2d, ReLU``
       gives the ReLU), or the conv itself when none follows.

    Anything else (a block output that these rules miss, an earlier layer): pass ``layer=``.
    """
    check_model(model)
    named = dict(model.named_modules())
    last = getattr(model, "last_conv", None)
    if isinstance(last, nn.Module) and any(m is last for m in named.values()):
        return last
    convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError("`layer` not given and the model has no Conv2d; pass layer= a module or its name")
    name = convs[-1]
    parent_name, _, child = name.rpartition(".")
    parent = named[parent_name]
    if parent is not model and not isinstance(parent, _CONTAINERS):
        return parent
    children = list(parent.named_children())
    i = next(j for j, (n, _) in enumerate(children) if n == child)
    out = named[name]
    for _, m in children[i + 1 :]:
        if not isinstance(m, _NORM_ACT):
            break
        out = m
    return out


def find_layer(model: nn.Module, layer: nn.Module | str | None, *, default: type[nn.Module] = nn.Conv2d) -> nn.Module:
    """Resolve ``layer``: a submodule of ``model``, a module name (``"features.3"``), or ``None``.

    ``None`` with the default ``default=nn.Conv2d`` is :func:`default_cam_layer`: the output of the
    last conv *block* (after its normalisation and activation), the layer Grad-CAM users mean.
    ``None`` with another ``default`` type is the last submodule of that type (in registration
    order, which is forward order for the usual ``nn.Sequential`` style CNN)."""
    check_model(model)
    if layer is None and default is nn.Conv2d:
        return default_cam_layer(model)
    if layer is None:
        found = [m for m in model.modules() if isinstance(m, default)]
        if not found:
            raise InputError(
                f"`layer` not given and the model has no {default.__name__}; pass layer= a module or its name"
            )
        return found[-1]
    names = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in names:
            close = difflib.get_close_matches(layer, [n for n in names if n], n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise InputError(f"`layer` {layer!r} is not a module of this model{hint}")
        return names[layer]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in names.values()):
            raise InputError(f"`layer` {type(layer).__name__} is not a submodule of this model")
        return layer
    raise InputError(f"`layer` must be an nn.Module, a module name or None; got {type(layer).__name__}")


def _baseline(baselines: Any, inputs: torch.Tensor, name: str = "baselines") -> torch.Tensor:
    """A baseline as a tensor shaped like ``inputs``: a number fills it; a tensor must be shaped like
    ``inputs`` or like one example (then the same reference serves every example)."""
    if isinstance(baselines, bool):
        raise InputError(f"`{name}` must be a number or a tensor; got bool")
    if isinstance(baselines, (int, float)):
        if not math.isfinite(float(baselines)):
            raise InputError(f"`{name}` must be finite; got {baselines}")
        return torch.full_like(inputs, float(baselines))
    b = check_tensor(baselines, name, dtype="float")
    if tuple(b.shape) == tuple(inputs.shape):
        return b.to(inputs)
    if tuple(b.shape) == tuple(inputs.shape[1:]):
        return b.to(inputs).unsqueeze(0).expand_as(inputs).contiguous()
    raise InputError(
        f"`{name}` must be a number, or a tensor shaped like `inputs` {tuple(inputs.shape)} or like one "
        f"example {tuple(inputs.shape[1:])}; got {tuple(b.shape)}"
    )


def _forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    def fwd(*args: Any) -> torch.Tensor:
        return logits_of(model(*args))

    return fwd


def _leaf(inputs: torch.Tensor) -> torch.Tensor:
    # A copy that requires grad, so captum neither warns nor flips the caller's tensor.
    return inputs.detach().clone().requires_grad_(True)


def _opt_batch(internal_batch_size: Any) -> int | None:
    return None if internal_batch_size is None else check_int(internal_batch_size, "internal_batch_size", low=1)


@torch.no_grad()
def _widest_row_bytes(model: nn.Module, row: torch.Tensor, *, kept: bool = False) -> int:
    """Bytes of the widest output of any submodule when one input row ``row`` ``[1, ...]`` goes
    through ``model`` (``kept=True``: the sum of the leaf modules' outputs, what a backward keeps), measured
    by one forward under :func:`~xattr_nb.kernels.widest_activation` (for models without a transformer
    config, whose widths :func:`~xattr_nb.kernels.activation_row_bytes` reads); at least the row's own bytes."""
    base = row.numel() * row.element_size()
    with widest_activation(kept=kept) as widest:
        # `forward`, not `__call__`: the model's own hooks (count_passes) do not see this measurement
        out = logits_of(model.forward(row))
    out_bytes = out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
    return int(base + widest[0] + out_bytes if kept else max(base, widest[0], out_bytes))


def _to_kind(raw: torch.Tensor, kind: str, reduce: str = "sum") -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, H, W]`` by summing channels (``mean`` when every channel holds the same
    perturbation score, as occlusion over all channels does); ``[B, F]`` is kept."""
    if kind == "pixels":
        return raw.sum(1) if reduce == "sum" else raw.mean(1)
    return raw


# ----------------------------------------------------------------------------- captum methods

#: captum's quadrature rules for the IG path integral (its ``method=`` argument).
QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def saliency(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *, abs: bool = True) -> torch.Tensor:
    """|∂ logit_target / ∂ x| (captum ``Saliency``; ``abs=True`` is captum's default, ``abs=False`` keeps the sign).

    For a linear model ``f(x) = w·x + b`` this is ``|w|`` (or ``w``) whatever ``x`` is.
    """
    from captum.attr import Saliency

    raw = Saliency(_forward(model)).attribute(_leaf(inputs), target=target, abs=bool(abs))
    return _to_kind(raw, input_kind(inputs))


def input_x_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x · ∂ logit_target / ∂ x (captum ``InputXGradient``); ``x·w`` for a linear model."""
    from captum.attr import InputXGradient

    raw = InputXGradient(_forward(model)).attribute(_leaf(inputs), target=target)
    return _to_kind(raw, input_kind(inputs))


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    baselines: float | torch.Tensor = 0.0,
    n_steps: int = 50,
    quadrature: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Integrated gradients (captum ``IntegratedGradients``): (x − x') · ∫₀¹ ∂f(x' + α(x − x'))/∂x dα.

    Complete: the scores sum to ``f(x) − f(x')`` up to the quadrature error of ``n_steps``; on a
    linear model they equal ``(x − x')·w`` exactly. ``quadrature`` is captum's ``method`` (renamed:
    ``method`` names the attribution method in :func:`attribute`); beware that captum 0.9's
    ``"riemann_trapezoid"`` weights sum to ``(n_steps − 1)/n_steps``, so it is not complete.
    ``internal_batch_size=None`` sizes captum's chunks (whole steps of the batch) so that the
    activations a chunk keeps for its backward (every leaf module's output: ``_widest_row_bytes``
    with ``kept=True`` measures one row) fit :func:`~xattr_nb.kernels.device_budget` for
    forward+backward rows (on this 2-core CPU the 800 rows of 16 ShapesWorld images x 50 steps ran
    2.2x slower in one batch than in chunks of 64, the best); ``meta`` records the size.
    The scores do not depend on it (float rounding aside).
    Cost: ``n_steps`` forwards and backwards for each example, so ``B · n_steps`` of each in the
    result's cost, a total over the batch (captum's ``return_convergence_delta`` would add two
    forwards per example; we do not ask for it).
    """
    from captum.attr import IntegratedGradients

    n_steps = check_int(n_steps, "n_steps", low=1)
    base = _baseline(baselines, inputs)
    ibs = _opt_batch(internal_batch_size)
    if ibs is None:  # sized by the device's budget for forward+backward rows, whole steps of the batch
        b = inputs.shape[0]
        row = _widest_row_bytes(model, inputs[:1], kept=True)
        ibs = rows_per_chunk(row, device=inputs.device, grad=True, multiple=b)
        ibs = min(ibs, b * n_steps)
    raw = IntegratedGradients(_forward(model)).attribute(
        inputs,
        baselines=base,
        target=target,
        n_steps=n_steps,
        method=check_choice(quadrature, QUADRATURES, "quadrature"),
        internal_batch_size=ibs,
    )
    meta = {
        "baselines": baselines if not isinstance(baselines, torch.Tensor) else "tensor",
        "n_steps": n_steps,
        "internal_batch_size": ibs,
    }
    return _to_kind(raw, input_kind(inputs)), meta


def gradient_shap(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    baselines: float | torch.Tensor = 0.0,
    n_samples: int = 20,
    stdevs: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """GradientSHAP (captum ``GradientShap``): expected gradients × (x − x') over random baselines
    ``x'`` drawn from ``baselines`` (a number, one example, or a stack ``[N, ...]`` of references)
    and random points on the path. Seeded: the same ``seed`` gives the same scores."""
    from captum.attr import GradientShap

    n_samples = check_int(n_samples, "n_samples", low=1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    if isinstance(baselines, torch.Tensor) and baselines.ndim == inputs.ndim:
        base = check_tensor(baselines, "baselines", dtype="float")
        if tuple(base.shape[1:]) != tuple(inputs.shape[1:]):
            raise InputError(
                f"`baselines` for gradient_shap must be [N, *{tuple(inputs.shape[1:])}] references; "
                f"got {tuple(base.shape)}"
            )
        base = base.to(inputs)
    else:
        base = _baseline(baselines, inputs[:1])
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    # captum draws the path points with NumPy's global generator and the noise with torch's:
    # seed both for the call and give the caller's streams back untouched.
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            raw = GradientShap(_forward(model)).attribute(
                inputs, baselines=base, target=target, n_samples=n_samples, stdevs=float(stdevs)
            )
    finally:
        np.random.set_state(np_state)
    return _to_kind(raw, input_kind(inputs))


def _ppe(internal_batch_size: int | None, batch: int) -> int:
    # captum's perturbations_per_eval: how many perturbed copies of the batch share one forward.
    ibs = _opt_batch(internal_batch_size)
    return 1 if ibs is None else max(1, ibs // batch)


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    window: int | tuple[int, ...] | None = None,
    stride: int | tuple[int, ...] | None = None,
    baselines: float | torch.Tensor = 0.0,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Occlusion (captum ``Occlusion``): f(x) − f(x with a window replaced by the baseline), spread
    over the window and averaged where windows overlap.

    On pixels the window is ``(h, w)`` over all channels (default ``(4, 4)``), on features ``(w,)``
    (default 1); ``stride`` defaults to the window (no overlap). The window covers every channel, so
    each channel holds the same score and the pixel map is their mean (not their sum). With a
    1-pixel window on a linear model the score of a pixel is Σ_c (x − x')·w.
    ``internal_batch_size`` caps the rows of one forward (default: one perturbation per forward).
    """
    from captum.attr import Occlusion

    kind = input_kind(inputs)
    spatial = 2 if kind == "pixels" else 1
    window = _window(window, spatial, 4 if kind == "pixels" else 1, "window")
    stride = window if stride is None else _window(stride, spatial, 1, "stride")
    if any(w > s for w, s in zip(window, inputs.shape[-spatial:], strict=True)):
        raise InputError(f"`window` {window} is larger than the input {tuple(inputs.shape[-spatial:])}")
    c = (inputs.shape[1],) if kind == "pixels" else ()
    raw = Occlusion(_forward(model)).attribute(
        inputs,
        sliding_window_shapes=c + window,
        strides=c + stride,
        baselines=_baseline(baselines, inputs),
        target=target,
        perturbations_per_eval=_ppe(internal_batch_size, inputs.shape[0]),
    )
    return _to_kind(raw, kind, reduce="mean"), {"window": window, "stride": stride}


def _window(value: Any, n: int, default: int, name: str) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise InputError(f"`{name}` must be an int or a tuple of {n} ints; got {value!r}")
    return tuple(check_int(v, name, low=1) for v in value)


def feature_ablation(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    feature_mask: torch.Tensor | None = None,
    baselines: float | torch.Tensor = 0.0,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Feature ablation (captum ``FeatureAblation``): f(x) − f(x with one group replaced by the baseline).

    Groups: ``feature_mask`` ``[B or 1, H, W]`` of group ids for pixels (regions, superpixels;
    default each pixel across all channels), ``[B or 1, F]`` for features (default each feature).
    Every pixel of a group receives the group's score.
    """
    from captum.attr import FeatureAblation

    kind = input_kind(inputs)
    b = inputs.shape[0]
    if kind == "pixels":
        h, w = inputs.shape[-2:]
        if feature_mask is None:
            fm = torch.arange(h * w, device=inputs.device).view(1, h, w)
        else:
            fm = check_tensor(feature_mask, "feature_mask", ndim=3, dtype="int", layout="[B or 1, H, W]")
            if tuple(fm.shape[1:]) != (h, w) or fm.shape[0] not in (1, b):
                raise InputError(f"`feature_mask` must be [{b} or 1, {h}, {w}]; got {tuple(fm.shape)}")
        fm = fm.to(inputs.device).long().unsqueeze(1).expand(-1, inputs.shape[1], -1, -1)
    elif feature_mask is None:
        fm = None
    else:
        fm = check_tensor(feature_mask, "feature_mask", ndim=2, dtype="int", layout="[B or 1, F]")
        if fm.shape[1] != inputs.shape[1] or fm.shape[0] not in (1, b):
            raise InputError(f"`feature_mask` must be [{b} or 1, {inputs.shape[1]}]; got {tuple(fm.shape)}")
        fm = fm.to(inputs.device).long()
    raw = FeatureAblation(_forward(model)).attribute(
        inputs,
        baselines=_baseline(baselines, inputs),
        target=target,
        feature_mask=fm,
        perturbations_per_eval=_ppe(internal_batch_size, b),
    )
    return _to_kind(raw, kind, reduce="mean")


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: nn.Module | str | None = None,
    relu: bool = True,
    interpolate_mode: str = "bilinear",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Grad-CAM (captum ``LayerGradCam``): ReLU(Σ_k mean(∂f/∂A_k) · A_k) at a conv layer, upsampled to the
    input with ``LayerAttribution.interpolate``.

    ``layer`` is a module or its name. The default is the output of the model's last conv *block*,
    after its batch norm and activation (:func:`default_cam_layer`: ``model.last_conv`` for
    :class:`~xattr_nb.models.TinyCNN`, ``layer4[-1]`` for a torchvision ResNet, the ReLU after
    the last conv of an ``nn.Sequential``), which is where captum and pytorch-grad-cam users point
    Grad-CAM; pass ``layer=`` the conv itself for the pre-normalisation maps (they differ).
    ``meta["layer"]`` names the layer used. ``relu=False`` keeps the negative evidence (captum's
    default; Grad-CAM's paper applies the ReLU).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    mod = find_layer(model, layer)
    cam = LayerGradCam(_forward(model), mod).attribute(inputs, target=target, relu_attributions=bool(relu))
    if cam.ndim != 4:
        raise InputError(f"`layer` must output feature maps [B, K, h, w]; Grad-CAM got shape {tuple(cam.shape)}")
    small = tuple(cam.shape[-2:])
    up = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=interpolate_mode)
    name = next((n for n, m in model.named_modules() if m is mod), "?")
    return up[:, 0], {"layer": name, "layer_size": small}


for _name, _fn, _desc in [
    ("saliency", saliency, "|gradient| of the target logit w.r.t. the input (captum Saliency, abs=True)"),
    ("input_x_gradient", input_x_gradient, "input × gradient (captum InputXGradient)"),
    ("integrated_gradients", integrated_gradients, "path integral of gradients from a baseline (captum IG); complete"),
    ("gradient_shap", gradient_shap, "expected gradients over random baselines and path points (captum GradientShap)"),
    ("occlusion", occlusion, "drop in the target logit when a sliding window is set to the baseline (captum)"),
    ("feature_ablation", feature_ablation, "drop in the target logit when a feature group is ablated (captum)"),
]:
    register_method(_name, _fn, kinds=("pixels", "features"), description=_desc)
register_method("grad_cam", grad_cam, kinds=("pixels",), description="Grad-CAM at a conv layer, upsampled (captum)")


# ----------------------------------------------------------------------------- entry point


def _check_kwargs(spec: MethodSpec, kw: dict[str, Any]) -> None:
    params = inspect.signature(spec.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in list(params.items())[3:] if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    bad = [k for k in kw if k not in accepted]
    if bad:
        raise InputError(f"method {spec.name!r} does not take {bad}; it takes {accepted}")


_TARGET_KINDS = "an int, a list of ints, a 1-D integer tensor [B] or (for models with id2label) a class name"


def is_class_names(target: Any) -> bool:
    """Whether ``target`` names classes (a string, or a list with strings) rather than indexing them."""
    return isinstance(target, str) or (
        isinstance(target, (list, tuple)) and len(target) > 0 and any(isinstance(t, str) for t in target)
    )


def _id2label(model: nn.Module) -> dict[int, str] | None:
    for src in (model, getattr(model, "config", None)):
        table = getattr(src, "id2label", None) if src is not None else None
        if isinstance(table, Mapping) and table:
            try:
                return {int(k): str(v) for k, v in table.items()}
            except (TypeError, ValueError):
                return None
    return None


def class_index(
    model: nn.Module, names: str | list[str], *, n_outputs: int | None = None, name: str = "target"
) -> int | list[int]:
    """The class index of each class name in ``names``, looked up in the model's ``id2label`` (the
    model's own attribute, else ``model.config.id2label`` as Hugging Face classifiers have it).

    One name gives an int, a list of names a list. ``n_outputs`` (the model's number of logits)
    guards against an ``id2label`` that does not describe the head (an encoder's default config
    under a head of another size). Errors quote the name as typed and list the classes when few.
    """
    check_model(model)
    one = isinstance(names, str)
    if not one and not isinstance(names, (list, tuple)):
        raise InputError(f"`{name}` must be a class name or a list of them; got {type(names).__name__}")
    items = [names] if one else list(names)
    if not items or any(not isinstance(t, str) for t in items):
        raise InputError(f"`{name}` mixes class names and other values {items!r}; give all names or all ints")
    table = _id2label(model)
    if table is None:
        raise InputError(
            f"`{name}` {names!r} is a class name, but the model ({type(model).__name__}) has no `config.id2label` "
            f"or `id2label` to look it up in; `{name}` must be {_TARGET_KINDS}"
        )
    labels = [table[i] for i in sorted(table)]
    if n_outputs is not None and sorted(table) != list(range(n_outputs)):
        raise InputError(
            f"cannot look up `{name}` {names!r}: the model's id2label names classes {sorted(table)[:20]} "
            f"{labels[:20]} but the model returns {n_outputs} logits; pass class indices"
        )
    label2id = {v: k for k, v in sorted(table.items(), reverse=True)}  # the first index of a repeated name
    out = []
    for t in items:
        if t not in label2id:
            close = difflib.get_close_matches(t, labels, n=3)
            hint = f"; did you mean {close}?" if close else ""
            listing = f"its classes are {labels}" if len(labels) <= 20 else f"it has {len(labels)} classes"
            raise InputError(f"`{name}` {t!r} is not a class of this model ({type(model).__name__}){hint}; {listing}")
        out.append(label2id[t])
    return out[0] if one else out


@torch.no_grad()
def probe_logits(model: nn.Module, inputs: torch.Tensor, kind: str, kw: dict[str, Any]) -> torch.Tensor:
    """The logits of one forward on the first example (``kw["attention_mask"]`` for tokens), to learn
    the output size; run it outside any cost count."""
    if kind == "tokens":
        mask = kw.get("attention_mask")
        out = model(input_ids=inputs[:1], attention_mask=None if mask is None else mask[:1])
    else:
        out = model(inputs[:1])
    return logits_of(out)


_NO_LIMIT = 2**62


def _check_output(out: torch.Tensor, kind: str, tgt: torch.Tensor | None, batch: int) -> torch.Tensor:
    """The model's logits must be ``[B, C]`` (images, features) and ``tgt`` must index their last dim."""
    if kind != "tokens" and out.ndim != 2:
        raise InputError(f"the model must return logits [B, C]; got shape {tuple(out.shape)}")
    if tgt is not None:
        check_target(tgt, int(out.shape[-1]), batch)
    return out


@contextlib.contextmanager
def _checked_output(model: nn.Module, kind: str, tgt: torch.Tensor, batch: int) -> Iterator[list[bool]]:
    """Check the first output of ``model`` inside the block with :func:`_check_output` (an
    :class:`InputError` raised there stops the method before it reads the logits); yields a list
    that holds ``True`` once a forward was checked."""
    seen: list[bool] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        if not seen:
            seen.append(True)
            handle.remove()
            _check_output(logits_of(output), kind, tgt, batch)

    handle = model.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | list[int] | torch.Tensor,
    method: str = "integrated_gradients",
    **kw: Any,
) -> Attribution:
    """Attribute the ``target`` logit of ``model`` on ``inputs`` to the input units with ``method``.

    ``inputs``: images ``[B, C, H, W]`` → pixels ``[B, H, W]``; features ``[B, F]``; token ids
    ``[B, T]`` (int) → tokens (pass ``attention_mask=`` and see :mod:`~xattr_nb.attribution.text`).
    They must be on the model's device and, when floating-point, of its parameters' dtype (float64
    images into a float32 model are an error, not cast); meta tensors (no data) are refused.
    ``target``: one class index for the whole batch, or one per example (a list or a 1-D integer
    tensor); for a classifier with ``config.id2label`` (or an ``id2label`` attribute) also a class
    name or a list of them (``"circle"``). ``kw`` go to the method (``baselines``, ``n_steps``,
    ``internal_batch_size``, ``layer``, ``window``...); a keyword the method does not take is an
    error, not ignored. See :func:`list_methods` for the methods.

    The result's ``cost`` counts the forward and backward passes the method made (measured, not
    estimated) as rows through the model, **totalled over the batch**: saliency on a batch of 4
    costs 4 forwards and 4 backwards, IG with ``n_steps=k`` costs ``4·k`` of each
    (``cost.forward / len(result)`` is the cost per example). ``target`` is checked against the
    model's output size on the method's first forward; a class-name ``target`` needs one extra
    forward of one example first, which is not counted.
    """
    check_model(model)
    kind = input_kind(inputs)
    # Before any check that reads values: a meta tensor has none, and a dtype or device mismatch
    # would otherwise surface as a torch error deep inside the method.
    check_placement(inputs, model, "inputs")
    inputs = check_tensor(inputs, "inputs", dtype="float" if kind != "tokens" else "int")
    spec = lookup_method(method, kind)
    _check_kwargs(spec, kw)
    if kind == "tokens":
        kw["attention_mask"] = check_token_inputs(model, inputs, kw.get("attention_mask"))
    batch = int(inputs.shape[0])
    with eval_mode(model, warn=True):
        if is_class_names(target):  # a name needs the output size (and kind) first: one probe forward
            out = _check_output(probe_logits(model, inputs, kind, kw), kind, None, batch)
            if out.ndim == 3:
                raise InputError(
                    f"`target` {target!r} is a string, but this model is a language model (logits [B, T, V]): "
                    "name a token with attribute_text(model, tokenizer, texts, target), or pass its token id"
                )
            target = class_index(model, target, n_outputs=int(out.shape[-1]))
        # The output's shape and the target's range are checked on the method's first forward (a
        # hook), not by a forward of its own: a probe costs a whole small-batch forward (saliency
        # on 16 images paid 15% for it). Only if the method made no forward does the probe run.
        tgt = check_target(target, _NO_LIMIT, batch).to(inputs.device)
        inputs = inputs.detach()
        with torch.enable_grad(), count_passes(model) as counter, _checked_output(model, kind, tgt, batch) as seen:
            res = spec.fn(model, inputs, tgt, **kw)
        cost = counter.cost()
        if not seen:
            _check_output(probe_logits(model, inputs, kind, kw), kind, tgt, batch)
    meta: dict[str, Any] = {}
    if isinstance(res, Attribution):
        return replace(res, cost=cost, method=method)
    if isinstance(res, tuple):
        res, meta = res
    mask = kw["attention_mask"].bool() if kind == "tokens" else None
    if kind == "tokens":
        res = res.masked_fill(~mask, 0.0)
    return Attribution(
        scores=res.detach().float(), kind=kind, method=method, target=tgt, cost=cost, mask=mask, meta=meta
    )
