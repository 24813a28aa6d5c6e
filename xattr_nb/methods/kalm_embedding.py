"""KaLM-Embedding-V2's training techniques on a MiniLM embedder (Zhao et al., arXiv 2506.20923 v1).

The recipe, as small named steps (the spec: ``../shared/papers/27_kalm_embedding.md``):

1. :func:`encode_cached`: run the frozen bottom of all-MiniLM-L6-v2 once over every text and keep
   the hidden states entering its top ``n_train_layers`` layers (and MiniLM's own zero-shot
   embeddings, the reference row and the hard-negative *teacher*). Only the top layers are
   fine-tuned (:class:`CachedTopEncoder`): they start as MiniLM's and are trained on the cache, so
   a training step costs the top layers only. At ``scale="full"`` :class:`FullEncoder` fine-tunes a
   whole ``AutoModel`` from its texts instead.
2. :func:`mine_hard_negatives`: hard negatives from the teacher's ranking of the *training* pool,
   sampled from a rank window, with KaLM V1's ranking-consistency filter (drop candidates the
   teacher scores above the labelled positive: likely false negatives). :func:`random_negatives`
   is the same count drawn uniformly (the "no mining" arm).
3. :func:`train_embedder`: InfoNCE with in-batch and hard negatives (batch-deduplicated), focal
   reweighting ``(1 − p_i)^γ`` and online hard-negative mixing (:mod:`xattr_nb.contrastive`).
4. :func:`evaluate`: nDCG@10, Recall@1, MRR@10 (:mod:`xattr_nb.metrics.ranking`) and hard-negative
   accuracy on held-out queries and documents.
5. :func:`soup`: the uniform parameter average of runs from the same initialisation.

:func:`ablate` runs the full recipe and each leave-one-out arm, paired (the same batches and
mixing draws per run), and :func:`explain` is the one entry point: fine-tune with one recipe and
return the model with what it measured.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xattr_nb import plots
from xattr_nb.checks import InputError, check_float, check_int, check_tensor, check_texts
from xattr_nb.contrastive import average_state_dicts, focal_info_nce, mix_hard_negatives
from xattr_nb.metrics.ranking import mrr, ndcg_at_k, recall_at_k
from xattr_nb.models.hub import load_encoder
from xattr_nb.models.io import device_of
from xattr_nb.runtime import progress
from xattr_nb.worlds.retrieval import RetrievalWorld

__all__ = [
    "FULL_MODEL",
    "CachedTopEncoder",
    "FullEncoder",
    "Recipe",
    "TextTable",
    "ablate",
    "encode_cached",
    "evaluate",
    "explain",
    "load_full",
    "mine_hard_negatives",
    "mining_stats",
    "plot_arms",
    "random_negatives",
    "soup",
    "text_table",
    "train_embedder",
]

#: The paper's backbone (spec 3.7); its bidirectional-attention patch is not applied here.
FULL_MODEL = "Qwen/Qwen2-0.5B"


# --------------------------------------------------------------------------------------------
# Texts and encoders
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextTable:
    """All texts of a :class:`RetrievalWorld` in one list, with the offset of each part."""

    texts: list[str]
    offsets: dict[str, int]  # "train_q", "train_d", "eval_q", "eval_d"

    def ids(self, part: str, idx: Any) -> torch.Tensor:
        return torch.as_tensor(idx, dtype=torch.long) + self.offsets[part]

    def part(self, part: str) -> torch.Tensor:
        keys = list(self.offsets)
        i = keys.index(part)
        end = self.offsets[keys[i + 1]] if i + 1 < len(keys) else len(self.texts)
        return torch.arange(self.offsets[part], end)


def text_table(world: RetrievalWorld) -> TextTable:
    """Train queries, the train pool, eval queries and eval documents, in that order."""
    if not isinstance(world, RetrievalWorld):
        raise InputError(f"`world` must be a RetrievalWorld (xattr_nb.worlds.retrieval); got {type(world).__name__}")
    parts = (("train_q", world.train_queries), ("train_d", world.train_docs),
             ("eval_q", world.eval_queries), ("eval_d", world.eval_docs))  # fmt: skip
    texts, offsets = [], {}
    for name, items in parts:
        offsets[name] = len(texts)
        texts.extend(items)
    return TextTable(texts, offsets)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


def _layers_of(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise InputError(f"`model` must be BERT-like (with `.encoder.layer`); got {type(model).__name__}")
    return layers


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@dataclasses.dataclass
class Cache:
    """Hidden states entering the top layers ``[N, T, d]``, the attention mask ``[N, T]`` and the frozen
    model's own embeddings ``[N, d]`` (mean-pooled, L2-normalised: the zero-shot reference)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    zero_shot: torch.Tensor
    n_train_layers: int


@torch.inference_mode()
def encode_cached(
    texts: Sequence[str], tokenizer: Any, model: nn.Module, *, n_train_layers: int = 1, batch_size: int = 128
) -> Cache:
    """One frozen forward of ``model`` (BERT-like) over ``texts``: the states before its last
    ``n_train_layers`` layers, and its zero-shot sentence embeddings (as sentence-transformers computes them)."""
    texts = check_texts(list(texts), "texts")
    n_layers = len(_layers_of(model))
    n_train_layers = check_int(n_train_layers, "n_train_layers", low=1, high=n_layers)
    batch_size = check_int(batch_size, "batch_size", low=1)
    dev = device_of(model)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n, t = ids.shape
    hidden = torch.zeros(n, t, model.config.hidden_size)
    zero_shot = torch.zeros(n, model.config.hidden_size)
    order = torch.argsort(mask.sum(1), stable=True)  # length-sorted batches: little padding
    for s in progress(range(0, n, batch_size), desc="MiniLM (frozen) forward", unit="batch"):
        rows = order[s : s + batch_size]
        tb = int(mask[rows].sum(1).max())
        m = mask[rows, :tb].to(dev)
        out = model(input_ids=ids[rows, :tb].to(dev), attention_mask=m, output_hidden_states=True)
        hidden[rows, :tb] = out.hidden_states[n_layers - n_train_layers].float().cpu()
        zero_shot[rows] = _mean_pool(out.last_hidden_state.float(), m).cpu()
    return Cache(hidden, mask.clone(), zero_shot, n_train_layers)


class CachedTopEncoder(nn.Module):
    """MiniLM's top ``n`` layers (a trainable copy) over cached hidden states; ``forward(ids)`` embeds the
    cached texts ``ids`` (mean pooling over real tokens, L2-normalised). The cache is not a parameter,
    so ``state_dict`` holds only the trainable layers (what a soup averages)."""

    def __init__(self, model: nn.Module, cache: Cache):
        super().__init__()
        if not isinstance(cache, Cache):
            raise InputError(f"`cache` must come from encode_cached; got {type(cache).__name__}")
        layers = _layers_of(model)
        self.layers = nn.ModuleList(copy.deepcopy(layers[len(layers) - cache.n_train_layers :]))
        self.cache = cache

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = self.cache.mask[ids]
        t = int(mask.sum(1).max())
        dev = next(self.parameters()).device
        h, mask = self.cache.hidden[ids, :t].to(dev), mask[:, :t].to(dev)
        add = _additive_mask(mask, h.dtype)
        for layer in self.layers:
            h = layer(h, attention_mask=add)
            h = h[0] if isinstance(h, tuple) else h
        return _mean_pool(h, mask)


class FullEncoder(nn.Module):
    """A whole ``AutoModel`` fine-tuned from its texts (``scale="full"``): ``forward(ids)`` tokenises
    ``texts[ids]`` and mean-pools the last hidden states over real tokens (L2-normalised)."""

    def __init__(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.texts = check_texts(list(texts), "texts")
        self.max_length = check_int(max_length, "max_length", low=1)
        if getattr(tokenizer, "pad_token", None) is None:
            tokenizer.pad_token = tokenizer.eos_token

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch = [self.texts[int(i)] for i in ids]
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        dev = device_of(self.model)
        mask = enc["attention_mask"].to(dev)
        hidden = self.model(input_ids=enc["input_ids"].to(dev), attention_mask=mask).last_hidden_state
        return _mean_pool(hidden.float(), mask)


def load_full(
    world: RetrievalWorld, name_or_path: str = FULL_MODEL, *, device: str = "cpu"
) -> tuple[FullEncoder, TextTable]:
    """``scale="full"``: the paper's backbone (or any ``AutoModel`` folder) as a :class:`FullEncoder` over the
    world's texts. No hub download happens unless the name is served by the hub and the machine is online."""
    tokenizer, model = load_encoder(name_or_path, device=device)
    table = text_table(world)
    return FullEncoder(model, tokenizer, table.texts), table


@torch.no_grad()
def embed_ids(encoder: nn.Module, ids: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[len(ids), d]`` of the table's texts ``ids`` (eval mode, no gradient), on the CPU."""
    was = encoder.training
    encoder.eval()
    out = torch.cat([encoder(ids[s : s + batch_size]).cpu() for s in range(0, len(ids), batch_size)])
    encoder.train(was)
    return out


# --------------------------------------------------------------------------------------------
# Hard negatives
# --------------------------------------------------------------------------------------------


def mine_hard_negatives(
    q_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    positive: torch.Tensor,
    *,
    n_hard: int = 3,
    window: tuple[int, int] = (0, 4),
    filter_above_positive: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hard negatives ``[Q, n_hard]`` (document indices) from a teacher's cosine ranking of the training pool.

    Per query the labelled positive is removed from the ranking; with ``filter_above_positive`` (KaLM
    V1's ranking-consistency filter) so is every document the teacher scores above it; ``n_hard`` are
    drawn without replacement from the ranks ``window`` of what remains (topped up from the next ranks
    when the window holds too few). Only training embeddings and training positives are read.
    Returns the indices and ``{"filtered": mean candidates removed by the filter per query}``.
    """
    q_emb = check_tensor(q_emb, "q_emb", ndim=2, dtype="float", layout="[Q, d]")
    doc_emb = check_tensor(doc_emb, "doc_emb", ndim=2, dtype="float", layout="[D, d]")
    positive = check_tensor(positive, "positive", shape=(q_emb.shape[0],), dtype="int", layout="[Q]")
    n_hard = check_int(n_hard, "n_hard", low=1)
    if not (isinstance(window, Sequence) and len(window) == 2 and 0 <= int(window[0]) < int(window[1])):
        raise InputError(f"`window` must be (start, end) ranks with 0 <= start < end; got {window!r}")
    if int(positive.min()) < 0 or int(positive.max()) >= doc_emb.shape[0]:
        raise InputError(f"`positive` must index `doc_emb` (0..{doc_emb.shape[0] - 1})")
    if doc_emb.shape[0] < n_hard + 1:
        raise InputError(f"`doc_emb` must hold more than n_hard={n_hard} documents; got {doc_emb.shape[0]}")
    rng = np.random.default_rng(seed)
    sims = (q_emb @ doc_emb.T).numpy()
    out, removed = [], []
    for i in range(len(sims)):
        order = np.argsort(-sims[i], kind="stable")
        pos = int(positive[i])
        keep = order != pos
        if filter_above_positive:
            above = sims[i][order] > sims[i][pos]
            removed.append(int((above & keep).sum()))
            keep &= ~above
        cand = order[keep]
        lo, hi = int(window[0]), int(window[1])
        pool = cand[lo:hi]
        if len(pool) < n_hard:
            pool = cand[lo : lo + n_hard] if len(cand) >= lo + n_hard else cand[-n_hard:]
        out.append(rng.choice(pool, n_hard, replace=False))
    stats = {"filtered": float(np.mean(removed)) if removed else 0.0}
    return torch.tensor(np.array(out), dtype=torch.long), stats


def random_negatives(
    n_queries: int, n_docs: int, positive: torch.Tensor, *, n_hard: int = 3, seed: int = 0
) -> torch.Tensor:
    """``[Q, n_hard]`` pool documents drawn uniformly (never the labelled positive): the no-mining arm."""
    n_queries = check_int(n_queries, "n_queries", low=1)
    n_docs = check_int(n_docs, "n_docs", low=2)
    n_hard = check_int(n_hard, "n_hard", low=1, high=n_docs - 1)
    positive = check_tensor(positive, "positive", shape=(n_queries,), dtype="int", layout="[Q]")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_queries):
        pick = rng.choice(n_docs - 1, n_hard, replace=False)
        out.append(np.where(pick >= int(positive[i]), pick + 1, pick))
    return torch.tensor(np.array(out), dtype=torch.long)


def mining_stats(negatives: torch.Tensor, world: RetrievalWorld) -> dict[str, float]:
    """What mined negatives are, by the world's ground truth (read after mining, never by it): the share that
    are **false negatives** (documents of the query's own fact), and the shares that are the query's own
    ``slot`` / ``role_swap`` hard negatives."""
    negatives = check_tensor(negatives, "negatives", ndim=2, dtype="int", layout="[Q, M]")
    qf = world.train_query_fact[:, None]
    false_neg = world.train_doc_fact[negatives] == qf
    kinds = np.array(world.train_doc_kind)[negatives.numpy()]
    # a query's own hard negatives sit right after its paraphrases in the pool
    owner = torch.zeros(len(world.train_docs), dtype=torch.long)
    starts = [*world.train_positive.tolist(), len(world.train_docs)]
    for q, (s, e) in enumerate(itertools.pairwise(starts)):
        owner[s:e] = q
    own = (owner[negatives] == torch.arange(len(negatives))[:, None]).numpy()
    return {
        "false_negatives": float(false_neg.float().mean()),
        "own_slot": float((own & (kinds == "slot")).mean()),
        "own_role_swap": float((own & (kinds == "role_swap")).mean()),
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training configuration. ``negatives``: ``"mined"`` (filtered by default), ``"random"`` or
    ``"none"`` (in-batch only); ``gamma`` the focal exponent (0 = plain InfoNCE); ``mix`` online
    hard-negative mixing (``n_mix`` pair mixes and ``n_qmix`` query mixes from each row's ``top_k``)."""

    negatives: str = "mined"
    filter_above_positive: bool = True
    gamma: float = 1.0
    mix: bool = True
    top_k: int = 8
    n_mix: int = 4
    n_qmix: int = 2
    tau: float = 0.05

    def __post_init__(self) -> None:
        if self.negatives not in ("mined", "random", "none"):
            raise InputError(f"`negatives` must be 'mined', 'random' or 'none'; got {self.negatives!r}")
        check_float(self.gamma, "gamma", low=0.0)
        check_float(self.tau, "tau", low=1e-4)

    @property
    def negatives_key(self) -> str | None:
        if self.negatives == "none":
            return None
        if self.negatives == "random":
            return "random"
        return "mined" if self.filter_above_positive else "mined_unfiltered"


def train_embedder(
    encoder: nn.Module,
    table: TextTable,
    positive: torch.Tensor,
    negatives: torch.Tensor | None,
    recipe: Recipe,
    *,
    steps: int = 40,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[nn.Module, list[float]]:
    """Fine-tune ``encoder`` in place (AdamW, linear warm-up over the first 10 % of steps) and return it with
    its loss per step. Batches are training queries without replacement (so each batch holds distinct
    facts); a column that is another row's negative *and* this row's labelled positive document is masked
    (batch deduplication). ``seed`` fixes the batches, the mixing draws and the dropout masks (drawn in a
    forked RNG, so the caller's global RNG is untouched): arms trained with the same seed see the same
    batches (a paired comparison)."""
    if not isinstance(recipe, Recipe):
        raise InputError(f"`recipe` must be a Recipe; got {type(recipe).__name__}")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=2)
    lr = check_float(lr, "lr", low=0.0)
    n_q = len(table.part("train_q"))
    positive = check_tensor(positive, "positive", shape=(n_q,), dtype="int", layout="[Q]")
    if negatives is not None:
        negatives = check_tensor(negatives, "negatives", ndim=2, dtype="int", layout="[Q, M]")
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    gen = torch.Generator().manual_seed(seed)  # batch order (the same for every arm)
    mix_gen = torch.Generator().manual_seed(seed + 1)  # mixing draws, apart: arms without mixing keep the batches
    perm, losses = torch.randperm(n_q, generator=gen), []
    encoder.train()
    with torch.random.fork_rng(devices=[]):  # dropout masks from `seed` too; the global RNG is left as it was
        torch.manual_seed(seed)
        _train_loop(encoder, table, positive, negatives, recipe, opt, sched, (gen, mix_gen), perm, steps,
                    batch_size, n_q, losses, show_progress)  # fmt: skip
    encoder.eval()
    return encoder, losses


def _train_loop(encoder, table, positive, negatives, recipe, opt, sched, gens, perm, steps, batch_size, n_q, losses,
                show_progress):  # fmt: skip
    gen, mix_gen = gens
    cursor = 0
    for _ in progress(range(steps), desc="fine-tune", unit="step", disable=not show_progress):
        if cursor + batch_size > n_q:
            perm, cursor = torch.randperm(n_q, generator=gen), 0
        qi = perm[cursor : cursor + batch_size]
        cursor += batch_size
        b = len(qi)
        pos_doc = positive[qi]
        neg_doc = None if negatives is None else negatives[qi]
        docs = pos_doc if neg_doc is None else torch.cat([pos_doc, neg_doc.flatten()])
        ids = torch.cat([table.ids("train_q", qi), table.ids("train_d", docs)])
        z = encoder(ids)
        q, p = z[:b], z[b : 2 * b]
        neg = None if neg_doc is None else z[2 * b :].view(b, neg_doc.shape[1], -1)
        valid = docs[None, :] != pos_doc[:, None]
        own = None
        if recipe.mix:
            cols = z[b:]  # in-batch positives, then all in-batch hard negatives
            keep = valid.clone()
            keep[torch.arange(b), torch.arange(b)] = False  # a row's own positive is not a negative
            idx = torch.stack([torch.nonzero(k).flatten()[: int(keep.sum(1).min())] for k in keep])
            own = mix_hard_negatives(q, cols[idx], top_k=recipe.top_k, n_mix=recipe.n_mix,
                                     n_qmix=recipe.n_qmix, generator=mix_gen)  # fmt: skip
        loss = focal_info_nce(q, p, neg, tau=recipe.tau, gamma=recipe.gamma, own_negatives=own, valid=valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))


# --------------------------------------------------------------------------------------------
# Evaluation, soups, ablation
# --------------------------------------------------------------------------------------------


def evaluate_embeddings(q: torch.Tensor, d: torch.Tensor, world: RetrievalWorld) -> dict[str, float]:
    """Retrieval metrics of held-out query embeddings ``q`` ``[Qe, d]`` against the held-out corpus ``d``
    ``[De, d]``: nDCG@10, Recall@1, Recall@10, MRR@10 (means over queries, :mod:`xattr_nb.metrics.ranking`)
    and hard-negative accuracy (share of queries whose positive beats both of their own hard negatives)."""
    q = check_tensor(q, "q", shape=(len(world.eval_queries), None), dtype="float", layout="[Qe, d]")
    d = check_tensor(d, "d", shape=(len(world.eval_docs), q.shape[1]), dtype="float", layout="[De, d]")
    scores = (q @ d.T).double()
    rel = world.eval_relevant
    rows = torch.arange(len(q))
    pos = scores[rows, world.eval_positive]
    hard = scores[rows[:, None], world.eval_hard].max(1).values
    return {
        "ndcg@10": float(ndcg_at_k(scores, rel, 10).mean()),
        "recall@1": float(recall_at_k(scores, rel, 1).mean()),
        "recall@10": float(recall_at_k(scores, rel, 10).mean()),
        "mrr@10": float(mrr(scores, rel, k=10).mean()),
        "hard_neg_acc": float((pos > hard).double().mean()),
    }


def evaluate(encoder: nn.Module, table: TextTable, world: RetrievalWorld) -> dict[str, float]:
    """:func:`evaluate_embeddings` of ``encoder`` on the held-out queries and corpus."""
    return evaluate_embeddings(
        embed_ids(encoder, table.part("eval_q")), embed_ids(encoder, table.part("eval_d")), world
    )


def soup(encoders: Sequence[nn.Module]) -> nn.Module:
    """A copy of ``encoders[0]`` holding the uniform average of all their parameters (same initialisation)."""
    if not encoders:
        raise InputError("`encoders` must be a non-empty list of models")
    out = copy.deepcopy(encoders[0])
    out.load_state_dict(average_state_dicts([e.state_dict() for e in encoders]))
    return out


#: The full recipe and its leave-one-out arms, plus plain in-batch contrastive fine-tuning.
ARMS: dict[str, Recipe] = {
    "full": Recipe(),
    "− mining (random negs)": Recipe(negatives="random"),
    "− filter": Recipe(filter_above_positive=False),
    "− focal (γ=0)": Recipe(gamma=0.0),
    "− mixing": Recipe(mix=False),
    "plain in-batch": Recipe(negatives="none", gamma=0.0, mix=False),
}


def ablate(
    make_encoder: Any,
    table: TextTable,
    world: RetrievalWorld,
    negatives: Mapping[str, torch.Tensor],
    *,
    arms: Mapping[str, Recipe] | None = None,
    n_runs: int = 2,
    seed: int = 0,
    keep: Sequence[str] = ("full",),
    **train_kw: Any,
) -> tuple[pd.DataFrame, dict[tuple[str, int], nn.Module]]:
    """Train every arm ``n_runs`` times from ``make_encoder()`` (a fresh copy of the same initial weights),
    run ``r`` of every arm with training seed ``1000·seed + r`` (same batches and draws: paired), evaluate
    each on the held-out split. Returns one row per (arm, run) and the models of the arms in ``keep``."""
    arms = dict(ARMS if arms is None else arms)
    n_runs = check_int(n_runs, "n_runs", low=1)
    rows, models = [], {}
    bar = progress([(a, r) for r in range(n_runs) for a in arms], desc="arms × runs", unit="run")
    for arm, r in bar:
        rec = arms[arm]
        key = rec.negatives_key
        if key is not None and key not in negatives:
            raise InputError(f"`negatives` has no {key!r} entry (needed by arm {arm!r}); got {sorted(negatives)}")
        enc, losses = train_embedder(make_encoder(), table, world.train_positive,
                                     None if key is None else negatives[key], rec, seed=1000 * seed + r, **train_kw)  # fmt: skip
        rows.append({"arm": arm, "run": r, **evaluate(enc, table, world), "final_loss": losses[-1]})
        if arm in keep:
            models[(arm, r)] = enc
    return pd.DataFrame(rows), models


def explain(
    world: RetrievalWorld,
    *,
    recipe: Recipe | None = None,
    scale: str = "cpu",
    full_model: str = FULL_MODEL,
    n_train_layers: int = 1,
    n_hard: int = 3,
    window: tuple[int, int] = (0, 4),
    seed: int = 0,
    device: str = "cpu",
    **train_kw: Any,
) -> dict[str, Any]:
    """The recipe end to end; returns ``{"model", "losses", "metrics", "zero_shot", "mining"}``.

    ``scale="cpu"``: the offline all-MiniLM-L6-v2, frozen bottom cached, its top ``n_train_layers``
    fine-tuned. ``scale="full"``: ``full_model`` (the paper's ``Qwen/Qwen2-0.5B`` by default, or any
    ``AutoModel`` folder) loaded by :func:`xattr_nb.models.hub.load_encoder` and fine-tuned whole
    (:class:`FullEncoder`). Either way negatives are mined with the untrained model's own embeddings of
    the training pool (the teacher), and the metrics are on the held-out split."""
    recipe = Recipe() if recipe is None else recipe
    if scale not in ("cpu", "full"):
        raise InputError(f"`scale` must be 'cpu' or 'full'; got {scale!r}")
    if scale == "full":
        encoder, table = load_full(world, full_model, device=device)
        zero = torch.cat([embed_ids(encoder, table.part(k)) for k in ("train_q", "train_d", "eval_q", "eval_d")])
    else:
        tok, model = load_encoder(device=device)
        table = text_table(world)
        cache = encode_cached(table.texts, tok, model, n_train_layers=n_train_layers)
        encoder, zero = CachedTopEncoder(model, cache), cache.zero_shot
    zq, zd = zero[table.part("train_q")], zero[table.part("train_d")]
    negs = None
    if recipe.negatives == "mined":
        negs, _ = mine_hard_negatives(zq, zd, world.train_positive, n_hard=n_hard, window=window,
                                      filter_above_positive=recipe.filter_above_positive, seed=seed)  # fmt: skip
    elif recipe.negatives == "random":
        negs = random_negatives(len(zq), len(zd), world.train_positive, n_hard=n_hard, seed=seed)
    zs = evaluate_embeddings(zero[table.part("eval_q")], zero[table.part("eval_d")], world)
    enc, losses = train_embedder(encoder, table, world.train_positive, negs, recipe, seed=seed, **train_kw)
    return {"model": enc, "losses": losses, "metrics": evaluate(enc, table, world), "zero_shot": zs,
            "mining": None if negs is None else mining_stats(negs, world)}  # fmt: skip


def plot_arms(table: pd.DataFrame, metric: str = "ndcg@10", *, baseline: float = 0.0, baseline_name: str = "",
              title: str | None = None):  # fmt: skip
    """Bars: each arm's mean ``metric`` over runs minus ``baseline`` (e.g. the zero-shot model's), dots: runs.
    Differences, not levels, so gaps of a few hundredths are visible."""
    if metric not in table.columns:
        raise InputError(f"`metric` must be one of the table's columns {list(table.columns)}; got {metric!r}")
    baseline = check_float(baseline, "baseline")
    values = {arm: table.loc[table["arm"] == arm, metric].to_numpy() - baseline for arm in table["arm"].unique()}
    label = f"{metric} − {baseline_name}" if baseline_name else metric
    return plots.comparison_bars(values, metric=label, title=title, higher_is_better=True)
