"""Token attribution for Hugging Face text models: classifiers and causal LMs.

The model's forward takes ``input_ids, attention_mask`` and returns logits ``[B, C]`` (a
classifier: explain class ``target``) or ``[B, T, V]`` (a causal LM: explain the logit of the
token ``target`` at ``position``, one target token at a time).

Token ids are discrete, so gradient methods act on the *input embeddings*
(``model.get_input_embeddings()``, the word-embedding table) and sum over the embedding dimension
(as pixel maps sum over channels):

- ``layer_integrated_gradients`` (also ``integrated_gradients`` on tokens): captum
  ``LayerIntegratedGradients`` from the embeddings of the baseline ids to those of the input;
  complete, so the token scores sum to ``f(x) − f(baseline)``;
- ``saliency``: Σ_d |∂f/∂e_d| (captum ``LayerGradientXActivation`` with ``multiply_by_inputs=False``);
- ``input_x_gradient``: Σ_d e_d · ∂f/∂e_d (the same, ``multiply_by_inputs=True``);
- ``occlusion`` / ``feature_ablation``: f(x) − f(x with token(s) replaced by the baseline id)
  (captum ``Occlusion`` / ``FeatureAblation`` on the ids).

The baseline is one token id (``"pad"``, ``"mask"`` or an int) put in place of every *real,
non-special* token; special tokens ([CLS], [SEP]) and padding keep their ids, so they score 0.
Nothing is truncated: a text longer than the model's positions is an error.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from xattr_nb.attribution.methods import (
    QUADRATURES,
    attribute,
    class_index,
    is_class_names,
    lookup_method,
    probe_logits,
    register_method,
)
from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int, check_tensor, check_texts
from xattr_nb.kernels import activation_row_bytes, length_groups, real_positions, rows_per_chunk
from xattr_nb.models.io import check_token_inputs, device_of, eval_mode, input_embeddings, logits_of, max_positions

__all__ = ["attribute_text", "check_token_inputs", "encode_texts"]


def _positions(mask: torch.Tensor, position: Any) -> torch.Tensor:
    """Per-example index of the ``position``-th real token (``-1``: the last real token under any padding)."""
    return real_positions(mask, position)


def _forward(model: nn.Module):
    def fwd(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        logits = logits_of(model(input_ids=ids, attention_mask=mask))
        if logits.ndim == 3:  # causal LM: the next-token logits at `pos`
            logits = logits[torch.arange(logits.shape[0], device=logits.device), pos]
        return logits

    return fwd


def _baseline_ids(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, baseline: Any) -> torch.Tensor:
    """Baseline ids ``[B, T]``: an int replaces every real token; a tensor is taken as is."""
    n = input_embeddings(model).num_embeddings
    if baseline is None:
        baseline = getattr(getattr(model, "config", None), "pad_token_id", None)
        if baseline is None:
            raise InputError("`baseline` not given and the model config has no pad_token_id; pass a token id")
    if isinstance(baseline, torch.Tensor):
        base = check_tensor(baseline, "baseline", shape=tuple(ids.shape), dtype="int", layout="[B, T]")
        if int(base.min()) < 0 or int(base.max()) >= n:
            raise InputError(f"`baseline` ids must lie in [0, {n})")
        return base.to(ids)
    b = check_int(baseline, "baseline", low=0, high=n - 1)
    return torch.where(mask.bool(), torch.full_like(ids, b), ids)


def _prep(model, ids, mask, position, baseline):
    return _baseline_ids(model, ids, mask, baseline), _positions(mask, position).to(ids.device)


def _padded_lengths(mask: torch.Tensor) -> list[int]:
    """Per row, one past its last real token: the columns after it are right padding only."""
    cols = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.ne(0).long() * cols).amax(1).clamp_min(1).tolist()


def _auto_batch(model: nn.Module, seq_len: int, rows: int, n_steps: int) -> int | None:
    """captum's ``internal_batch_size`` sized by the device's budget (whole steps of ``rows`` rows);
    ``None`` (one batch) for a model without a transformer config to read the row size from."""
    try:
        row = activation_row_bytes(model, seq_len)
    except InputError:
        return None
    return rows_per_chunk(row, device=device_of(model), grad=True, multiple=rows, total=rows * n_steps)


def layer_integrated_gradients(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: torch.Tensor,
    *,
    attention_mask: torch.Tensor,
    position: int = -1,
    baseline: int | torch.Tensor | None = None,
    n_steps: int = 50,
    quadrature: str = "gausslegendre",
    internal_batch_size: int | None = None,
    group_lengths: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """IG on the input embeddings (captum ``LayerIntegratedGradients``), summed over the embedding dim.

    Rows are grouped by length (``group_lengths``, :func:`~xattr_nb.kernels.length_groups`: padding
    each group to its longest text wastes at most 10% of its work) and each group's right padding
    is cut off, so short texts do not pay for the longest one; the padding columns score 0 as before
    (the baseline keeps the pad ids there). ``internal_batch_size=None`` sizes captum's chunks from
    the device (:func:`~xattr_nb.kernels.rows_per_chunk`: whole steps of a group whose widest
    activation fits :func:`~xattr_nb.kernels.device_budget`) instead of running all
    ``B · n_steps`` rows at once. The scores do not depend on either (float rounding aside).

    Cost (measured, captum 0.9): ``n_steps + 2`` forwards for each example (captum runs the model on
    the inputs and on the baselines to read the embeddings) and ``n_steps`` backwards, so
    ``B · (n_steps + 2)`` and ``B · n_steps`` in the result's cost, a total over the batch.
    """
    from captum.attr import LayerIntegratedGradients

    base, pos = _prep(model, input_ids, attention_mask, position, baseline)
    n_steps = check_int(n_steps, "n_steps", low=1)
    ibs = None if internal_batch_size is None else check_int(internal_batch_size, "internal_batch_size", low=1)
    method = check_choice(quadrature, QUADRATURES, "quadrature")
    if not isinstance(group_lengths, bool):
        raise InputError(f"`group_lengths` must be a bool; got {type(group_lengths).__name__}")
    lig = LayerIntegratedGradients(_forward(model), input_embeddings(model))
    b, t_all = input_ids.shape
    lengths = _padded_lengths(attention_mask) if group_lengths else [t_all] * b
    groups = length_groups(lengths) if group_lengths else [list(range(b))]
    scores, chunks = None, []
    for g in groups:
        idx = torch.tensor(g, device=input_ids.device)
        t = max(lengths[i] for i in g)
        rows = ibs if ibs is not None else _auto_batch(model, t, len(g), n_steps)
        chunks.append(rows)
        tgt = target[idx] if isinstance(target, torch.Tensor) and target.ndim > 0 else target
        raw = lig.attribute(
            input_ids[idx, :t],
            baselines=base[idx, :t],
            target=tgt,
            additional_forward_args=(attention_mask[idx, :t], pos[idx]),
            n_steps=n_steps,
            method=method,
            internal_batch_size=rows,
        ).sum(-1)
        if scores is None:
            scores = raw.new_zeros((b, t_all))
        scores[idx, :t] = raw
    meta = {"n_steps": n_steps, "positions": pos.tolist(), "baseline_ids": base, "length_groups": len(groups)}
    meta["internal_batch_size"] = chunks
    return scores, meta


def _grad_x_emb(model, input_ids, target, attention_mask, position, multiply):
    from captum.attr import LayerGradientXActivation

    pos = _positions(attention_mask, position).to(input_ids.device)
    lga = LayerGradientXActivation(_forward(model), input_embeddings(model), multiply_by_inputs=multiply)
    raw = lga.attribute(input_ids, target=target, additional_forward_args=(attention_mask, pos))
    return raw, {"positions": pos.tolist()}


def token_saliency(
    model: nn.Module, input_ids: torch.Tensor, target: torch.Tensor, *, attention_mask: torch.Tensor, position: int = -1
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Σ_d |∂f/∂e_d| per token: the L1 norm of the gradient on the token's embedding."""
    raw, meta = _grad_x_emb(model, input_ids, target, attention_mask, position, False)
    return raw.abs().sum(-1), meta


def token_input_x_gradient(
    model: nn.Module, input_ids: torch.Tensor, target: torch.Tensor, *, attention_mask: torch.Tensor, position: int = -1
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Σ_d e_d · ∂f/∂e_d per token (input × gradient on the embeddings)."""
    raw, meta = _grad_x_emb(model, input_ids, target, attention_mask, position, True)
    return raw.sum(-1), meta


def token_occlusion(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: torch.Tensor,
    *,
    attention_mask: torch.Tensor,
    position: int = -1,
    baseline: int | torch.Tensor | None = None,
    window: int = 1,
    stride: int | None = None,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Occlusion over windows of ``window`` tokens replaced by the baseline ids (captum ``Occlusion``)."""
    from captum.attr import Occlusion

    base, pos = _prep(model, input_ids, attention_mask, position, baseline)
    window = check_int(window, "window", low=1, high=input_ids.shape[1])
    stride = window if stride is None else check_int(stride, "stride", low=1)
    ibs = None if internal_batch_size is None else check_int(internal_batch_size, "internal_batch_size", low=1)
    raw = Occlusion(_forward(model)).attribute(
        input_ids,
        sliding_window_shapes=(window,),
        strides=(stride,),
        baselines=base,
        target=target,
        additional_forward_args=(attention_mask, pos),
        perturbations_per_eval=1 if ibs is None else max(1, ibs // input_ids.shape[0]),
    )
    return raw.float(), {"positions": pos.tolist(), "window": window, "stride": stride}


def token_ablation(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: torch.Tensor,
    *,
    attention_mask: torch.Tensor,
    position: int = -1,
    baseline: int | torch.Tensor | None = None,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Each token replaced by its baseline id in turn (captum ``FeatureAblation``)."""
    from captum.attr import FeatureAblation

    base, pos = _prep(model, input_ids, attention_mask, position, baseline)
    ibs = None if internal_batch_size is None else check_int(internal_batch_size, "internal_batch_size", low=1)
    raw = FeatureAblation(_forward(model)).attribute(
        input_ids,
        baselines=base,
        target=target,
        additional_forward_args=(attention_mask, pos),
        perturbations_per_eval=1 if ibs is None else max(1, ibs // input_ids.shape[0]),
    )
    return raw.float(), {"positions": pos.tolist()}


_LIG = "integrated gradients on the input embeddings (captum LayerIntegratedGradients); complete"
for _name, _fn, _desc in [
    ("layer_integrated_gradients", layer_integrated_gradients, _LIG),
    ("integrated_gradients", layer_integrated_gradients, _LIG),
    ("saliency", token_saliency, "L1 norm of the gradient on each token's embedding"),
    ("input_x_gradient", token_input_x_gradient, "embedding · gradient, summed over the embedding dim"),
    ("occlusion", token_occlusion, "drop in the target logit when a window of tokens is set to the baseline id"),
    ("feature_ablation", token_ablation, "drop in the target logit when one token is set to the baseline id"),
]:
    register_method(_name, _fn, kinds=("tokens",), description=_desc)


# ----------------------------------------------------------------------------- texts


def _check_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputError(f"`tokenizer` must be a Hugging Face tokenizer; got {type(tokenizer).__name__}")
    n = input_embeddings(model).num_embeddings
    if len(tokenizer) > n:
        raise InputError(
            f"`tokenizer` does not match the model: it has {len(tokenizer)} tokens but the model's embedding "
            f"has {n} rows"
        )


def encode_texts(model: nn.Module, tokenizer: Any, texts: str | list[str]) -> dict[str, Any]:
    """Tokenize ``texts`` with special tokens, no truncation, right padding (done here, so tokenizers
    without a pad token work): ``input_ids``, ``attention_mask``, ``special`` (bool ``[B, T]``) and
    ``tokens`` (the real tokens of each text)."""
    texts = check_texts(texts)
    _check_tokenizer(model, tokenizer)
    rows, specials = [], []
    for i, t in enumerate(texts):
        enc = tokenizer(t, add_special_tokens=True, truncation=False, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        if not ids:
            raise InputError(f"`texts[{i}]` tokenizes to no tokens")
        rows.append(ids)
        specials.append(list(enc.get("special_tokens_mask", [0] * len(ids))))
    n_pos = max_positions(model)
    longest = max(len(r) for r in rows)
    if n_pos is not None and longest > n_pos:
        i = max(range(len(rows)), key=lambda j: len(rows[j]))
        raise InputError(
            f"`texts[{i}]` is {longest} tokens but the model takes at most {n_pos}; shorten it (nothing is truncated)"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    special = torch.zeros_like(ids, dtype=torch.bool)
    for b, (r, s) in enumerate(zip(rows, specials, strict=True)):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
        special[b, : len(r)] = torch.tensor(s, dtype=torch.bool)
    tokens = [tokenizer.convert_ids_to_tokens(r) for r in rows]
    return {"input_ids": ids, "attention_mask": mask, "special": special, "tokens": tokens}


def _baseline_id(tokenizer: Any, baseline: Any, n: int) -> int:
    if isinstance(baseline, str):
        attr = {"pad": "pad_token_id", "mask": "mask_token_id"}.get(baseline)
        if attr is None:
            raise InputError(f"`baseline` must be 'pad', 'mask' or a token id; got {baseline!r}")
        bid = getattr(tokenizer, attr, None)
        if bid is None:
            raise InputError(
                f"`baseline` is {baseline!r} but the tokenizer has no {baseline} token; pass a token id "
                "(e.g. tokenizer.eos_token_id or tokenizer.unk_token_id)"
            )
        return int(bid)
    return check_int(baseline, "baseline", low=0, high=n - 1)


def _target_ids(model: nn.Module, tokenizer: Any, target: Any, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    """A string ``target`` (or a list of them, one per text) as indices; ints and tensors pass through
    to ``check_target``.

    What a string names depends on the model, learned from one uncounted forward of the first text:
    a classifier (logits ``[B, C]``) reads it as a class name through ``id2label``
    (:func:`~xattr_nb.attribution.methods.class_index`); a causal LM (``[B, T, V]``) as one token of
    the tokenizer (``" Paris"``). Every error quotes the string as typed, then the token ids.
    """
    if not is_class_names(target):
        return target
    one = isinstance(target, str)
    names = [target] if one else list(target)
    if any(not isinstance(t, str) for t in names):
        raise InputError(f"`target` mixes strings and other values {names!r}; give all strings or all ints")
    if not one and len(names) != ids.shape[0]:
        raise InputError(f"`target` names {len(names)} targets but there are {ids.shape[0]} texts")
    with eval_mode(model, warn=False):
        out = probe_logits(model, ids, "tokens", {"attention_mask": mask})
    if out.ndim == 2:  # a classifier: class names
        return class_index(model, target, n_outputs=int(out.shape[-1]))
    n_out = int(out.shape[-1])
    found = []
    for t in names:
        enc = list(tokenizer(t, add_special_tokens=False)["input_ids"])
        if len(enc) != 1:
            pieces = tokenizer.convert_ids_to_tokens(enc)
            raise InputError(
                f"`target` {t!r} is {len(enc)} tokens {pieces} (ids {enc}) for this tokenizer; a language model "
                "is explained one target token at a time: pass a single token (mind the leading space of "
                "GPT-2 style tokenizers: ' Paris')"
            )
        if tokenizer.unk_token_id is not None and enc[0] == tokenizer.unk_token_id and t != tokenizer.unk_token:
            raise InputError(
                f"`target` {t!r} is not in the tokenizer's vocabulary (it encodes to the unknown token "
                f"{tokenizer.unk_token!r}, id {enc[0]})"
            )
        if enc[0] >= n_out:
            raise InputError(f"`target` {t!r} is token id {enc[0]}, but the model has only {n_out} output logits")
        found.append(enc[0])
    return found[0] if one else found


def attribute_text(
    model: nn.Module,
    tokenizer: Any,
    texts: str | list[str],
    target: int | str | list[int] | list[str] | torch.Tensor,
    method: str = "layer_integrated_gradients",
    *,
    position: int = -1,
    baseline: str | int | None = None,
    **kw: Any,
) -> Attribution:
    """Token attributions for ``texts`` under a Hugging Face classifier or causal LM.

    ``target``: for a classifier a class index or, with ``id2label`` in the model's config, a class
    name (``"sports"``); for a causal LM a token id or a one-token string (``" Paris"``); one for
    all texts or a list with one per text. Errors about a string target quote the string.
    ``position`` (causal LM only; ignored by classifiers) is the real token whose next-token logits
    are explained, ``-1`` the last. ``baseline``: ``"pad"``
    (the default, ``None``), ``"mask"`` or a token id, put in place of every real non-special token;
    giving one to a method without a baseline (saliency) is an error. ``kw`` go to the method
    (``n_steps``, ``internal_batch_size``, ``window``...).

    Returns ``kind="tokens"`` scores ``[B, T]`` with ``labels`` the tokens of each text and
    ``mask`` the attention mask; ``meta["baseline_id"]`` records the baseline. ``cost`` is totalled
    over the texts (rows through the model, see :func:`~xattr_nb.attribution.attribute`).
    """
    enc = encode_texts(model, tokenizer, texts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    dev = device_of(model)
    ids, mask, special = ids.to(dev), mask.to(dev), enc["special"].to(dev)
    # Pass `baseline` / `position` to the methods that take them (a registered method may not).
    params = inspect.signature(lookup_method(method, "tokens").fn).parameters
    extra: dict[str, Any] = {"attention_mask": mask}
    meta: dict[str, Any] = {"texts": check_texts(texts)}
    if "baseline" in params:
        bid = _baseline_id(tokenizer, "pad" if baseline is None else baseline, input_embeddings(model).num_embeddings)
        extra["baseline"] = torch.where(mask.bool() & ~special, torch.full_like(ids, bid), ids)
        meta["baseline_id"] = bid
    elif baseline is not None:
        raise InputError(f"method {method!r} takes no `baseline`; leave it out")
    if "position" in params:
        extra["position"] = position
    res = attribute(model, ids, _target_ids(model, tokenizer, target, ids, mask), method, **extra, **kw)
    res.meta.pop("baseline_ids", None)
    labels = [list(t) for t in enc["tokens"]]
    return Attribution(
        scores=res.scores,
        kind="tokens",
        method=res.method,
        target=res.target,
        cost=res.cost,
        labels=labels,
        mask=res.mask,
        special=special.to(res.scores.device),
        meta={**res.meta, **meta},
    )
