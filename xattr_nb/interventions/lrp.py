"""LRP through plain autograd: :func:`lrp_mode` keeps a transformer's forward and swaps its backward.

Layer-wise Relevance Propagation for transformers (Ali et al. 2022; Jafari et al. 2024) can be
written as gradient x input through a network whose non-linear pieces are locally linearised.
Each rule below is a "detach trick": the module's output keeps its exact value, and its gradient
becomes the one of a rewritten expression (``y.detach() + z - z.detach()`` has the value of ``y``
and the gradient of ``z``), so every gradient-based tool (attribution patching, gradient x input,
captum) turns into its LRP counterpart inside the ``with``:

=============  ==========================================================  ===============================
rule           rewritten expression (``sg`` = stop-gradient)                modules
=============  ==========================================================  ===============================
``"ln"``       ``(x - mean) * sg(1 / std) * weight + bias`` (RMSNorm: no    ``nn.LayerNorm``, ``*RMSNorm``
               centring); LayerNorm becomes linear                          (GPT-2 ``ln_1``, ``ln_2``, ``ln_f``)
``"identity"`` ``x * sg(act(x) / stab(x))``: relevance passes the           MLP activations (``mlp.act``,
               activation unchanged; ``stab(x) = x + (1[x=0] + sign x)*eps`` ``mlp.act_fn``)
``"half"``     gate ``z = g * u`` becomes ``z/2 + sg(z/2)``: each factor    gated MLPs (``gate_proj``,
               gets half                                                    ``up_proj``, ``down_proj``)
AH (``ah``)    ``sg(A) @ V``: relevance flows through the values only       attention, via
                                                                            :mod:`xattr_nb.models.attention`
=============  ==========================================================  ===============================

Linear layers need no change (LRP-0 is gradient x input). The rules mirror the RelP code
(``FarnoushRJ/RelP``, a TransformerLens fork); here they are hooks on HF modules, registered by
:func:`~xattr_nb.interventions.hooks.hooks` so nothing leaks on exit or on an exception. Written
by hand because zennit, the maintained LRP library, has no rules for HF transformer blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_tensor
from xattr_nb.interventions.hooks import hooks
from xattr_nb.models.io import check_model

__all__ = ["LRP_RULES", "lrp_mode", "lrp_targets", "stabilize"]

LRP_RULES: tuple[str, ...] = ("ln", "identity", "half")
_ACT_NAMES = ("act", "act_fn", "activation_fn", "activation")


def stabilize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + (1[x = 0] + sign(x)) * eps``: moves ``x`` away from zero, keeping its sign (RelP's ``stabilize``)."""
    x = check_tensor(x, "x", dtype="float", finite=False, nonempty=False)
    eps = check_float(eps, "eps", low=0.0)
    return x + ((x == 0).to(x.dtype) + torch.sign(x)) * eps


def _same_value(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The value of ``y`` (bit for bit) with the gradient of ``z``."""
    return y.detach() + (z - z.detach())


def _is_rmsnorm(m: nn.Module) -> bool:
    return type(m).__name__.endswith("RMSNorm") and isinstance(getattr(m, "weight", None), torch.Tensor)


def _ln_hook(m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
    x = args[0]
    if isinstance(m, nn.LayerNorm):
        dims = tuple(range(-len(m.normalized_shape), 0))
        xc = x - x.mean(dims, keepdim=True)
        inv = torch.rsqrt(xc.pow(2).mean(dims, keepdim=True) + m.eps).detach()
        z = xc * inv
        if m.weight is not None:
            z = z * m.weight
        if m.bias is not None:
            z = z + m.bias
    else:  # RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, computed in float32 as HF does
        eps = float(getattr(m, "variance_epsilon", getattr(m, "eps", 1e-6)))
        xf = x.float()
        inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps).detach()
        z = (xf * inv).to(x.dtype) * m.weight
    return _same_value(out, z.to(out.dtype))


def _identity_hook(eps: float) -> Callable[..., torch.Tensor]:
    def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        coef = (out / stabilize(x, eps)).detach()
        return _same_value(out, x * coef)

    return hook


def _half_hook(m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
    x = args[0]
    z = m.act_fn(m.gate_proj(x)) * m.up_proj(x)
    z = 0.5 * z + (0.5 * z).detach()
    return _same_value(out, m.down_proj(z))


def _is_gated_mlp(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))


def lrp_targets(model: nn.Module, rules: Sequence[str] = LRP_RULES) -> dict[str, list[str]]:
    """Which modules each rule rewrites in ``model``: ``{"ln": [...], "identity": [...], "half": [...]}``.

    ``"ln"``: every ``nn.LayerNorm`` and ``*RMSNorm``; ``"identity"``: every module named
    ``act``/``act_fn``/``activation_fn``/``activation`` (the MLP non-linearity of GPT-2, Llama, OPT...);
    ``"half"``: every gated MLP (a module with ``gate_proj``, ``up_proj``, ``down_proj``, ``act_fn``).
    """
    check_model(model)
    rules = _check_rules(rules)
    out: dict[str, list[str]] = {r: [] for r in rules}
    for name, m in model.named_modules():
        if "ln" in rules and (isinstance(m, nn.LayerNorm) or _is_rmsnorm(m)):
            out["ln"].append(name)
        if "identity" in rules and name.rsplit(".", 1)[-1] in _ACT_NAMES and not list(m.children()):
            out["identity"].append(name)
        if "half" in rules and _is_gated_mlp(m):
            out["half"].append(name)
    return out


def _check_rules(rules: Any) -> tuple[str, ...]:
    if isinstance(rules, str) or not isinstance(rules, (list, tuple)):
        raise InputError(f"`rules` must be a list or tuple drawn from {list(LRP_RULES)}; got {rules!r}")
    for i, r in enumerate(rules):
        check_choice(r, LRP_RULES, f"rules[{i}]")
    if len(set(rules)) != len(rules):
        raise InputError(f"`rules` repeats a rule: {list(rules)}")
    return tuple(rules)


@contextmanager
def lrp_mode(
    model: nn.Module, rules: Sequence[str] = LRP_RULES, *, ah: bool = False, eps: float = 1e-6
) -> Iterator[dict[str, list[str]]]:
    """Within the ``with``, gradients of ``model`` are LRP relevances; the forward is unchanged.

    ``rules``: a subset of ``("ln", "identity", "half")`` (RelP's default is all three; ``()``
    changes nothing, so gradients are plain gradients). ``ah=True`` adds the AH-rule (attention
    probabilities detached; switches a transformers model to the ``"xattr_eager"`` attention
    function for the ``with``). ``eps``: the Identity-rule's stabiliser. Yields the rewritten
    module names (:func:`lrp_targets`, plus ``"ah"``). Hooks and the attention implementation
    are restored on exit, also when the body raises.
    """
    rules = _check_rules(rules)
    if not isinstance(ah, bool):
        raise InputError(f"`ah` must be a bool; got {type(ah).__name__}")
    eps = check_float(eps, "eps", low=0.0)
    targets = lrp_targets(model, rules)
    for rule in ("ln", "identity"):
        if rule in rules and not targets[rule]:
            raise InputError(f"rule {rule!r}: {type(model).__name__} has no module it applies to")
    ident = _identity_hook(eps)
    fns: dict[str, Callable[..., Any]] = {}
    for name in targets.get("ln", []):
        fns[name] = _ln_hook
    for name in targets.get("identity", []):
        fns[name] = ident
    for name in targets.get("half", []):
        fns[name] = _half_hook
    with ExitStack() as stack:
        if fns:
            stack.enter_context(hooks(model, fns))
        if ah:
            from xattr_nb.models.attention import use_xattr_attention

            mods = stack.enter_context(use_xattr_attention(model, detach_probs=True))
            targets["ah"] = [n for n, m in model.named_modules() if any(m is a for a in mods)]
        yield targets
