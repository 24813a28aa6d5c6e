"""The model adapter seam: how the library reads any model, in one place.

Every layer above (kernels, attribution, interventions, training, the paper modules) talks to a
model through these helpers instead of re-typing them:

- :func:`check_model`: the model is a ``torch.nn.Module`` (an :class:`~xattr_nb.checks.InputError`
  naming the argument otherwise);
- :func:`logits_of`: the logits tensor of a forward's output, whatever the model returns: the
  tensor itself, a Hugging Face ``ModelOutput`` (``.logits``), a mapping with ``"logits"``, or a
  tuple / list whose first element is the logits (``return_dict=False``, many research models);
- :func:`device_of`: the device of the model's first parameter, else of its first buffer, else the
  CPU (a parameter-free model, such as a fixed function wrapped in a module, never raises);
- :func:`eval_mode`: run a block with the model in eval mode and give every submodule its own
  training flag back afterwards, also when the block raises;
- :func:`input_embeddings`, :func:`max_positions` and :func:`check_token_inputs`: what a token
  model's embedding table and position limit allow, and whether ids and an attention mask fit it.

This module imports only torch and :mod:`xattr_nb.checks`, so the hot paths in
:mod:`xattr_nb.kernels` can use it without loading transformers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_tensor

__all__ = [
    "check_model",
    "check_token_inputs",
    "device_of",
    "eval_mode",
    "input_embeddings",
    "logits_of",
    "max_positions",
]


def check_model(model: Any, name: str = "model") -> nn.Module:
    """``model`` itself when it is a ``torch.nn.Module``; an :class:`InputError` naming ``name`` otherwise."""
    if not isinstance(model, nn.Module):
        raise InputError(f"`{name}` must be a torch.nn.Module; got {type(model).__name__}")
    return model


_LAYOUTS = {2: "[B, C] (a classifier)", 3: "[B, T, V] (a language model)"}


def logits_of(output: Any, *, ndim: int | None = None) -> torch.Tensor:
    """The logits tensor of a model's output.

    Accepted: a tensor (returned as is), an object with a tensor ``.logits`` (Hugging Face
    ``ModelOutput``), a mapping with a tensor under ``"logits"``, or a tuple / list whose first
    element is a tensor (Hugging Face with ``return_dict=False``). Anything else is an
    :class:`InputError` naming what came back. ``ndim`` (2: a classifier's ``[B, C]``, 3: a
    language model's ``[B, T, V]``) also requires that many dimensions.
    """
    logits = _find_logits(output)
    if ndim is not None and logits.ndim != ndim:
        layout = _LAYOUTS.get(ndim, f"with {ndim} dimensions")
        raise InputError(f"the model must return logits {layout}; got shape {tuple(logits.shape)}")
    return logits


def _find_logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    what = type(output).__name__
    if isinstance(output, (tuple, list)):
        what = f"an empty {what}" if not output else f"a {what} whose first element is {type(output[0]).__name__}"
    raise InputError(
        "the model must return its logits: a tensor, an output with `.logits` (Hugging Face), or a tuple "
        f"whose first element is the logits tensor; got {what}"
    )


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else ``cpu``."""
    check_model(model)
    for tensors in (model.parameters(), model.buffers()):
        first = next(iter(tensors), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module, *, warn: bool = False) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode, then give each submodule its own training flag back.

    Restoring per submodule (not one ``model.train(flag)`` call, which sets one flag everywhere)
    keeps a submodule the caller froze in eval mode (a fixed encoder, a batch norm) frozen, and
    one left in training mode training. The flags come back also when the body raises.
    ``warn=True`` warns when the model arrives in training mode (attribution does: results of a
    model in training mode are noisy, and batch-norm statistics would move).
    """
    check_model(model)
    flags = [(m, m.training) for m in model.modules()]
    if warn and model.training:
        warnings.warn(
            f"{type(model).__name__} is in training mode; attribution runs it in eval mode (dropout off, "
            "batch-norm statistics frozen) and restores the training flags afterwards. Call model.eval() "
            "first to silence this.",
            UserWarning,
            stacklevel=3,
        )
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


# ----------------------------------------------------------------------------- token models


def input_embeddings(model: nn.Module) -> nn.Embedding:
    """The word-embedding table of a token model (``model.get_input_embeddings()``, an ``nn.Embedding``)."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Embedding):
        raise InputError(
            f"`model` ({type(model).__name__}) must be a Hugging Face text model with get_input_embeddings() "
            "returning an nn.Embedding"
        )
    return emb


def max_positions(model: nn.Module) -> int | None:
    """The longest input the model's position embeddings allow (``None`` when its config does not say).

    Read from ``model.config``: ``max_position_embeddings`` (BERT-style), else ``n_positions`` (GPT-2).
    """
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def check_token_inputs(model: nn.Module, input_ids: Any, attention_mask: Any) -> torch.Tensor:
    """Check ids against the model (range, length) and return the attention mask as a LongTensor ``[B, T]``."""
    emb = input_embeddings(model)
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
    if int(ids.min()) < 0 or int(ids.max()) >= emb.num_embeddings:
        raise InputError(
            f"`input_ids` must lie in [0, {emb.num_embeddings}) (the model's embedding rows); "
            f"got ids in [{int(ids.min())}, {int(ids.max())}]: does the tokenizer match the model?"
        )
    n_pos = max_positions(model)
    if n_pos is not None and ids.shape[1] > n_pos:
        raise InputError(f"`input_ids` has {ids.shape[1]} positions but the model takes at most {n_pos}")
    if attention_mask is None:
        return torch.ones_like(ids, dtype=torch.long)
    mask = check_tensor(attention_mask, "attention_mask", shape=tuple(ids.shape), layout="[B, T]")
    if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("`attention_mask` must hold 0 (padding) and 1 (real token) as integers or bools")
    if not bool(mask.bool().any(1).all()):
        raise InputError("`attention_mask` has a row with no real token")
    return mask.long().to(ids.device)
