"""Activation steering for bias mitigation: probe the layers, build a steering vector, subtract it.

Dubey, "Activation Steering for Bias Mitigation: An Interpretable Approach to Safer LLMs" (2025,
arXiv:2508.09019; no public code). On gpt2-large the paper (1) labels 140 statements biased or
neutral, (2) fits a linear probe on the residual stream of every layer, (3) takes the difference of
the mean activations of biased and neutral statements at a late layer as a steering vector and
(4) subtracts it during generation, showing qualitatively that completions become less stereotyped.

Here the same pipeline runs on a tiny GPT-2 trained on :mod:`xattr_nb.worlds.bias`, whose bias is
planted and measurable (after a biased cue, ~90 % of the next-word mass is on derogatory
adjectives), so the toolkit can put numbers on it (spec 12, section 7.5, reconstructed):

1. :func:`statement_states` -> :func:`probe_curve` (a CV probe per layer, held-out adjectives) ->
   :func:`select_layer` (the earliest layer within 0.01 AUC of the best);
2. :func:`paper_vector` (biased minus neutral mean-pooled statements, the paper's vector) and
   :func:`decision_vector` (biased-cue minus neutral-cue prompts at the last prompt token);
3. :func:`sweep` subtracts ``alpha * (mean residual norm / ||v||) * v`` at every position for a grid
   of ``alpha`` on *validation* prompts, :func:`choose_alpha` picks the strongest one within a
   perplexity budget, and :func:`evaluate` measures it on *test* prompts against the controls
   (:func:`random_vectors` of equal norm, :func:`probe_vector`, no steering).

:func:`explain` chains it all; :func:`next_word_distribution` and :func:`plot_continuations` show where the
steered next-word mass goes. Models come from :func:`xattr_nb.models.load_lm` (``small="bias_gpt2"``, the
zoo's tiny GPT-2; ``full="gpt2-large"``, the paper's). The hooks, steered generation and perplexity are
the shared :mod:`xattr_nb.interventions.steering`; probes are :mod:`xattr_nb.interventions.probes` (sklearn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor, check_texts
from xattr_nb.interventions.probes import diff_of_means, hidden_states, layerwise_probe
from xattr_nb.interventions.steering import add_vector, steer_generate, sweep_alpha
from xattr_nb.models.io import device_of, eval_mode, logits_of
from xattr_nb.worlds.base import check_seed
from xattr_nb.worlds.bias import (
    BIAS_GROUPS,
    DEROGATORY_ADJS,
    NEUTRAL_ADJS,
    OBJECT_ADJS,
    BiasData,
    bias_corpus,
    bias_prompts,
    bias_statements,
)

__all__ = [
    "ALPHAS",
    "CATEGORIES",
    "PAPER_CONFIG",
    "category_mass",
    "choose_setting",
    "decision_vector",
    "encode",
    "evaluate",
    "explain",
    "next_word_distribution",
    "next_word_mass",
    "paper_vector",
    "plot_continuations",
    "plot_sweeps",
    "probe_curve",
    "probe_vector",
    "random_vectors",
    "reduction",
    "resid_norm",
    "select_layer",
    "split_groups",
    "statement_states",
    "steered_examples",
    "sweep",
    "sweep_layers",
    "word_ids",
]

#: The paper's setting [paper]; its layer, positions and alpha are not stated (spec 7.2).
PAPER_CONFIG: dict[str, Any] = {"model": "gpt2-large", "n_statements": 140, "max_new_tokens": 20, "positions": "all"}
#: Relative steering strengths: the subtracted vector has norm ``alpha`` x the mean residual norm (spec 7.5).
ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0, 8.0)


# ----------------------------------------------------------------------------------------------
# Models and text.


def encode(tokenizer: Any, texts: Sequence[str], *, eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``bos text [eos]`` as ids ``[N, T]`` right-padded, and the attention mask ``[N, T]`` (long).

    Works with the world's word tokenizer and with GPT-2's BPE tokenizer alike (their BOS/EOS tokens), as
    :func:`xattr_nb.models.load_lm` returns them at either scale."""
    texts = check_texts(texts, "texts")
    if getattr(tokenizer, "bos_token", None) is None or getattr(tokenizer, "pad_token", None) is None:
        raise InputError("`tokenizer` must be a HF tokenizer with a bos_token and a pad_token")
    full = [f"{tokenizer.bos_token} {t}" + (f" {tokenizer.eos_token}" if eos else "") for t in texts]
    # right padding whatever the tokenizer's default: every reader takes a row's last real token from the mask
    enc = tokenizer(full, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def word_ids(tokenizer: Any, words: Sequence[str]) -> torch.Tensor:
    """The id of each word as the next token after a space (its first token for a BPE tokenizer)."""
    words = check_texts(words, "words")
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    if any(len(i) == 0 for i in ids):
        raise InputError("`tokenizer` maps some word to no token")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and any(i[0] == unk for i in ids):
        raise InputError(f"`tokenizer` does not know some of {list(words)} (they map to the unknown token)")
    return torch.as_tensor([i[0] for i in ids])


@torch.no_grad()
def next_word_mass(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: Any) -> torch.Tensor:
    """Per prompt ``[N]``: the next-token probability summed over ``ids``, read at each row's last real token."""
    x = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[N, T]")
    m = check_tensor(attention_mask, "attention_mask", shape=tuple(x.shape), layout="[N, T]")
    dev = device_of(model)
    logits = logits_of(model(input_ids=x.to(dev), attention_mask=m.long().to(dev)), ndim=3)
    last = m.long().sum(1) - 1
    probs = logits[torch.arange(x.shape[0]), last.to(dev)].float().softmax(-1)
    return probs[:, torch.as_tensor(ids).to(dev)].sum(-1).cpu()


# ----------------------------------------------------------------------------------------------
# Step 1: probes.


def statement_states(model: nn.Module, tokenizer: Any, statements: BiasData | Sequence[str]) -> dict[int, torch.Tensor]:
    """Mean-pooled residual stream after every block, ``{layer: [N, D]}``, over each statement's tokens
    (BOS excluded: it is the same for every statement)."""
    texts = statements.texts if isinstance(statements, BiasData) else statements
    ids, mask = encode(tokenizer, texts)
    exclude = torch.zeros_like(ids, dtype=torch.bool)
    exclude[:, 0] = True
    return hidden_states(model, ids, mask, pool="mean", exclude_mask=exclude)


def probe_curve(acts: Mapping[int, torch.Tensor], statements: BiasData, *, cv: int = 5, seed: int = 0) -> pd.DataFrame:
    """Cross-validated probe AUC per layer (biased = derogatory adjective). Folds hold out whole
    adjectives, so a probe must recognise derogation in words it never saw rather than memorise the
    adjectives (the spec's held-out template split): the ``i``-th derogatory, neutral and object
    adjectives form group ``i``, so every test fold holds both classes."""
    if not isinstance(statements, BiasData):
        raise InputError(f"`statements` must be BiasData from bias_statements(); got {type(statements).__name__}")
    y = statements.derogatory.long().numpy()
    slot = {w: i for pool in (DEROGATORY_ADJS, NEUTRAL_ADJS, OBJECT_ADJS) for i, w in enumerate(pool)}
    groups = np.asarray([slot[a] for a in statements.adjective])
    return layerwise_probe(dict(acts), y, cv=cv, seed=seed, groups=groups)


def select_layer(curve: pd.DataFrame, *, tol: float = 0.01) -> int:
    """The earliest layer whose AUC is within ``tol`` of the best layer's (spec 7.2)."""
    if not isinstance(curve, pd.DataFrame) or not {"layer", "auc"} <= set(curve.columns) or curve.empty:
        raise InputError("`curve` must be the DataFrame of probe_curve() (columns layer, auc)")
    tol = check_float(tol, "tol", low=0.0)
    if curve["auc"].isna().all():
        raise InputError("`curve` has no finite AUC (every fold held one class): use more statements or fewer folds")
    ok = curve[curve["auc"] >= curve["auc"].max() - tol]
    return int(ok["layer"].min())


# ----------------------------------------------------------------------------------------------
# Step 2: vectors.


def paper_vector(acts_layer: torch.Tensor, statements: BiasData) -> torch.Tensor:
    """The paper's vector: mean(biased statements) - mean(neutral statements) at one layer ``[D]``."""
    return diff_of_means(acts_layer, statements.derogatory.long())


@torch.no_grad()
def decision_vector(model: nn.Module, tokenizer: Any, layer: int, groups: Sequence[str]) -> torch.Tensor:
    """Decision-position variant: at the last prompt token ("... people are"), mean over biased-cue
    prompts minus mean over neutral-cue prompts of ``groups`` (``[D]``); it isolates what the cue
    writes where the adjective is chosen, not the adjectives' own content."""
    prompts = [bias_prompts(kind, groups=groups).texts for kind in ("biased", "neutral")]
    ids, mask = encode(tokenizer, prompts[0] + prompts[1], eos=False)
    h = hidden_states(model, ids, mask, layers=[layer], pool="last")[layer]
    y = torch.as_tensor([1] * len(prompts[0]) + [0] * len(prompts[1]))
    return diff_of_means(h, y)


def probe_vector(acts_layer: torch.Tensor, statements: BiasData, norm: float, *, C: float = 1.0) -> torch.Tensor:
    """Control: the logistic-regression probe's weight direction in the raw residual space (the
    standardised probe's weights divided by the feature scales), scaled to norm ``norm``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = check_tensor(acts_layer, "acts_layer", ndim=2, dtype="float", layout="[N, D]").double().numpy()
    norm = check_float(norm, "norm", low=0.0)
    y = statements.derogatory.long().numpy()
    scaler = StandardScaler().fit(x)
    w = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x), y).coef_[0] / scaler.scale_
    w = torch.as_tensor(w, dtype=torch.float32)
    return w / w.norm() * norm


def random_vectors(n: int, dim: int, norm: float, *, seed: int = 0) -> torch.Tensor:
    """Control: ``n`` Gaussian directions ``[n, dim]``, each scaled to norm ``norm`` (seeded)."""
    n, dim = check_int(n, "n", low=1), check_int(dim, "dim", low=1)
    norm = check_float(norm, "norm", low=0.0)
    g = torch.Generator().manual_seed(check_seed(seed))
    v = torch.randn(n, dim, generator=g)
    return v / v.norm(dim=1, keepdim=True) * norm


@torch.no_grad()
def resid_norm(model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int) -> float:
    """Mean L2 norm of the residual stream after block ``layer`` over the real tokens of ``texts``
    (BOS excluded): the unit of steering strength, since norms differ per layer (spec 7.8)."""
    ids, mask = encode(tokenizer, texts)
    h = hidden_states(model, ids, mask, layers=[layer], pool=None)[layer]
    keep = mask.bool().clone()
    keep[:, 0] = False
    return float(h.norm(dim=-1)[keep].mean())


# ----------------------------------------------------------------------------------------------
# Step 3: sweep, choose, evaluate.


def reduction(before: float, after: float) -> float:
    """Relative reduction ``(before - after) / before`` (1 = all removed, 0 = unchanged, < 0 = increased)."""
    before, after = check_float(before, "before", low=0.0), check_float(after, "after", low=0.0)
    if before == 0.0:
        raise InputError("`before` is 0: there is nothing to reduce")
    return (before - after) / before


def _masses(model: nn.Module, prompts: tuple[torch.Tensor, torch.Tensor], derog: torch.Tensor, neutral: torch.Tensor):
    return {
        "derogatory": float(next_word_mass(model, *prompts, derog).mean()),
        "neutral": float(next_word_mass(model, *prompts, neutral).mean()),
    }


def split_groups(seed: int, groups: Sequence[str] = BIAS_GROUPS) -> tuple[list[str], list[str]]:
    """Validation and test halves of the groups (seeded permutation): alpha is chosen on the prompts of
    the first half and measured on the second."""
    perm = np.random.default_rng(check_seed(seed)).permutation(len(groups))
    half = len(groups) // 2
    return [groups[i] for i in sorted(perm[:half])], [groups[i] for i in sorted(perm[half:])]


def sweep(
    model: nn.Module,
    tokenizer: Any,
    layer: int,
    vec: torch.Tensor,
    unit: float,
    *,
    groups: Sequence[str],
    ppl_texts: Sequence[str],
    alphas: Sequence[float] = ALPHAS,
    positions: str | Sequence[int] = "all",
) -> pd.DataFrame:
    """Subtract ``alpha * unit * vec / ||vec||`` after block ``layer`` for each ``alpha``; score the biased-cue
    prompts of ``groups`` (mean derogatory and neutral next-word mass) and the perplexity of ``ppl_texts``.

    Returns ``alpha, derogatory, neutral, ppl, reduction, ppl_increase`` (relative to ``alpha = 0``,
    which is always included)."""
    vec = check_tensor(vec, "vec", ndim=1, dtype="float", layout="[D]")
    unit = check_float(unit, "unit", low=0.0)
    if float(vec.norm()) == 0.0:
        raise InputError("`vec` is the zero vector: it has no direction to steer along")
    alphas = sorted({0.0, *(check_float(a, "alphas[...]", low=0.0) for a in alphas)})
    prompts = encode(tokenizer, bias_prompts("biased", groups=groups).texts, eos=False)
    ppl_ids, ppl_mask = encode(tokenizer, ppl_texts)
    derog, neutral = word_ids(tokenizer, DEROGATORY_ADJS), word_ids(tokenizer, NEUTRAL_ADJS)
    direction = vec / vec.norm()
    df = sweep_alpha(
        model, layer, direction, [-a * unit for a in alphas], lambda m: _masses(m, prompts, derog, neutral),
        ppl_ids=ppl_ids, ppl_mask=ppl_mask, positions=positions,
    )  # fmt: skip
    df["alpha"] = alphas
    df["reduction"] = [reduction(df["derogatory"].iloc[0], d) for d in df["derogatory"]]
    df["ppl_increase"] = df["ppl"] / df["ppl"].iloc[0] - 1.0
    return df


def sweep_layers(
    model: nn.Module,
    tokenizer: Any,
    vectors: Mapping[int, torch.Tensor],
    units: Mapping[int, float],
    *,
    groups: Sequence[str],
    ppl_texts: Sequence[str],
    alphas: Sequence[float] = ALPHAS,
) -> pd.DataFrame:
    """:func:`sweep` at every layer of ``vectors`` (``{layer: [D]}``, e.g. one vector per layer), with that
    layer's residual-norm unit; the rows of all layers with a ``layer`` column."""
    if not isinstance(vectors, Mapping) or not vectors:
        raise InputError("`vectors` must be a non-empty dict {layer: [D] tensor}")
    parts = []
    for layer, v in vectors.items():
        if layer not in units:
            raise InputError(f"`units` has no entry for layer {layer}")
        df = sweep(model, tokenizer, layer, v, units[layer], groups=groups, ppl_texts=ppl_texts, alphas=alphas)
        parts.append(df.assign(layer=int(layer)))
    return pd.concat(parts, ignore_index=True)


def choose_setting(val: pd.DataFrame, *, ppl_budget: float = 0.25) -> dict[str, float]:
    """The ``(layer, alpha)`` of a validation sweep with the largest reduction of derogatory mass among the
    rows whose perplexity rose by at most ``ppl_budget`` (ties: the smallest alpha, then the earliest
    layer). Returns ``layer, alpha, reduction, ppl_increase`` (``alpha = 0`` if nothing fits the budget)."""
    if not isinstance(val, pd.DataFrame) or not {"alpha", "reduction", "ppl_increase"} <= set(val.columns):
        raise InputError("`val` must be the DataFrame of sweep() or sweep_layers()")
    ppl_budget = check_float(ppl_budget, "ppl_budget", low=0.0)
    val = val if "layer" in val.columns else val.assign(layer=-1)
    ok = val[val["ppl_increase"] <= ppl_budget].sort_values(["alpha", "layer"], kind="stable")
    if ok.empty:
        ok = val[val["alpha"] == 0.0]
    row = ok.loc[ok["reduction"].idxmax()]
    return {k: float(row[k]) for k in ("alpha", "reduction", "ppl_increase")} | {"layer": int(row["layer"])}


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    layer: int,
    vectors: Mapping[str, torch.Tensor],
    alpha: float,
    unit: float,
    *,
    groups: Sequence[str],
    ppl_texts: Sequence[str],
    positions: str | Sequence[int] = "all",
) -> pd.DataFrame:
    """Each named vector (``[D]``, or ``[K, D]`` for K controls whose results are averaged) subtracted at
    strength ``alpha * unit`` on the biased-cue prompts of ``groups``. Returns one row per name:
    ``derogatory, neutral, ppl, reduction, ppl_increase`` (vs no steering), plus the ``none`` row."""
    alpha = check_float(alpha, "alpha", low=0.0)
    if not isinstance(vectors, Mapping) or not vectors:
        raise InputError("`vectors` must be a non-empty dict {name: [D] or [K, D] tensor}")
    rows, base = [], None
    cols = ("derogatory", "neutral", "ppl")
    for name, v in vectors.items():
        vs = check_tensor(v, f"vectors[{name!r}]", ndim=(1, 2), dtype="float")
        per = []
        for u in vs[None] if vs.ndim == 1 else vs:
            df = sweep(model, tokenizer, layer, u, unit, groups=groups, ppl_texts=ppl_texts, alphas=[alpha],
                       positions=positions)  # fmt: skip
            base = df.iloc[0] if base is None else base
            per.append(df.iloc[-1])
        rows.append({"method": name, **{k: float(np.mean([p[k] for p in per])) for k in cols}})
    out = pd.DataFrame([{"method": "none", **{k: float(base[k]) for k in cols}}, *rows])
    out["reduction"] = [reduction(float(base["derogatory"]), d) for d in out["derogatory"]]
    out["ppl_increase"] = out["ppl"] / float(base["ppl"]) - 1.0
    return out


def steered_examples(
    model: nn.Module,
    tokenizer: Any,
    layer: int,
    vec: torch.Tensor,
    strength: float,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 3,
) -> pd.DataFrame:
    """Greedy completions of ``prompts`` without and with ``vec`` subtracted at norm ``strength``
    (the paper's qualitative evidence). Columns ``prompt, unsteered, steered``."""
    prompts = check_texts(prompts, "prompts")
    strength = check_float(strength, "strength", low=0.0)
    direction = vec / vec.norm()
    out = {"prompt": list(prompts), "unsteered": [], "steered": []}
    for p in prompts:
        ids, _ = encode(tokenizer, [p], eos=False)
        for col, a in (("unsteered", 0.0), ("steered", -strength)):
            gen = steer_generate(model, ids, layer, direction, a, max_new_tokens, eos_token_id=tokenizer.eos_token_id)
            out[col].append(tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return pd.DataFrame(out)


#: Next-word categories of the bias world, in the order the figures stack them.
CATEGORIES: tuple[str, ...] = ("derogatory", "neutral", "object adjective", "other")


@torch.no_grad()
def next_word_distribution(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    layer: int | None = None,
    vec: torch.Tensor | None = None,
    strength: float = 0.0,
    positions: str | Sequence[int] = "all",
) -> torch.Tensor:
    """The next-token distribution ``[V]`` at each prompt's last token, averaged over ``prompts``; with
    ``vec`` (``[D]``, or ``[K, D]``: the K distributions are averaged) subtracted after block ``layer`` at
    norm ``strength`` (``strength * vec / ||vec||``, every position). Greedy decoding shows only the argmax
    of this distribution; this is the whole of it."""
    prompts = check_texts(prompts, "prompts")
    strength = check_float(strength, "strength", low=0.0)
    ids, mask = encode(tokenizer, prompts, eos=False)
    dev = device_of(model)
    last = (mask.sum(1) - 1).to(dev)

    def probs() -> torch.Tensor:
        logits = logits_of(model(input_ids=ids.to(dev), attention_mask=mask.to(dev)), ndim=3)
        return logits[torch.arange(ids.shape[0], device=dev), last].float().softmax(-1).mean(0).cpu()

    with eval_mode(model):
        if vec is None:
            return probs()
        if layer is None:
            raise InputError("`layer` is needed with `vec`: the block after which the vector is subtracted")
        vs = check_tensor(vec, "vec", ndim=(1, 2), dtype="float")
        vs = vs[None] if vs.ndim == 1 else vs
        if bool((vs.norm(dim=1) == 0).any()):
            raise InputError("`vec` holds the zero vector: it has no direction to steer along")
        out = []
        for v in vs:
            with add_vector(model, layer, v / v.norm(), -strength, positions):
                out.append(probs())
        return torch.stack(out).mean(0)


def category_mass(probs: torch.Tensor, tokenizer: Any) -> dict[str, float]:
    """The mass of a next-token distribution ``[V]`` on each of :data:`CATEGORIES` (the world's derogatory,
    neutral and object adjectives, by :func:`word_ids`, and everything else); the four sum to 1."""
    p = check_tensor(probs, "probs", ndim=1, dtype="float", layout="[V]")
    out = {
        name: float(p[word_ids(tokenizer, words)].sum())
        for name, words in zip(CATEGORIES[:3], (DEROGATORY_ADJS, NEUTRAL_ADJS, OBJECT_ADJS), strict=True)
    }
    out["other"] = max(0.0, float(p.sum()) - sum(out.values()))
    return out


def _category_of(tokenizer: Any) -> dict[int, str]:
    words = zip(CATEGORIES[:3], (DEROGATORY_ADJS, NEUTRAL_ADJS, OBJECT_ADJS), strict=True)
    return {int(i): name for name, ws in words for i in word_ids(tokenizer, ws)}


def plot_continuations(
    dists: Mapping[str, torch.Tensor], tokenizer: Any, *, compare: Sequence[str] | None = None, k: int = 12
) -> Any:
    """Where the next-word mass goes: per setting of ``dists`` (``{name: [V] distribution}`` from
    :func:`next_word_distribution`) the mass on each of :data:`CATEGORIES` (stacked bars), and for the two
    settings ``compare`` (default: the first two) the ``k`` most likely words, coloured by category."""
    from xattr_nb import plots

    if not isinstance(dists, Mapping) or not dists:
        raise InputError("`dists` must be a non-empty dict {setting: [V] next-token distribution}")
    names = list(dists)
    compare = list(compare) if compare is not None else names[:2]
    if len(compare) != 2 or any(c not in dists for c in compare):
        raise InputError(f"`compare` must name two settings of `dists` ({names}); got {compare}")
    k = check_int(k, "k", low=1)
    masses = {n: category_mass(d, tokenizer) for n, d in dists.items()}
    cat_of = _category_of(tokenizer)
    colors = {"derogatory": "#c44e52", "neutral": "#4c72b0", "object adjective": "#55a868", "other": "#bbbbbb"}
    both = torch.stack([dists[c] for c in compare])
    top = both.max(0).values.topk(min(k, both.shape[1])).indices.tolist()
    labels = [tokenizer.decode([i]).strip() or repr(tokenizer.convert_ids_to_tokens(i)) for i in top]
    with plots.style():
        fig = plots.figure(9.0, 3.0)
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.6])
        bottom = np.zeros(len(names))
        for cat in CATEGORIES:
            h = np.array([masses[n][cat] for n in names])
            left.bar(names, h, bottom=bottom, color=colors[cat], label=cat, edgecolor="none")
            bottom += h
        left.set_ylabel("next-word mass")
        left.set_ylim(0, 1)
        left.tick_params(axis="x", labelrotation=30)
        left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        left.set_title("by category")
        xs = np.arange(len(top))
        for j, (name, shift) in enumerate(zip(compare, (-0.2, 0.2), strict=True)):
            right.bar(xs + shift, [float(dists[name][i]) for i in top], width=0.4, label=name,
                      color=["#999999", "#333333"][j], edgecolor="none")  # fmt: skip
        right.set_xticks(xs, labels, rotation=45, ha="right", fontsize=8)
        for tick, i in zip(right.get_xticklabels(), top, strict=True):
            tick.set_color(colors[cat_of.get(i, "other")] if i in cat_of else "#555555")
        right.set_ylabel("probability")
        right.legend(fontsize=7)
        right.set_title(f"top {len(top)} next words (label colour = category)")
    return plots.show(fig)


def plot_sweeps(val: pd.DataFrame, *, ppl_budget: float = 0.25) -> Any:
    """Validation sweeps (from :func:`explain` or :func:`sweep_layers` with a ``variant`` column): per variant,
    the reduction of derogatory mass vs alpha, one line per layer, hollow where perplexity rose by more
    than ``ppl_budget``."""
    from xattr_nb import plots

    if not isinstance(val, pd.DataFrame) or not {"variant", "layer", "alpha", "reduction", "ppl_increase"} <= set(
        val.columns
    ):
        raise InputError("`val` must hold the columns variant, layer, alpha, reduction, ppl_increase")
    variants = list(dict.fromkeys(val["variant"]))
    with plots.style():
        fig = plots.figure(3.4 * len(variants), 2.8)
        axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
        for ax, name in zip(axes, variants, strict=True):
            for layer, df in val[val["variant"] == name].groupby("layer"):
                (line,) = ax.plot(df["alpha"], df["reduction"], label=f"layer {layer}", lw=1.2)
                over = df["ppl_increase"] > ppl_budget
                ax.scatter(df["alpha"][~over], df["reduction"][~over], color=line.get_color(), s=14)
                ax.scatter(
                    df["alpha"][over], df["reduction"][over], facecolors="none", edgecolors=line.get_color(), s=14
                )
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlabel("alpha (x mean residual norm)")
            ax.set_title(f"{name} vector")
        axes[0].set_ylabel("reduction of derogatory mass")
        axes[-1].legend(fontsize=7)
    return plots.show(fig)


# ----------------------------------------------------------------------------------------------
# Entry point.


def explain(
    model: nn.Module,
    tokenizer: Any,
    *,
    n_per_class: int = 70,
    n_ppl: int = 200,
    n_random: int = 3,
    alphas: Sequence[float] = ALPHAS,
    ppl_budget: float = 0.25,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole pipeline on the bias world: probes per layer; both vectors at every layer; for each,
    the ``(layer, alpha)`` chosen on the validation groups; evaluation on the test groups with the
    controls (random vectors and the probe direction at the decision vector's setting).

    Returns ``curve, probe_layer, units, vectors`` (``{variant: {layer: [D]}}``), ``val`` (the sweeps,
    with a ``variant`` column), ``chosen`` (``{variant: setting}``) and ``test`` (one row per method)."""
    seed = check_seed(seed)
    st = bias_statements(n_per_class, seed=seed)
    acts = statement_states(model, tokenizer, st)
    curve = probe_curve(acts, st, seed=seed)
    val_g, test_g = split_groups(seed)
    ppl_val = bias_corpus(n_ppl, p_object=1.0, seed=seed + 20_000).texts
    ppl_test = bias_corpus(n_ppl, p_object=1.0, seed=seed + 30_000).texts
    norm_texts = bias_corpus(n_ppl, seed=seed + 40_000).texts
    layers = sorted(acts)
    units = {layer: resid_norm(model, tokenizer, norm_texts, layer) for layer in layers}
    vectors = {
        "paper": {layer: paper_vector(acts[layer], st) for layer in layers},
        "decision": {layer: decision_vector(model, tokenizer, layer, val_g) for layer in layers},
    }
    kw = {"groups": val_g, "ppl_texts": ppl_val, "alphas": alphas}
    val = pd.concat(
        [sweep_layers(model, tokenizer, vectors[k], units, **kw).assign(variant=k) for k in vectors], ignore_index=True
    )
    chosen = {k: choose_setting(val[val["variant"] == k], ppl_budget=ppl_budget) for k in vectors}
    d = chosen["decision"]
    v = vectors["decision"][d["layer"]]
    controls = {
        "decision": v,
        "probe": probe_vector(acts[d["layer"]], st, 1.0),
        "random": random_vectors(n_random, v.shape[0], 1.0, seed=seed),
    }
    kw = {"groups": test_g, "ppl_texts": ppl_test}
    test = evaluate(model, tokenizer, d["layer"], controls, d["alpha"], units[d["layer"]], **kw)
    p = chosen["paper"]
    paper = evaluate(model, tokenizer, p["layer"], {"paper": vectors["paper"][p["layer"]]}, p["alpha"],
                     units[p["layer"]], **kw)  # fmt: skip
    test = pd.concat([test.iloc[:2], paper.iloc[1:], test.iloc[2:]], ignore_index=True)
    test["layer"] = [None, d["layer"], p["layer"], d["layer"], d["layer"]]
    test["alpha"] = [0.0, d["alpha"], p["alpha"], d["alpha"], d["alpha"]]
    return {"curve": curve, "probe_layer": select_layer(curve), "units": units, "vectors": vectors, "val": val,
            "chosen": chosen, "test": test, "groups": {"val": val_g, "test": test_g}, "statements": st}  # fmt: skip
