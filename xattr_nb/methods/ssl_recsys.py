"""Self-supervised Learning for Large-scale Item Recommendations (Yao et al., arXiv 2007.12865).

A two-tower retrieval model (query tower G, item tower H over categorical item features) trained with a
batch softmax over in-batch items (with the logQ correction of Yi et al. 2019), plus a SimCLR-style auxiliary
task on the item tower: two complementary feature-masked views of the same item, drawn **uniformly from the
corpus**, must match each other among the other items of the SSL batch (InfoNCE). Correlated feature masking
(CFM) masks a seed feature together with the features of highest mutual information with it; random feature
masking (RFM) masks a random half. ``L = L_main + α · L_self``.

The steps (written here from the spec; no official code exists and no library ships this model):

- :func:`item_features` / :func:`movielens_item_features`: the item feature table. The recsys world exposes
  its per-item features (``item_features``: id, topic, sub-topic, brand, price, tags); MovieLens ratings carry
  none, so at ``scale="full"`` they are read here from ``movies.csv``/``movies.dat`` (genres multi-hot, decade)
  when the folder has one (the item id alone otherwise).
- :func:`coclick_pairs`, :func:`test_pairs`: item-to-item engagement pairs — two clicks of one training user
  (query item, target item); test pairs are (a fold-in click, a held-out click) of held-out test users.
- :func:`popularity_slices`: head (top 10 % of items by training target count) and tail (≤ 2 training
  occurrences, never-seen items included), from the **training pairs only**.
- :func:`feature_mi`: mutual information between every pair of item features over the corpus
  (``sklearn.metrics.mutual_info_score``; a multi-valued feature enters as its dominant value, the corpus-wide
  most frequent of the item's values — an approximation, the paper's form is not stated).
- :func:`feature_masks`: complementary masks, ``"random"`` (RFM) or ``"correlated"`` (CFM), one per item.
- :func:`multi_value_dropout`: each value of a multi-valued feature dropped with probability ``p``.
- :class:`FeatureTower`: per-feature embeddings (16-d, PyTorch's default N(0, 1) init, multi-valued features
  mean-pooled), a learned default embedding per feature that replaces a masked one, MLP, L2 normalisation.
- :func:`batch_softmax_loss`: in-batch softmax with optional ``−log Q`` correction; the SSL loss is
  :func:`xattr_nb.contrastive.info_nce`.
- :func:`train`: one variant (``"baseline"``, ``"fd"`` feature dropout in the main task, ``"rfm"``, ``"cfm"``)
  at a fixed budget; :func:`evaluate`: full-corpus Recall@k (query item excluded) with
  :func:`xattr_nb.metrics.ranking.recall_at_k_batch`, overall and per slice; :func:`compare`; :func:`explain`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from xattr_nb.checks import InputError, check_choice, check_float, check_int
from xattr_nb.contrastive import info_nce
from xattr_nb.metrics.ranking import recall_at_k_batch
from xattr_nb.runtime import progress
from xattr_nb.worlds.recsys import ImplicitFeedback

__all__ = [
    "VARIANTS",
    "FeatureTower",
    "ItemCorpus",
    "TrainResult",
    "batch_softmax_loss",
    "coclick_pairs",
    "compare",
    "evaluate",
    "explain",
    "feature_masks",
    "feature_mi",
    "item_features",
    "movielens_item_features",
    "multi_value_dropout",
    "popularity_slices",
    "test_pairs",
    "train",
]

VARIANTS = ("baseline", "fd", "rfm", "cfm")


@dataclass
class ItemCorpus:
    """Item features: ``single`` name → ``[I]`` long codes, ``multi`` name → ``[I, V]`` float 0/1;
    ``order`` the feature names in a fixed order (the columns of masks and of the MI matrix)."""

    single: dict[str, torch.Tensor]
    multi: dict[str, torch.Tensor]
    order: list[str]

    @property
    def n_items(self) -> int:
        t = next(iter(self.single.values())) if self.single else next(iter(self.multi.values()))
        return int(t.shape[0])

    def vocab(self) -> dict[str, int]:
        v = {k: int(t.max()) + 1 for k, t in self.single.items()}
        v.update({k: int(t.shape[1]) for k, t in self.multi.items()})
        return v

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: t[idx] for k, t in self.single.items()}
        out.update({k: t[idx] for k, t in self.multi.items()})
        return out


def item_features(features: Mapping[str, Any]) -> ItemCorpus:
    """An :class:`ItemCorpus` from a name → tensor table (the world's ``item_features``): 1-D integer
    tensors are single-valued codes, 2-D (bool or 0/1) tensors multi-valued."""
    if not isinstance(features, Mapping) or not features:
        raise InputError("`features` must be a non-empty dict: name -> [I] codes or [I, V] multi-hot")
    single, multi, n = {}, {}, None
    for k, v in features.items():
        t = torch.as_tensor(v)
        if n is None:
            n = t.shape[0]
        if t.shape[0] != n:
            raise InputError(f"`features` must all have {n} rows; {k!r} has {t.shape[0]}")
        if t.ndim == 1:
            if t.dtype.is_floating_point or t.dtype == torch.bool or (t < 0).any():
                raise InputError(f"`features[{k!r}]` must hold non-negative integer codes")
            single[k] = t.long()
        elif t.ndim == 2:
            multi[k] = t.float()
        else:
            raise InputError(f"`features[{k!r}]` must be [I] codes or [I, V] multi-hot; got shape {tuple(t.shape)}")
    return ItemCorpus(single, multi, list(features))


def movielens_item_features(data_dir: Any, item_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """Item features for MovieLens items (``scale="full"``): ``item_id`` always; with ``movies.csv``
    (ml-20m: ``movieId,title,genres``) or ``movies.dat`` (ml-1m: ``MovieID::Title::Genres``) in ``data_dir``
    (or beside the ratings file it names), ``genres`` multi-hot and ``decade`` (from the title's year; 0 when
    absent). Written here: the recsys world's reader returns ratings only."""
    ids = np.asarray(item_ids)
    out: dict[str, torch.Tensor] = {"item_id": torch.arange(len(ids))}
    if not isinstance(data_dir, (str, Path)) or not str(data_dir):
        raise InputError(f"`data_dir` must be a MovieLens folder or ratings file; got {data_dir!r}")
    p = Path(data_dir)
    folder = p if p.is_dir() else p.parent
    if (folder / "movies.csv").is_file():
        m = pd.read_csv(folder / "movies.csv")
        m = m.rename(columns={"movieId": "item"})
    elif (folder / "movies.dat").is_file():
        m = pd.read_csv(
            folder / "movies.dat",
            sep="::",
            engine="python",
            header=None,
            names=["item", "title", "genres"],
            encoding="latin-1",
        )
    else:
        return out
    m = m.set_index("item").reindex(ids)
    genres = m["genres"].fillna("").astype(str).str.split("|")
    names = sorted({g for gs in genres for g in gs if g and g != "(no genres listed)"})
    col = {g: j for j, g in enumerate(names)}
    mh = torch.zeros(len(ids), max(1, len(names)))
    for i, gs in enumerate(genres):
        for g in gs:
            if g in col:
                mh[i, col[g]] = 1.0
    years = m["title"].fillna("").astype(str).map(lambda s: re.findall(r"\((\d{4})\)", s))
    dec = np.array([int(y[-1]) // 10 * 10 if y else 0 for y in years])
    codes = {d: j for j, d in enumerate(sorted(set(dec)))}
    out["genres"] = mh
    out["decade"] = torch.tensor([codes[d] for d in dec])
    return out


# --------------------------------------------------------------------------------------------
# Engagement pairs and slices
# --------------------------------------------------------------------------------------------


def _csr(x: Any, name: str) -> sp.csr_matrix:
    if not sp.issparse(x):
        raise InputError(f"`{name}` must be a scipy.sparse users x items click matrix; got {type(x).__name__}")
    return sp.csr_matrix(x)


def coclick_pairs(clicks: Any, n_pairs: int, *, seed: int = 0) -> np.ndarray:
    """``[n_pairs, 2]`` (query item, target item): a training user drawn in proportion to their number of
    click pairs, then two of their distinct clicks in random order (item-to-item co-engagement)."""
    X = _csr(clicks, "clicks")
    n_pairs = check_int(n_pairs, "n_pairs", low=1)
    rng = np.random.default_rng(check_int(seed, "seed"))
    n = np.diff(X.indptr)
    w = np.where(n >= 2, n * (n - 1), 0).astype(float)
    if w.sum() == 0:
        raise InputError("`clicks` has no user with two clicks to pair")
    users = rng.choice(len(n), size=n_pairs, p=w / w.sum())
    a = (rng.random(n_pairs) * n[users]).astype(int)
    b = (rng.random(n_pairs) * (n[users] - 1)).astype(int)
    b = b + (b >= a)
    start = X.indptr[users]
    return np.stack([X.indices[start + a], X.indices[start + b]], axis=1)


def test_pairs(fold_in: Any, heldout: Any, *, seed: int = 0) -> np.ndarray:
    """``[P, 2]``: for each held-out user and each of their held-out clicks, (a random fold-in click of the
    user, the held-out click)."""
    Fm, H = _csr(fold_in, "fold_in"), _csr(heldout, "heldout")
    if Fm.shape != H.shape:
        raise InputError(f"`heldout` must have the shape of `fold_in` {Fm.shape}; got {H.shape}")
    rng = np.random.default_rng(check_int(seed, "seed"))
    out = []
    for u in range(H.shape[0]):
        f = Fm.indices[Fm.indptr[u] : Fm.indptr[u + 1]]
        h = H.indices[H.indptr[u] : H.indptr[u + 1]]
        if len(f) == 0:
            continue
        out += [(int(rng.choice(f)), int(t)) for t in h]
    if not out:
        raise InputError("no held-out user has both fold-in and held-out clicks")
    return np.asarray(out)


def popularity_slices(train_pairs: Any, n_items: int, *, head_share: float = 0.1, tail_max: int = 2) -> dict:
    """Item slices by how often each item is a **target in the training pairs** (nothing else is read):
    ``head`` the top ``head_share`` of items by count (ties broken by item id), ``tail`` items with at most
    ``tail_max`` occurrences (never-seen items included). Returns ``counts``, ``head`` and ``tail`` ([I] bool)."""
    pairs = np.asarray(train_pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise InputError(f"`train_pairs` must be an [N, 2] integer array of (query, target); got shape {pairs.shape}")
    n_items = check_int(n_items, "n_items", low=1)
    head_share = check_float(head_share, "head_share", low=0.0, high=1.0)
    tail_max = check_int(tail_max, "tail_max", low=0)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_items):
        raise InputError(f"`train_pairs` must hold item ids in [0, {n_items}); got {pairs.min()}..{pairs.max()}")
    counts = np.bincount(pairs[:, 1], minlength=n_items)
    order = np.lexsort((np.arange(n_items), -counts))
    head = np.zeros(n_items, bool)
    head[order[: round(head_share * n_items)]] = True
    return {"counts": counts, "head": head, "tail": (counts <= tail_max) & ~head}


# --------------------------------------------------------------------------------------------
# Mutual information and masking
# --------------------------------------------------------------------------------------------


def _codes(corpus: ItemCorpus) -> dict[str, np.ndarray]:
    out = {k: v.numpy() for k, v in corpus.single.items()}
    for k, m in corpus.multi.items():  # the dominant value: the item's most frequent value over the corpus
        freq = m.sum(0)
        out[k] = torch.where(m > 0, freq.expand_as(m) + 1, torch.zeros_like(m)).argmax(1).numpy()
    return out


def feature_mi(corpus: ItemCorpus) -> np.ndarray:
    """``[k, k]`` mutual information (nats) between item features over the corpus, in ``corpus.order``
    (``sklearn.metrics.mutual_info_score``; diagonal = each feature's entropy)."""
    from sklearn.metrics import mutual_info_score

    if not isinstance(corpus, ItemCorpus):
        raise InputError(f"`corpus` must be an ItemCorpus (see item_features); got {type(corpus).__name__}")
    c = _codes(corpus)
    k = len(corpus.order)
    mi = np.zeros((k, k))
    for i, a in enumerate(corpus.order):
        for j, b in enumerate(corpus.order):
            if j >= i:
                mi[i, j] = mi[j, i] = mutual_info_score(c[a], c[b])
    return mi


def feature_masks(
    n: int, k: int, mode: str, *, mi: np.ndarray | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[n, k]`` bool masks of the first view (True = masked); the second view masks the complement.

    ``"random"`` (RFM): a uniformly random ``⌊k/2⌋`` of the features. ``"correlated"`` (CFM): a seed feature
    drawn uniformly plus the ``⌊k/2⌋ − 1`` features of highest mutual information ``mi[seed]`` with it."""
    n = check_int(n, "n", low=1)
    k = check_int(k, "k", low=2)
    check_choice(mode, ("random", "correlated"), "mode")
    half = k // 2
    if mode == "random":
        order = torch.rand(n, k, generator=generator).argsort(1)
        masks = torch.zeros(n, k, dtype=torch.bool)
        masks.scatter_(1, order[:, :half], True)
        return masks
    if mi is None or np.shape(mi) != (k, k):
        raise InputError(f"`mi` must be a [{k}, {k}] mutual-information matrix for mode='correlated'")
    m = torch.as_tensor(np.asarray(mi, dtype=float)).clone()
    m.fill_diagonal_(float("inf"))  # the seed itself first
    ranked = m.argsort(1, descending=True)[:, :half]  # [k, half]: each seed and its most informative partners
    seeds = torch.randint(0, k, (n,), generator=generator)
    masks = torch.zeros(n, k, dtype=torch.bool)
    masks.scatter_(1, ranked[seeds], True)
    return masks


def multi_value_dropout(x: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each active value of a multi-hot ``[B, V]`` tensor dropped independently with probability ``p``."""
    p = check_float(p, "p", low=0.0, high=1.0)
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise InputError("`x` must be a [B, V] multi-hot tensor")
    return x * (torch.rand(x.shape, generator=generator) >= p).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Towers and losses
# --------------------------------------------------------------------------------------------


class FeatureTower(nn.Module):
    """Per-feature embeddings → concat → MLP → L2-normalised embedding. A masked feature is replaced by its
    learned default embedding (``default="learned"``) or zeros (``"zero"``). Embedding tables keep PyTorch's
    N(0, 1) init (untrained tail ids stay noisy, as in production)."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        order: Sequence[str],
        multi: set[str],
        *,
        emb_dim: int = 16,
        hidden: Sequence[int] = (64,),
        out: int = 32,
        default: str = "learned",
    ):
        super().__init__()
        check_choice(default, ("learned", "zero"), "default")
        self.order, self.multi, self.default = list(order), set(multi), default
        self.emb = nn.ModuleDict({k: nn.Embedding(int(vocab[k]), emb_dim) for k in self.order})
        self.missing = nn.Parameter(torch.randn(len(self.order), emb_dim) * 0.1)
        dims = [emb_dim * len(self.order), *hidden, out]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, batch: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        for j, k in enumerate(self.order):
            x = batch[k]
            multi = k in self.multi
            e = x @ self.emb[k].weight / x.sum(1, keepdim=True).clamp(min=1.0) if multi else self.emb[k](x)
            if mask is not None:
                fill = self.missing[j] if self.default == "learned" else torch.zeros_like(self.missing[j])
                e = torch.where(mask[:, j : j + 1], fill.expand_as(e), e)
            parts.append(e)
        return F.normalize(self.mlp(torch.cat(parts, 1)), dim=1)


def batch_softmax_loss(q: torch.Tensor, x: torch.Tensor, tau: float, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """``−mean_i log softmax_j(⟨q_i, x_j⟩/τ − log Q_j)_i``: the in-batch softmax of the two-tower main task,
    with the sampling-bias correction of Yi et al. 2019 when ``log_q`` ``[B]`` is given. Dot products of the
    given vectors (the towers normalise)."""
    if not isinstance(q, torch.Tensor) or q.ndim != 2:
        raise InputError("`q` must be a [B, d] tensor")
    if not isinstance(x, torch.Tensor) or x.shape != q.shape:
        raise InputError(f"`x` must be a [B, d] tensor like `q` {tuple(q.shape)}")
    tau = check_float(tau, "tau", low=1e-6)
    logits = q @ x.T / tau
    if log_q is not None:
        if not isinstance(log_q, torch.Tensor) or log_q.shape != (q.shape[0],):
            raise InputError(f"`log_q` must be a [{q.shape[0]}] tensor")
        logits = logits - log_q[None, :]
    return F.cross_entropy(logits, torch.arange(len(q)))


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    query_tower: FeatureTower
    item_tower: FeatureTower
    variant: str
    config: dict[str, Any]
    losses: dict[str, list[float]] = field(default_factory=dict)


def train(
    corpus: ItemCorpus,
    pairs: Any,
    variant: str = "cfm",
    *,
    steps: int = 1000,
    batch: int = 256,
    ssl_batch: int = 256,
    alpha: float = 1.0,
    tau: float = 0.1,
    tau_main: float = 0.05,
    dropout: float = 0.3,
    fd_rate: float = 0.3,
    lr: float = 1e-3,
    logq_correction: bool = True,
    ssl_sampling: str = "uniform",
    default: str = "learned",
    mi: np.ndarray | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> TrainResult:
    """One variant at a fixed budget (Adam, ``steps`` updates of ``batch`` training pairs). ``"fd"`` masks
    each main-task item feature with probability ``fd_rate``; ``"rfm"``/``"cfm"`` add ``α · InfoNCE`` of two
    complementary masked views (multi-valued dropout ``dropout``) of ``ssl_batch`` items drawn uniformly from
    the corpus (``ssl_sampling="train"``: from the training targets instead), through the shared item tower.
    Every variant draws the same main-task batches (a generator seeded by ``seed``)."""
    if not isinstance(corpus, ItemCorpus):
        raise InputError(f"`corpus` must be an ItemCorpus; got {type(corpus).__name__}")
    check_choice(variant, VARIANTS, "variant")
    check_choice(ssl_sampling, ("uniform", "train"), "ssl_sampling")
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise InputError(f"`pairs` must be an [N, 2] integer array; got shape {pairs.shape}")
    steps = check_int(steps, "steps", low=1)
    batch = check_int(batch, "batch", low=2)
    ssl_batch = check_int(ssl_batch, "ssl_batch", low=2)
    alpha = check_float(alpha, "alpha", low=0.0)
    dropout = check_float(dropout, "dropout", low=0.0, high=1.0)
    fd_rate = check_float(fd_rate, "fd_rate", low=0.0, high=1.0)
    seed = check_int(seed, "seed")
    n_items, k = corpus.n_items, len(corpus.order)
    if variant == "cfm" and mi is None:
        mi = feature_mi(corpus)
    torch.manual_seed(seed)
    vocab, multi = corpus.vocab(), set(corpus.multi)
    G = FeatureTower(vocab, corpus.order, multi, default=default)
    H = FeatureTower(vocab, corpus.order, multi, default=default)
    opt = torch.optim.Adam([*G.parameters(), *H.parameters()], lr=check_float(lr, "lr", low=0.0))
    counts = np.bincount(pairs[:, 1], minlength=n_items).astype(float)
    log_q = torch.tensor(np.log(np.maximum(counts, 1.0) / len(pairs)), dtype=torch.float32)
    g_main = torch.Generator().manual_seed(seed)  # the same main-task batches for every variant
    g_aug = torch.Generator().manual_seed(seed + 1)
    train_targets = torch.as_tensor(pairs[:, 1])
    P = torch.as_tensor(pairs)
    hist: dict[str, list[float]] = {"main": [], "ssl": []}
    it = progress(range(steps), desc=f"train {variant}") if show_progress else range(steps)
    for _ in it:
        idx = torch.randint(0, len(P), (batch,), generator=g_main)
        qi, xi = P[idx, 0], P[idx, 1]
        fd_mask = torch.rand(batch, k, generator=g_main) < fd_rate
        xmask = fd_mask if variant == "fd" else None
        loss_main = batch_softmax_loss(
            G(corpus.take(qi)), H(corpus.take(xi), xmask), tau_main, log_q[xi] if logq_correction else None
        )
        loss = loss_main
        if variant in ("rfm", "cfm") and alpha > 0:
            if ssl_sampling == "uniform":
                items = torch.randperm(n_items, generator=g_aug)[: min(ssl_batch, n_items)]
            else:
                items = train_targets[torch.randint(0, len(train_targets), (ssl_batch,), generator=g_aug)]
            m1 = feature_masks(len(items), k, "random" if variant == "rfm" else "correlated", mi=mi, generator=g_aug)
            b1, b2 = corpus.take(items), corpus.take(items)
            for name in corpus.multi:
                b1[name] = multi_value_dropout(b1[name], dropout, generator=g_aug)
                b2[name] = multi_value_dropout(b2[name], dropout, generator=g_aug)
            loss_ssl = info_nce(H(b1, m1), H(b2, ~m1), tau=tau)
            loss = loss + alpha * loss_ssl
            hist["ssl"].append(loss_ssl.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist["main"].append(loss_main.item())
    cfg = dict(
        steps=steps,
        batch=batch,
        ssl_batch=ssl_batch,
        alpha=alpha,
        tau=tau,
        tau_main=tau_main,
        dropout=dropout,
        fd_rate=fd_rate,
        lr=lr,
        logq_correction=logq_correction,
        ssl_sampling=ssl_sampling,
        default=default,
        seed=seed,
    )
    return TrainResult(G.eval(), H.eval(), variant, cfg, hist)


@torch.no_grad()
def evaluate(
    result: TrainResult,
    corpus: ItemCorpus,
    pairs: Any,
    slices: Mapping[str, np.ndarray] | None = None,
    *,
    ks: Sequence[int] = (10, 50),
) -> dict[str, dict[str, float]]:
    """Full-corpus Recall@k of each test pair's target (the query item itself excluded), by dot product of
    the un-augmented towers: ``{"all" | slice: {"recall@k": mean, "n": pairs}}``; a pair belongs to the
    slice of its target item."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise InputError(f"`pairs` must be an [P, 2] array of (query, target); got shape {pairs.shape}")
    allitems = torch.arange(corpus.n_items)
    items = result.item_tower(corpus.take(allitems))
    q = result.query_tower(corpus.take(torch.as_tensor(pairs[:, 0])))
    scores = (q @ items.T).numpy()
    rel = np.zeros_like(scores, dtype=bool)
    rel[np.arange(len(pairs)), pairs[:, 1]] = True
    excl = np.zeros_like(rel)
    excl[np.arange(len(pairs)), pairs[:, 0]] = True
    per = {f"recall@{k}": recall_at_k_batch(scores, rel, k, exclude=excl).numpy() for k in ks}
    groups = {"all": np.ones(len(pairs), bool)}
    for name, m in (slices or {}).items():
        groups[name] = np.asarray(m)[pairs[:, 1]]
    return {
        g: {**{k: float(v[sel].mean()) if sel.any() else float("nan") for k, v in per.items()}, "n": int(sel.sum())}
        for g, sel in groups.items()
    }


def build(
    data: ImplicitFeedback, *, n_train: int = 30_000, seed: int = 0, features: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Corpus, training pairs (training users only), test pairs (test users), and slices from the training
    pairs. ``features`` overrides the world's ``item_features`` (MovieLens: :func:`movielens_item_features`)."""
    if not isinstance(data, ImplicitFeedback):
        raise InputError(f"`data` must be an ImplicitFeedback (xattr_nb.worlds.recsys); got {type(data).__name__}")
    feats = features if features is not None else data.item_features
    if feats is None:
        raise InputError("`features` must be given: `data` has no item_features (MovieLens: movielens_item_features)")
    corpus = item_features(feats)
    tr = coclick_pairs(data.train, n_train, seed=seed)
    te = test_pairs(data.test_fold_in, data.test_heldout, seed=seed)
    sl = popularity_slices(tr, corpus.n_items)
    return {"corpus": corpus, "train": tr, "test": te, "slices": sl}


def compare(
    parts: Mapping[str, Any],
    *,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    show_progress: bool = False,
    **kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, TrainResult]]:
    """Every variant at the same budget and seed on :func:`build`'s parts: a table (one row per variant,
    Recall@10/50 overall, head and tail) and the trained results."""
    corpus, mi = parts["corpus"], feature_mi(parts["corpus"])
    slices = {"head": parts["slices"]["head"], "tail": parts["slices"]["tail"]}
    rows, runs = [], {}
    for v in variants:
        r = train(corpus, parts["train"], v, mi=mi, seed=seed, show_progress=show_progress, **kwargs)
        ev = evaluate(r, corpus, parts["test"], slices)
        runs[v] = r
        rows.append({"variant": v, **{f"{g} {m}": val for g, d in ev.items() for m, val in d.items() if m != "n"}})
    return pd.DataFrame(rows).set_index("variant"), runs


def explain(data: ImplicitFeedback, *, seed: int = 0, **kwargs: Any) -> tuple[TrainResult, dict]:
    """SSL-CFM end to end on ``data``: the trained towers and their full-corpus test recall by slice."""
    parts = build(data, seed=seed)
    r = train(parts["corpus"], parts["train"], "cfm", seed=seed, **kwargs)
    return r, evaluate(r, parts["corpus"], parts["test"], {k: parts["slices"][k] for k in ("head", "tail")})
