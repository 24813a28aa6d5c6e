"""RelP: faithful and efficient circuit discovery via relevance patching (Jafari et al., 2025).

Attribution patching (AtP) estimates the effect of patching every component with one backward
pass, ``(a_clean - a_corr) . dm/da``, but its local gradients mislead in deep non-linear networks.
RelP keeps the recipe and the cost (2 forwards + 1 backward) and swaps the gradients for LRP
propagation coefficients: the same product taken inside
:func:`~xattr_nb.interventions.lrp.lrp_mode` (LN-rule, Identity-rule, Half-rule; the AH-rule as
an option). Ground truth is activation patching (AP), one forward per component; IG-patching is the
costly path-integral baseline. The library pieces live in :mod:`xattr_nb.interventions.patching`
and :mod:`xattr_nb.interventions.lrp`; this module holds the IOI study.

Steps (the notebook calls them in order):

- :func:`ioi_pairs`: disjoint batches of clean/corrupted IOI prompts (IO and S swapped) on
  held-out name pairs, one template length so positions align, each a
  :class:`~xattr_nb.interventions.ContrastPairs`; :func:`encode_pairs` tokenises any
  :class:`~xattr_nb.worlds.text.IOIData` with any HF tokenizer (GPT-2 at full scale).
- The model comes from :func:`xattr_nb.models.load_lm` (``small="ioi_gpt2_4l"``, the shipped
  4-layer checkpoint; ``full="gpt2"`` and its larger siblings at full scale).
- :func:`make_metric`: the normalised logit difference (0 = corrupted, 1 = clean).
- :func:`run_methods`: AP, AtP, RelP, RelP+AH and IG-patching on one batch, and the trivial control
  ``"ActDiff"`` (:func:`activation_change`: the size of the activation change, no gradient at all), which says
  what a Pearson correlation with activation patching is worth before any estimator reads the model.
- :func:`correlations`, :func:`cost_table`: evaluation (the bootstrap of the RelP - AtP gap is
  :func:`xattr_nb.metrics.bootstrap_delta` on the per-prompt scores; figures come from
  :mod:`xattr_nb.plots`: ``layer_position_grid``, ``estimate_scatter``, ``comparison_bars``).
- :func:`explain`: the whole comparison over several batches (median Pearson per site kind).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_int
from xattr_nb.interventions.lrp import LRP_RULES
from xattr_nb.interventions.pairs import ContrastPairs
from xattr_nb.interventions.patching import (
    NormalizedLogitDiff,
    PatchingResult,
    _as_heads,
    _check_kinds,
    _check_pair,
    _check_positions,
    _finish,
    _keys,
    _run_cache,
    activation_patching,
    attribution_patching,
    compare,
    component_sites,
    ig_patching,
    normalized_logit_diff,
)
from xattr_nb.models.io import check_model, device_of, logits_of
from xattr_nb.runtime import Cost
from xattr_nb.worlds.text import IOI_NAMES, IOIData

__all__ = [
    "CONTROLS",
    "HEAD_SITES",
    "METHODS",
    "RESIDUAL_SITES",
    "activation_change",
    "correlations",
    "cost_table",
    "encode_pairs",
    "explain",
    "ioi_pairs",
    "make_metric",
    "prompt_accuracy",
    "run_methods",
]

METHODS: tuple[str, ...] = ("AP", "AtP", "RelP", "RelP+AH", "IG")
CONTROLS: tuple[str, ...] = ("ActDiff",)  # trivial estimators: what a score is worth without the model's gradients
RESIDUAL_SITES: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out")
HEAD_SITES: tuple[str, ...] = ("head", "mlp_out")  # at the final position: the circuit's components


def _one_token(tokenizer: Any, word: str) -> int:
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"name {word!r} is {len(ids)} tokens for this tokenizer; IOI needs single-token names")
    return int(ids[0])


def encode_pairs(tokenizer: Any, data: IOIData, *, prefix: str = "[BOS] ", capitalize: bool = False) -> ContrastPairs:
    """Tokenise the clean and corrupted prompts of ``data`` (``prefix`` + text) with an HF tokenizer,
    as :class:`~xattr_nb.interventions.ContrastPairs`: ``answer`` the indirect object (IO), ``wrong``
    the subject (S), ``tokens`` one label per position (names shown by role: ``name``, ``S2``; ``*``
    where the batch varies), ``texts`` the clean prompts; no masks (one length, no padding).

    ``capitalize=True`` writes the names capitalised (" Mary"), what GPT-2's BPE has as single
    tokens. Prompts whose clean and corrupted token counts differ, or whose count differs from
    the batch's most common one, are dropped (patching aligns positions); an error names how many.
    """
    if not isinstance(data, IOIData) or len(data) == 0:
        raise InputError(f"`data` must be a non-empty IOIData from xattr_nb.worlds.text.ioi; got {type(data).__name__}")
    if not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise InputError(f"`tokenizer` must be a Hugging Face tokenizer; got {type(tokenizer).__name__}")
    names = set(IOI_NAMES)

    def show(text: str) -> str:
        return " ".join(w.capitalize() if capitalize and w in names else w for w in text.split(" "))

    enc = [
        (tokenizer(prefix + show(c), add_special_tokens=False)["input_ids"],
         tokenizer(prefix + show(r), add_special_tokens=False)["input_ids"])
        for c, r in zip(data.texts, data.corrupted_texts, strict=True)
    ]  # fmt: skip
    lengths = [len(c) for c, r in enc if len(c) == len(r)]
    if not lengths:
        raise InputError("no prompt has as many tokens clean as corrupted: the names are not single tokens")
    t = max(set(lengths), key=lengths.count)
    keep = [i for i, (c, r) in enumerate(enc) if len(c) == len(r) == t]
    clean = torch.as_tensor([enc[i][0] for i in keep])
    corr = torch.as_tensor([enc[i][1] for i in keep])
    shown = [show(n) for n in data.answers], [show(n) for n in data.wrong]
    answer = torch.as_tensor([_one_token(tokenizer, shown[0][i]) for i in keep])
    wrong = torch.as_tensor([_one_token(tokenizer, shown[1][i]) for i in keep])
    tokens = []
    for j in range(t):
        col = clean[:, j]
        if bool((col == col[0]).all()):
            tokens.append(tokenizer.convert_ids_to_tokens(int(col[0])).lstrip("Ġ"))
        elif bool(((col == answer) | (col == wrong)).all()):
            is_s = bool((col == wrong).all())
            tokens.append("S2" if is_s else "name")
        else:
            tokens.append("*")
    return ContrastPairs(clean, corr, answer, wrong, tokens=tokens, texts=[data.texts[i] for i in keep])


def ioi_pairs(
    n: int,
    *,
    n_batches: int = 1,
    seed: int = 0,
    held_out: bool = True,
    n_words: int = 14,
    tokenizer: Any = None,
    capitalize: bool = False,
    prefix: str = "[BOS] ",
) -> list[ContrastPairs]:
    """``n_batches`` disjoint batches of ``n`` distinct IOI prompt pairs of ``n_words`` words, IO and
    S swapped in the corrupted prompt, on held-out (``held_out=True``) or training name pairs of
    ``ioi_gpt2_4l``. ``tokenizer`` defaults to the IOI world's word-level tokenizer."""
    from xattr_nb.models.lm_recipes import ioi_pair_items, ioi_tokenizer

    n = check_int(n, "n", low=2)
    n_batches = check_int(n_batches, "n_batches", low=1)
    n_words = check_int(n_words, "n_words", low=3)
    tokenizer = ioi_tokenizer() if tokenizer is None else tokenizer
    need, pool, seen, draw = n * n_batches, [], set(), 0
    while len(pool) < need:
        if draw >= 20:
            raise InputError(f"could not draw {need} distinct prompts of {n_words} words (got {len(pool)})")
        data = ioi_pair_items(4 * need, seed=seed * 1000 + draw, held_out=held_out)
        for i in range(len(data)):
            if len(data.words[i]) == n_words and data.texts[i] not in seen and len(pool) < need:
                seen.add(data.texts[i])
                pool.append((data, i))
        draw += 1
    out = []
    for b in range(n_batches):
        part = pool[b * n : (b + 1) * n]
        rows = [d.subset(torch.as_tensor([i])) for d, i in part]
        merged = IOIData(
            **{f: _concat([getattr(r, f) for r in rows]) for f in IOIData._items}, vocab=rows[0].vocab
        )  # fmt: skip
        pairs = encode_pairs(tokenizer, merged, prefix=prefix, capitalize=capitalize)
        if len(pairs) != n:
            raise InputError(f"{n - len(pairs)} prompts of batch {b} tokenised to another length; use a fixed template")
        out.append(pairs)
    return out


def _concat(values: list[Any]) -> Any:
    return torch.cat(values) if isinstance(values[0], torch.Tensor) else [x for v in values for x in v]


@torch.no_grad()
def prompt_accuracy(model: nn.Module, pairs: ContrastPairs) -> float:
    """Share of clean prompts whose top next-token logit is the indirect object."""
    logits = logits_of(model(input_ids=pairs.clean_ids.to(device_of(model))), ndim=3)[:, -1]
    return float((logits.argmax(-1).cpu() == pairs.answer).float().mean())


def make_metric(model: nn.Module, pairs: ContrastPairs) -> NormalizedLogitDiff:
    """The RelP demo's metric on this batch: ``(LD - LD_corr) / (LD_clean - LD_corr)`` at the last
    position, ``LD = logit(IO) - logit(S)``, constants from plain forwards."""
    return normalized_logit_diff(model, pairs.clean_ids, pairs.corr_ids, pairs.answer, pairs.wrong)


@torch.no_grad()
def activation_change(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    *,
    sites: Sequence[str] = RESIDUAL_SITES,
    positions: Sequence[int] | None = None,
    per_example: bool = False,
) -> PatchingResult:
    """The trivial control ``"ActDiff"``: each component's score is ``||a_clean - a_corr||_2`` over its hidden
    dims (a head's slice for ``"head"``), per prompt, batch mean in ``scores``. No metric and no gradient: it
    says only *where* the clean and corrupted runs differ, never in which direction that moves the answer
    (scores are >= 0). Cost: 2 forwards a prompt. An estimator that does not beat it on a correlation with
    activation patching has shown nothing the activations alone do not show."""
    clean, corr, mask = _check_pair(clean_ids, corr_ids, None)
    kinds, st = _check_kinds(sites), component_sites(model)
    pos = _check_positions(positions, clean.shape[1])
    if not isinstance(per_example, bool):
        raise InputError(f"`per_example` must be a bool; got {type(per_example).__name__}")
    dev = device_of(model)
    t0 = time.perf_counter()
    keys = _keys(st, kinds)
    _, a_clean = _run_cache(model, clean.to(dev), st, keys, mask, grad=False)
    _, a_corr = _run_cache(model, corr.to(dev), st, keys, mask, grad=False)
    parts = []
    for key in keys:
        diff = a_clean[key] - a_corr[key]
        norm = _as_heads(diff, st).norm(dim=-1) if key[0] == "head" else diff.norm(dim=-1)
        parts.append(norm[:, pos].cpu())
    scores, examples = _finish(kinds, keys, parts, per_example)
    cost = Cost(2 * clean.shape[0], 0, time.perf_counter() - t0)
    return PatchingResult("ActDiff", scores, pos, cost, {"control": True}, examples, clean.shape[0])


def run_methods(
    model: nn.Module,
    pairs: ContrastPairs,
    *,
    sites: Sequence[str] = RESIDUAL_SITES,
    positions: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    ig_steps: int = 8,
    rules: Sequence[str] = LRP_RULES,
    per_example: bool = False,
    metric: NormalizedLogitDiff | None = None,
) -> dict[str, PatchingResult]:
    """Every estimator of ``methods`` on one batch: ``{"AP": ..., "AtP": ..., "RelP": ...,
    "RelP+AH": ..., "IG": ...}`` (each a :class:`PatchingResult` with its cost); ``methods`` may also name
    the control ``"ActDiff"`` (:func:`activation_change`)."""
    if not isinstance(pairs, ContrastPairs):
        raise InputError(f"`pairs` must be ContrastPairs from ioi_pairs(); got {type(pairs).__name__}")
    if isinstance(methods, str) or not methods:
        raise InputError(f"`methods` must be a non-empty list drawn from {list(METHODS + CONTROLS)}")
    for i, m in enumerate(methods):
        check_choice(m, METHODS + CONTROLS, f"methods[{i}]")
    metric = make_metric(model, pairs) if metric is None else metric
    args = (model, pairs.clean_ids, pairs.corr_ids, metric)
    kw = {"sites": sites, "positions": positions, "per_example": per_example}
    out: dict[str, PatchingResult] = {}
    for m in methods:
        if m == "AP":
            out[m] = activation_patching(*args, **kw)
        elif m == "AtP":
            out[m] = attribution_patching(*args, **kw)
        elif m in ("RelP", "RelP+AH"):
            out[m] = attribution_patching(*args, mode="relp", rules=rules, ah=m == "RelP+AH", **kw)
        elif m == "ActDiff":
            out[m] = activation_change(model, pairs.clean_ids, pairs.corr_ids, **kw)
        else:
            out[m] = ig_patching(*args, steps=ig_steps, **kw)
    return out


def correlations(
    results: Mapping[str, PatchingResult], *, truth: str = "AP", k: int = 10, sites: Sequence[str] | None = None
) -> pd.DataFrame:
    """Agreement of every estimator with ``truth`` per site kind (``sites``, default all): rows ``[method,
    site, pearson, spearman, jaccard]`` (top-``k`` Jaccard by ``|score|``, ``k`` capped at the number of
    components)."""
    if not isinstance(results, Mapping) or truth not in results:
        raise InputError(f"`results` must be a dict of PatchingResult that holds the ground truth {truth!r}")
    ref = results[truth]
    rows = []
    for name, res in results.items():
        if name == truth:
            continue
        for kind in ref.kinds if sites is None else sites:
            t = ref[kind].reshape(-1)
            c = compare(res[kind], t, min(k, t.numel()))
            rows.append({"method": name, "site": kind, **c})
    return pd.DataFrame(rows)


def cost_table(results: Mapping[str, PatchingResult] | Sequence[Mapping[str, PatchingResult]]) -> pd.DataFrame:
    """Forward and backward passes (per prompt) and wall seconds per method, summed over result sets."""
    sets = [results] if isinstance(results, Mapping) else list(results)
    rows: dict[str, dict[str, float]] = {}
    for rs in sets:
        for name, r in rs.items():
            row = rows.setdefault(name, {"method": name, "forward": 0, "backward": 0, "seconds": 0.0})
            row["forward"] += r.cost.forward / r.n_examples  # costs are totals over the batch
            row["backward"] += r.cost.backward / r.n_examples
            row["seconds"] += r.cost.wall_s
    return pd.DataFrame(list(rows.values())).round({"seconds": 3})


def explain(
    model: nn.Module,
    batches: Sequence[ContrastPairs],
    *,
    methods: Sequence[str] = METHODS,
    ig_steps: int = 8,
    k: int = 10,
    precomputed: Sequence[Mapping[str, Mapping[str, PatchingResult]]] = (),
    show_progress: bool = True,
) -> dict[str, Any]:
    """The entry point: the whole comparison of ``methods`` with activation patching on ``batches``.

    Per batch, residual-stream sites at every position (``"residual"``) and heads and MLPs at the
    final position (``"heads"``); ``precomputed`` holds such result dicts for the first batches
    (e.g. from the step-by-step cells), which are then not run again. Returns ``{"per_batch":
    DataFrame (batch, method, site, pearson, spearman, jaccard), "median": DataFrame (median over
    batches per method and site), "cost": DataFrame (per prompt), "results": [{"residual": {...},
    "heads": {...}} per batch]}``; each result converts to ``Attribution(kind="components")`` with
    ``to_attribution()``."""
    from xattr_nb.runtime import progress

    if (
        isinstance(batches, (ContrastPairs, str))
        or not isinstance(batches, Sequence)
        or not batches
        or not all(isinstance(b, ContrastPairs) for b in batches)
    ):
        raise InputError("`batches` must be a non-empty list of ContrastPairs (see ioi_pairs(..., n_batches=3))")
    check_model(model)
    frames, results = [], []
    if len(precomputed) > len(batches):
        raise InputError(f"`precomputed` has {len(precomputed)} entries for {len(batches)} batches")
    for i, pairs in enumerate(progress(batches, desc="batches", disable=not show_progress)):
        if i < len(precomputed):
            res = dict(precomputed[i])
            if set(res) != {"residual", "heads"}:
                raise InputError(f"`precomputed[{i}]` must be {{'residual': ..., 'heads': ...}}; got {list(res)}")
        else:
            metric = make_metric(model, pairs)
            res = {
                "residual": run_methods(model, pairs, methods=methods, ig_steps=ig_steps, metric=metric),
                "heads": run_methods(model, pairs, sites=HEAD_SITES, positions=[-1], methods=methods,
                                     ig_steps=ig_steps, metric=metric),
            }  # fmt: skip
        results.append(res)
        frames.append(correlations(res["residual"], k=k, sites=RESIDUAL_SITES).assign(batch=i))
        frames.append(correlations(res["heads"], k=k, sites=("head",)).assign(batch=i))
    per_batch = pd.concat(frames, ignore_index=True)
    median = per_batch.groupby(["method", "site"], sort=False)[["pearson", "spearman", "jaccard"]].median()
    cost = cost_table([r[g] for r in results for g in r])
    return {"per_batch": per_batch, "median": median.reset_index(), "cost": cost, "results": results}
