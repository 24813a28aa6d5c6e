"""Activation steering: add a vector to the residual stream, generate under it, sweep its strength.

- :func:`add_vector`: within a ``with``, the residual stream at a site gets ``+ alpha * vec`` at the
  chosen positions (all of them, the generated ones only, or a list). Built on
  :func:`xattr_nb.interventions.hooks.hooks`, so the hook is removed on exit, also when the body raises.
- :func:`steer_generate`: greedy continuation of a prompt under the steering hook.
- :func:`perplexity`: next-token perplexity of texts (padding ignored), the usual fluency check.
- :func:`sweep_alpha`: a score and the perplexity for each steering strength, as a ``DataFrame``.

Sites. An ``int`` ``l`` (or ``"resid_post.{l}"``) is the residual stream *after* block ``l`` (HF GPT-2:
``transformer.h[l]``'s output); ``"resid_pre.{l}"`` is the stream entering block ``l`` (so
``"resid_pre.0"`` is the embeddings output), edited by a forward pre-hook. Blocks are found with
:func:`~xattr_nb.interventions.hooks.block_names`, so GPT-2, BERT and models keeping their blocks in
``blocks`` / ``layers`` all work.

TransformerLens (hook points) and nnsight (``.output[0][:] += v``) do the same on their own model
wrappers; written by hand here on plain ``register_forward_hook`` so that steering runs on unwrapped
HF models and our tiny models with the same leak-free guarantee as the rest of ``interventions``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.interventions.hooks import block_names, hooks
from xattr_nb.models.io import device_of, eval_mode, logits_of
from xattr_nb.models.text import check_position_limit

__all__ = ["add_vector", "perplexity", "resolve_site", "steer_generate", "sweep_alpha"]

_SITE = re.compile(r"^(resid_pre|resid_post)\.(\d+)$")


def resolve_site(model: nn.Module, layer: int | str) -> tuple[str, str]:
    """``(module name, hook kind)`` of a steering site: ``(block, "forward")`` for the stream after a block,
    ``(block, "pre")`` for the stream entering it. ``layer``: an int ``l`` (after block ``l``; negative
    counts from the last block), ``"resid_post.{l}"`` or ``"resid_pre.{l}"``."""
    blocks = block_names(model)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer, str)):
        raise InputError(
            f"`layer` must be a block index or a site 'resid_post.{{l}}' / 'resid_pre.{{l}}'; got {layer!r}"
        )
    if isinstance(layer, str):
        m = _SITE.match(layer)
        if m is None:
            raise InputError(f"`layer` site must look like 'resid_post.3' or 'resid_pre.0'; got {layer!r}")
        kind, idx = m.group(1), int(m.group(2))
    else:
        kind, idx = "resid_post", int(layer)
        if idx < 0:
            idx += len(blocks)
    if not 0 <= idx < len(blocks):
        raise InputError(
            f"`layer` {layer!r} is out of range: the model has {len(blocks)} blocks (0..{len(blocks) - 1})"
        )
    return blocks[idx], "forward" if kind == "resid_post" else "pre"


def _check_positions(positions: Any) -> str | list[int]:
    if isinstance(positions, str):
        if positions not in ("all", "new"):
            raise InputError(f"`positions` must be 'all', 'new' or a list of ints; got {positions!r}")
        return positions
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if not isinstance(positions, Sequence) or len(positions) == 0:
        raise InputError(f"`positions` must be 'all', 'new' or a non-empty list of ints; got {positions!r}")
    return [check_int(p, f"positions[{i}]") for i, p in enumerate(positions)]


def _position_mask(positions: str | list[int], t: int, state: dict[str, int]) -> torch.Tensor | None:
    """Which of the ``t`` positions of this forward to edit (``None``: all of them)."""
    if positions == "all":
        return None
    if positions == "new":
        # The first forward inside the `with` is the prompt; afterwards a forward of one token is a
        # cached decoding step (all new) and a longer one is an uncached re-run of prompt + continuation.
        if "prompt_len" not in state:
            state["prompt_len"] = t
            return torch.zeros(t, dtype=torch.bool)
        mask = torch.zeros(t, dtype=torch.bool)
        mask[0 if t == 1 else min(state["prompt_len"], t) :] = True
        return mask
    mask = torch.zeros(t, dtype=torch.bool)
    for p in positions:
        if not -t <= p < t:
            raise InputError(f"`positions` holds {p}, outside the {t} positions of this forward")
        mask[p] = True
    return mask


@contextmanager
def add_vector(
    model: nn.Module,
    layer: int | str,
    vec: torch.Tensor,
    alpha: float = 1.0,
    positions: str | Sequence[int] = "all",
) -> Iterator[nn.Module]:
    """Within the ``with``, the residual stream at ``layer`` becomes ``h + alpha * vec`` at ``positions``.

    - ``layer``: see :func:`resolve_site` (an int is the stream after that block).
    - ``vec``: ``[D]``, the model's hidden size (checked at the first forward); moved to the
      activation's device and dtype. Subtracting a direction is ``alpha < 0``.
    - ``positions``: ``"all"`` (every position of every forward), ``"new"`` (only tokens after the
      prompt: the first forward inside the ``with`` is taken as the prompt, so use one ``with`` per
      generation) or a list of positions of each forward (negative counts from the end).

    Yields the hooked module. The hook is removed on exit, also when the body raises.
    """
    name, kind = resolve_site(model, layer)
    vec = check_tensor(vec, "vec", ndim=1, dtype="float", layout="[D]")
    alpha = check_float(alpha, "alpha")
    pos = _check_positions(positions)
    state: dict[str, int] = {}

    def steer(h: torch.Tensor) -> torch.Tensor:
        if not isinstance(h, torch.Tensor) or h.ndim != 3:
            raise InputError(f"site {layer!r} ({name}) must carry a [B, T, D] tensor; got {type(h).__name__}")
        if h.shape[-1] != vec.shape[0]:
            raise InputError(f"`vec` has {vec.shape[0]} entries but the residual stream at {name} has {h.shape[-1]}")
        delta = alpha * vec.to(device=h.device, dtype=h.dtype)
        mask = _position_mask(pos, h.shape[1], state)
        if mask is None:
            return h + delta
        return h + mask.to(h.device)[None, :, None].to(h.dtype) * delta

    if kind == "forward":

        def hook(_m: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return steer(output)
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                return (steer(output[0]), *output[1:])
            raise InputError(f"block {name} returned {type(output).__name__}; expected a tensor or a tuple")

    else:

        def hook(_m: nn.Module, args: Any) -> Any:
            if not args or not isinstance(args[0], torch.Tensor):
                raise InputError(f"block {name} receives its hidden states by keyword; steer 'resid_post' instead")
            return (steer(args[0]), *args[1:])

    with hooks(model, {name: hook}, kind=kind):
        yield dict(model.named_modules())[name]


@torch.no_grad()
def steer_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int | str,
    vec: torch.Tensor,
    alpha: float,
    max_new_tokens: int = 20,
    *,
    positions: str | Sequence[int] = "all",
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Greedy continuation ``[B, T + G]`` of the prompts ``input_ids`` ``[B, T]`` under :func:`add_vector`.

    Every step re-runs the whole sequence (no KV cache), so ``positions="all"`` steers the prompt
    and the continuation alike and ``"new"`` only the generated tokens; this is quadratic in
    length, fine for the 20-token continuations of the paper. Prompts in a batch share one length
    (no padding). A row that emitted ``eos_token_id`` keeps emitting it. ``alpha=0`` is the
    unsteered greedy continuation.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=1)
    check_position_limit(model, ids.shape[1], max_new_tokens)
    if eos_token_id is not None:
        eos_token_id = check_int(eos_token_id, "eos_token_id", low=0)
    out = ids.to(device_of(model))
    done = torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)
    with eval_mode(model), add_vector(model, layer, vec, alpha, positions):
        for _ in range(max_new_tokens):
            nxt = logits_of(model(input_ids=out), ndim=3)[:, -1].argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            out = torch.cat([out, nxt[:, None]], dim=1)
    return out.cpu()


@torch.no_grad()
def perplexity(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, batch_size: int = 256
) -> float:
    """``exp`` of the mean next-token cross-entropy over all real (unmasked) target tokens of ``input_ids``.

    Whatever hooks are active (e.g. an :func:`add_vector`) act on these forwards, so calling this
    inside a steering ``with`` measures the fluency cost of the steering.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[N, T]")
    if ids.shape[1] < 2:
        raise InputError(f"`input_ids` needs at least 2 tokens per row to score a next token; got {ids.shape[1]}")
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask
    mask = check_tensor(mask, "attention_mask", shape=tuple(ids.shape), layout="[N, T]").bool()
    batch_size = check_int(batch_size, "batch_size", low=1)
    dev = device_of(model)
    nll, n = 0.0, 0
    for s in range(0, ids.shape[0], batch_size):
        x, m = ids[s : s + batch_size].to(dev), mask[s : s + batch_size].to(dev)
        logits = logits_of(model(input_ids=x, attention_mask=m.long()), ndim=3).float()
        tgt_mask = m[:, 1:] & m[:, :-1]
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
        nll -= float(lp[tgt_mask].sum())
        n += int(tgt_mask.sum())
    if n == 0:
        raise InputError("`attention_mask` leaves no next token to score")
    return math.exp(nll / n)


def sweep_alpha(
    model: nn.Module,
    layer: int | str,
    vec: torch.Tensor,
    alphas: Sequence[float],
    score_fn: Callable[[nn.Module], float | Mapping[str, float]],
    *,
    ppl_ids: torch.Tensor | None = None,
    ppl_mask: torch.Tensor | None = None,
    positions: str | Sequence[int] = "all",
) -> pd.DataFrame:
    """For each ``alpha``: ``score_fn(model)`` and (with ``ppl_ids``) :func:`perplexity`, both under
    ``add_vector(model, layer, vec, alpha, positions)``.

    ``score_fn`` returns a number (column ``score``) or a dict of numbers (one column each).
    Returns a ``DataFrame`` with columns ``alpha``, the scores and ``ppl`` (if asked), one row per alpha.
    """
    if (
        isinstance(alphas, (str, bytes))
        or not isinstance(alphas, (Sequence, np.ndarray, torch.Tensor))
        or (isinstance(alphas, (np.ndarray, torch.Tensor)) and alphas.ndim != 1)
    ):
        raise InputError(f"`alphas` must be a non-empty list of numbers; got {alphas!r}")
    alphas = [check_float(a, f"alphas[{i}]") for i, a in enumerate(list(alphas))]
    if not alphas:
        raise InputError("`alphas` must be a non-empty list of numbers")
    if not callable(score_fn):
        raise InputError(f"`score_fn` must be a function model -> float or dict; got {type(score_fn).__name__}")
    rows = []
    for a in alphas:
        with add_vector(model, layer, vec, a, positions):
            score = score_fn(model)
            row: dict[str, float] = {"alpha": a}
            if isinstance(score, Mapping):
                row.update({str(k): float(v) for k, v in score.items()})
            elif isinstance(score, (int, float, np.floating, np.integer)) and not isinstance(score, bool):
                row["score"] = float(score)
            else:
                raise InputError(f"`score_fn` must return a number or a dict of numbers; got {type(score).__name__}")
            if ppl_ids is not None:
                row["ppl"] = perplexity(model, ppl_ids, ppl_mask)
        rows.append(row)
    return pd.DataFrame(rows)
