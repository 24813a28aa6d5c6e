"""Attribution at an inner layer, upsampled to the image: the layer methods ML-Att style studies compare.

Registered for pixels when :mod:`xattr_nb.attribution` is imported, so
``attribute(model, x, y, method="layer_cam", layer="features.3")`` works on any CNN:

| name | score at layer ℓ with output ``a`` | built on |
|---|---|---|
| ``layer_grad`` | Σ_ch \\|∂y/∂a\\| (``abs=False``: Σ_ch ∂y/∂a) | captum ``LayerGradientXActivation(multiply_by_inputs=False)`` |
| ``layer_grad_x_act`` | Σ_ch a ⊙ ∂y/∂a | captum ``LayerGradientXActivation`` |
| ``layer_cam`` | ReLU(Σ_ch ReLU(∂y/∂a) ⊙ a) (Jiang et al., 2021) | captum's layer gradient and activation |
| ``guided_backprop`` | Σ_ch \\|guided gradient\\| at the input | captum ``GuidedBackprop`` |

``layer`` is a module or its name (default: the output of the last conv block,
:func:`~xattr_nb.attribution.methods.default_cam_layer`); maps ``[B, h, w]`` at the layer are
upsampled to the input with captum's ``LayerAttribution.interpolate`` (``interpolate_mode``).
``meta["layer_size"]`` is the map size before upsampling.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from xattr_nb.attribution.methods import find_layer, register_method
from xattr_nb.checks import InputError, check_choice, check_int, check_tensor
from xattr_nb.models.io import check_model, logits_of

__all__ = ["guided_backprop", "layer_cam", "layer_grad", "layer_grad_and_act", "layer_grad_x_act", "upsample"]


_MODES = ("bilinear", "nearest", "bicubic", "area")


def _check_call(model: Any, inputs: Any, target: Any) -> None:
    """The checks :func:`~xattr_nb.attribution.attribute` makes, for direct calls of a layer method."""
    check_model(model)
    x = check_tensor(inputs, "inputs", ndim=4, dtype="float", layout="[B, C, H, W]")
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise InputError(f"`target` must be a class index or a [B] tensor of them; got {type(target).__name__}")
    if isinstance(target, torch.Tensor):
        check_tensor(target, "target", shape=(x.shape[0],), dtype="int", layout="[B]")


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Maps ``[B, h, w]`` resized to ``size`` with captum's ``LayerAttribution.interpolate`` (unchanged when equal)."""
    from captum.attr import LayerAttribution

    maps = check_tensor(maps, "maps", ndim=3, dtype="float", finite=False, layout="[B, h, w]")
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InputError(f"`size` must be (height, width); got {size!r}")
    size = (check_int(size[0], "size[0]", low=1), check_int(size[1], "size[1]", low=1))
    mode = check_choice(mode, _MODES, "mode")

    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return LayerAttribution.interpolate(maps[:, None], size, interpolate_mode=mode)[:, 0]


def _feature_maps(grad: torch.Tensor) -> torch.Tensor:
    if grad.ndim != 4:
        raise InputError(f"`layer` must output feature maps [B, C, h, w]; got shape {tuple(grad.shape)}")
    return grad


def _grad_at(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, mod: nn.Module, *, times_act: bool):
    from captum.attr import LayerGradientXActivation

    def fwd(x: torch.Tensor) -> torch.Tensor:
        return logits_of(model(x))

    return LayerGradientXActivation(fwd, mod, multiply_by_inputs=times_act).attribute(inputs, target=target)


def layer_grad_and_act(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, layer: Any
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The gradient of the target logit w.r.t. a layer's output ``[B, C, h, w]``, that output, and the
    layer's name (captum: one backward and one more forward)."""
    from captum.attr import LayerActivation

    _check_call(model, inputs, target)
    mod = find_layer(model, layer)
    grad = _grad_at(model, inputs, target, mod, times_act=False)
    act = LayerActivation(lambda x: logits_of(model(x)), mod).attribute(inputs)
    _feature_maps(grad)
    name = next((n for n, m in model.named_modules() if m is mod), "?")
    return grad, act, name


def layer_grad(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: Any = None,
    abs: bool = True,
    interpolate_mode: str = "bilinear",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Gradient at a layer, Σ_ch |∂y/∂a| (``abs=False``: Σ_ch ∂y/∂a), upsampled to the input: the
    layer version of Saliency."""
    _check_call(model, inputs, target)
    g = _grad_at(model, inputs, target, find_layer(model, layer), times_act=False)
    m = (g.abs() if abs else g).sum(1)
    return upsample(m, tuple(inputs.shape[-2:]), interpolate_mode), {"layer_size": tuple(m.shape[-2:])}


def layer_grad_x_act(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: Any = None,
    interpolate_mode: str = "bilinear",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Input × gradient at a layer, Σ_ch a ⊙ ∂y/∂a, upsampled to the input."""
    _check_call(model, inputs, target)
    m = _grad_at(model, inputs, target, find_layer(model, layer), times_act=True).sum(1)
    return upsample(m, tuple(inputs.shape[-2:]), interpolate_mode), {"layer_size": tuple(m.shape[-2:])}


def layer_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: Any = None,
    interpolate_mode: str = "bilinear",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Layer-CAM (Jiang et al., 2021): ReLU(Σ_ch ReLU(∂y/∂a) ⊙ a), upsampled to the input.

    Unlike Grad-CAM, the gradient weighs each *position*, not each channel as a whole, so a
    position whose gradient is zero (a cell cut off from the head) gets nothing. Not in captum:
    written from captum's layer gradient and activation.
    """
    _check_call(model, inputs, target)
    grad, act, _ = layer_grad_and_act(model, inputs, target, layer)
    m = (grad.clamp_min(0) * act).sum(1).clamp_min(0)
    return upsample(m, tuple(inputs.shape[-2:]), interpolate_mode), {"layer_size": tuple(m.shape[-2:])}


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *, abs: bool = True) -> torch.Tensor:
    """Guided Backpropagation (captum ``GuidedBackprop``: only positive gradients pass back through
    each ``nn.ReLU`` module), channel-summed; ``abs=True`` takes |·| first."""
    from captum.attr import GuidedBackprop

    _check_call(model, inputs, target)
    with warnings.catch_warnings():  # captum announces its (temporary) ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        g = GuidedBackprop(model).attribute(inputs.detach().clone().requires_grad_(True), target=target)
    return (g.abs() if abs else g).sum(1)


for _name, _fn, _desc in [
    ("guided_backprop", guided_backprop, "guided backpropagation, |·| channel-summed (captum GuidedBackprop)"),
    ("layer_grad", layer_grad, "Σ_ch |gradient| at a layer, upsampled (captum)"),
    ("layer_grad_x_act", layer_grad_x_act, "Σ_ch activation × gradient at a layer, upsampled (captum)"),
    ("layer_cam", layer_cam, "Layer-CAM: ReLU(Σ_ch ReLU(grad) ⊙ act) at a layer, upsampled"),
]:
    register_method(_name, _fn, kinds=("pixels",), description=_desc)
