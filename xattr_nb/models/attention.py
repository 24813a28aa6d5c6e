"""The toolkit's eager attention function, registered with ``transformers`` as ``"xattr_eager"``.

Attention probabilities exist only on the eager path (``sdpa`` never materialises them), and how
the stock eager function applies dropout changes between ``transformers`` releases, so a hook on
``attn_dropout`` is not a stable way to reach them. Instead this module registers its own eager
function through ``transformers.AttentionInterface`` (plus the matching eager causal mask through
``AttentionMaskInterface``, without which a custom key gets no mask at all). It computes exactly
what the stock eager function computes, and per attention module it can

- detach the probabilities (the AH-rule of LRP: relevance then flows only through the values), and
- store them (attention patterns for circuit tools).

:func:`use_xattr_attention` switches a model to it for the body of a ``with`` and restores the
previous implementation on exit, also on an exception. Written by hand because no maintained
library offers a version-robust handle on HF attention probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from xattr_nb.checks import InputError
from xattr_nb.models.io import check_model

__all__ = ["XATTR_EAGER", "attention_patterns", "use_xattr_attention", "xattr_eager_attention"]

XATTR_EAGER = "xattr_eager"
_DETACH = "_xattr_detach_probs"  # module attribute: detach the probabilities (AH-rule)
_STORE = "_xattr_store_probs"  # module attribute: a list the probabilities are appended to


def xattr_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager scaled dot-product attention (HF's signature): ``softmax(q k^T * scaling + mask) v``.

    Returns ``(output [B, T, H, d_head], probs [B, H, T, S])`` like the stock eager function.
    Grouped-query models (fewer key/value heads) repeat keys and values per query group.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    store = getattr(module, _STORE, None)
    if store is not None:
        store.append(probs.detach())
    used = probs.detach() if getattr(module, _DETACH, False) else probs
    out = torch.matmul(used, value).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register(XATTR_EAGER, xattr_eager_attention)
AttentionMaskInterface.register(XATTR_EAGER, eager_mask)


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct HF config of the model's submodules (a composite model may hold several)."""
    seen: dict[int, Any] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules that dispatch through ``config._attn_implementation`` (HF convention)."""
    return [m for m in model.modules() if hasattr(m, "config") and hasattr(m, "scaling") and hasattr(m, "layer_idx")]


@contextmanager
def use_xattr_attention(model: nn.Module, *, detach_probs: bool = False) -> Iterator[list[nn.Module]]:
    """Within the ``with``, ``model`` attends through :func:`xattr_eager_attention`.

    ``detach_probs=True`` stops gradients through the attention probabilities (the forward values
    are unchanged). Yields the attention modules, in order. The previous implementation and the
    module flags are restored on exit, also when the body raises.
    """
    check_model(model)
    if not isinstance(detach_probs, bool):
        raise InputError(f"`detach_probs` must be a bool; got {type(detach_probs).__name__}")
    configs, mods = _configs(model), _attention_modules(model)
    if not configs or not mods:
        raise InputError(
            f"{type(model).__name__} has no Hugging Face attention modules that dispatch on "
            "config._attn_implementation; xattr_eager attention needs a transformers model"
        )
    before = [c._attn_implementation for c in configs]
    flags = [getattr(m, _DETACH, None) for m in mods]
    try:
        for c in configs:
            c._attn_implementation = XATTR_EAGER
        for m in mods:
            setattr(m, _DETACH, detach_probs)
        yield mods
    finally:
        for c, b in zip(configs, before, strict=True):
            c._attn_implementation = b
        for m, f in zip(mods, flags, strict=True):
            if f is None:
                if hasattr(m, _DETACH):
                    delattr(m, _DETACH)
            else:
                setattr(m, _DETACH, f)


@contextmanager
def attention_patterns(model: nn.Module, *, detach_probs: bool = False) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record attention probabilities of every forward run inside the ``with``.

    Yields ``{layer: [probs [B, H, T, S], ...]}`` (one tensor per forward through that layer),
    filled as the model runs. The storage is removed from the modules on exit.
    """
    store: dict[int, list[torch.Tensor]] = {}
    with ExitStack() as stack:
        mods = stack.enter_context(use_xattr_attention(model, detach_probs=detach_probs))
        try:
            for i, m in enumerate(mods):
                layer = getattr(m, "layer_idx", None)
                store[int(layer) if layer is not None else i] = []
                setattr(m, _STORE, store[int(layer) if layer is not None else i])
            yield store
        finally:
            for m in mods:
                if hasattr(m, _STORE):
                    delattr(m, _STORE)
