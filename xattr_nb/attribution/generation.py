"""Per-step attribution for causal language models: one target token at a time over a continuation.

A generated continuation ``y_1..y_G`` of a prompt ``x`` is explained step by step: step ``j``
attributes ``p(y_j | x, y_<j)`` to the tokens before it (prompt *and* earlier generated tokens).
Because a causal LM's prediction at position ``t`` never sees later tokens, every step can use
the same full sequence: row ``j`` of a ``[G, L]`` batch holds the sequence with an attention mask
that ends right before ``y_j`` (right padding), so ``position=-1`` (the last real token) reads the
prediction of ``y_j``. That batches all steps into one call of
:func:`~xattr_nb.attribution.attribute` (captum's gradient and perturbation methods underneath)
for any token method; ``batch_steps=False`` runs the steps one at a time (for memory).

- :func:`greedy_continue`: the continuation a causal LM generates greedily (what gets explained);
- :func:`step_batch`: the ``[G, L]`` rows, masks and targets of the steps;
- :func:`attribute_steps`: token ids in, one stacked :class:`Attribution` (row ``j`` = step ``j``) out;
- :func:`attribute_generation`: text in, through the tokenizer, the same out.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from xattr_nb.attribution.methods import attribute, lookup_method
from xattr_nb.attribution.result import Attribution
from xattr_nb.attribution.text import encode_texts
from xattr_nb.checks import InputError, check_int, check_tensor, check_text
from xattr_nb.models.io import device_of, eval_mode, logits_of
from xattr_nb.models.text import check_position_limit
from xattr_nb.runtime import Cost

__all__ = ["attribute_generation", "attribute_steps", "greedy_continue", "step_batch"]


@torch.no_grad()
def greedy_continue(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, *, eos_id: int | None = None
) -> torch.Tensor:
    """``input_ids`` ``[T]`` followed by up to ``max_new_tokens`` greedy next tokens: ``[T + G]``.

    Stops after emitting ``eos_id`` (kept in the output) or at the model's position limit
    (``config.n_positions`` / ``max_position_embeddings``), never silently beyond it. Runs in eval
    mode; every submodule's training flag is restored afterwards.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=1, dtype="int", layout="[T]")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=1)
    check_position_limit(model, ids.shape[0], max_new_tokens)
    out = ids.to(device_of(model))
    with eval_mode(model):
        for _ in range(max_new_tokens):
            nxt = logits_of(model(input_ids=out.unsqueeze(0)), ndim=3)[0, -1].argmax()
            out = torch.cat([out, nxt.view(1)])
            if eos_id is not None and int(nxt) == int(eos_id):
                break
    return out.cpu()


def step_batch(ids: torch.Tensor, prompt_len: int) -> dict[str, torch.Tensor]:
    """The rows of a per-step attribution of the tokens after ``prompt_len`` in ``ids`` ``[L]``.

    Returns ``input_ids`` ``[G, L]`` (the sequence repeated), ``attention_mask`` ``[G, L]`` (row
    ``j`` real up to and excluding generated token ``j``, i.e. ``prompt_len + j`` tokens) and
    ``target`` ``[G]`` (the generated tokens), ``G = L - prompt_len``.
    """
    ids = check_tensor(ids, "ids", ndim=1, dtype="int", layout="[L]")
    prompt_len = check_int(prompt_len, "prompt_len", low=1, high=ids.shape[0] - 1)
    g, length = ids.shape[0] - prompt_len, ids.shape[0]
    lens = prompt_len + torch.arange(g, device=ids.device)
    mask = (torch.arange(length, device=ids.device).unsqueeze(0) < lens.unsqueeze(1)).long()
    return {"input_ids": ids.unsqueeze(0).expand(g, -1).clone(), "attention_mask": mask, "target": ids[prompt_len:]}


def attribute_steps(
    model: nn.Module,
    ids: torch.Tensor,
    prompt_len: int,
    method: str = "input_x_gradient",
    *,
    tokens: list[str] | None = None,
    keep_ids: Any = (),
    baseline: int | None = None,
    batch_steps: bool = True,
    **kw: Any,
) -> Attribution:
    """Attribute every token after ``prompt_len`` of ``ids`` ``[L]`` to the tokens before it.

    ``method``: any token method registered with :func:`~xattr_nb.attribution.attribute`
    (``"saliency"``, ``"input_x_gradient"``, ``"layer_integrated_gradients"``, ``"occlusion"``,
    ``"feature_ablation"``, or one registered by a method module such as ``"reagent"``).
    ``baseline``: the token id perturbation/IG methods put in place of a token; positions whose
    id is in ``keep_ids`` (e.g. ``[BOS]``) keep their id. ``tokens``: the ``L`` token strings, for
    labels. ``kw`` go to the method. Returns one :class:`Attribution` with ``G`` rows (row ``j``
    explains generated token ``j``; its scores cover the ``prompt_len + j`` tokens before it).
    """
    b = step_batch(ids, prompt_len)
    if not isinstance(batch_steps, bool):
        raise InputError(f"`batch_steps` must be a bool; got {type(batch_steps).__name__}")
    if tokens is not None and (not isinstance(tokens, list) or len(tokens) != ids.shape[0]):
        raise InputError(f"`tokens` must be a list of the {ids.shape[0]} token strings of `ids`")
    params = inspect.signature(lookup_method(method, "tokens").fn).parameters
    extra: dict[str, Any] = {}
    dev = device_of(model)
    x, mask = b["input_ids"].to(dev), b["attention_mask"].to(dev)
    if baseline is not None:
        if "baseline" not in params:
            raise InputError(f"method {method!r} takes no `baseline`; leave it out")
        bid = check_int(baseline, "baseline", low=0)
        keep = torch.isin(x, torch.as_tensor(list(keep_ids), dtype=x.dtype, device=dev))
        extra["baseline"] = torch.where(mask.bool() & ~keep, torch.full_like(x, bid), x)
    if "position" in params:
        extra["position"] = -1
    if batch_steps:
        res = attribute(model, x, b["target"].to(dev), method, attention_mask=mask, **extra, **kw)
        scores, cost, meta = res.scores, res.cost, res.meta
    else:
        rows, cost = [], Cost()
        for j in range(x.shape[0]):
            ex = {k: (v[j : j + 1] if isinstance(v, torch.Tensor) else v) for k, v in extra.items()}
            r = attribute(model, x[j : j + 1], b["target"][j : j + 1].to(dev), method, attention_mask=mask[j : j + 1],
                          **ex, **kw)  # fmt: skip
            rows.append(r.scores)
            cost = Cost(cost.forward + r.cost.forward, cost.backward + r.cost.backward, cost.wall_s + r.cost.wall_s)
        scores, meta = torch.cat(rows), {}
    meta = {k: v for k, v in meta.items() if k != "baseline_ids"}
    lens = b["attention_mask"].sum(1).tolist()
    labels = None if tokens is None else [tokens[:n] for n in lens]
    return Attribution(
        scores=scores.cpu(),
        kind="tokens",
        method=method,
        target=b["target"],
        cost=cost,
        labels=labels,
        mask=b["attention_mask"].bool(),
        meta={**meta, "prompt_len": prompt_len, "steps": tokens[prompt_len:] if tokens else None},
    )


def attribute_generation(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    method: str = "input_x_gradient",
    *,
    max_new_tokens: int = 8,
    continuation: str | None = None,
    baseline: str | int | None = None,
    batch_steps: bool = True,
    **kw: Any,
) -> Attribution:
    """Generate (greedily, or take ``continuation``) after ``prompt`` and attribute each new token.

    The prompt is tokenized as :func:`~xattr_nb.attribution.text.encode_texts` does (special
    tokens included, nothing truncated); the continuation is tokenized without special tokens.
    ``baseline``: ``"pad"``, ``"mask"`` or a token id, for the methods that take one; special
    tokens keep their ids. Returns :func:`attribute_steps`' stacked :class:`Attribution`.
    """
    enc = encode_texts(model, tokenizer, check_text(prompt, "prompt"))
    ids = enc["input_ids"][0]
    specials = ids[enc["special"][0]].tolist()
    if continuation is None:
        full = greedy_continue(model, ids.to(device_of(model)), max_new_tokens, eos_id=tokenizer.eos_token_id)
    else:
        if not isinstance(continuation, str) or not continuation.strip():
            raise InputError("`continuation` must be a non-empty string (or None to generate)")
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        full = torch.cat([ids, torch.as_tensor(cont, dtype=ids.dtype)])
    bid = None
    if baseline is not None:
        if isinstance(baseline, str):
            attr = {"pad": "pad_token_id", "mask": "mask_token_id"}.get(baseline)
            if attr is None or getattr(tokenizer, attr, None) is None:
                raise InputError(
                    f"`baseline` must be 'pad', 'mask' (present in the tokenizer) or a token id; got {baseline!r}"
                )
            bid = int(getattr(tokenizer, attr))
        else:
            bid = check_int(baseline, "baseline", low=0)
    tokens = tokenizer.convert_ids_to_tokens(full.tolist())
    return attribute_steps(
        model, full, ids.shape[0], method, tokens=tokens, keep_ids=specials, baseline=bid, batch_steps=batch_steps,
        **kw,
    )  # fmt: skip
