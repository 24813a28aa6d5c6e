"""A recommendation world: users, items, latent tastes, a long tail of item popularity, item
features, and held-out users split into fold-in and held-out clicks as Mult-VAE's protocol does.

Ground truth (:func:`make_implicit_feedback`, calibrated in the Mult-VAE spec §1.5):

- ``n_items`` items, each with a popularity logit ``-alpha * log(rank)`` over a random permutation
  of ranks (centred): a power-law long tail;
- ``n_topics`` topics with centres ``T_c ~ N(0, topic_scale² I_dim)``; item ``i`` has factors
  ``V_i = 0.7 N(0, I) + T_topic(i)``, user ``u`` has tastes ``U_u = 0.7 N(0, I) + T_topic(u)``;
- the click logits are ``U_u · V_i * pref_scale / sqrt(dim) + logpop_i``; each user clicks
  ``max(min_clicks, Poisson(mean_clicks))`` distinct items drawn without replacement in proportion to
  the softmax of the logits (Gumbel-top-k);
- item features for two-tower models (spec 30): topic, a sub-topic that is a fixed child of the topic,
  a brand that belongs to the topic's brands with probability 0.8, an independent price bucket, and
  3–6 tags (80 % from the topic's pool of 8). Only the topic enters the clicks (through ``V_i``).

The split is the paper's **strong generalisation** (:func:`from_interactions`, shared by the
synthetic world and real MovieLens files): users are shuffled, ``n_val`` validation and ``n_test``
test users are held out, the rest are training users; the item set is the items clicked by training
users; each held-out user keeps a random ``holdout`` share of their clicks (``int(holdout * n)``, at
least one) as targets and the rest as fold-in input. Held-out users with fewer than 5 clicks on the
training items are dropped (the official code gives them no targets; they could not be scored).

Real data (``scale="full"``): :func:`read_movielens` reads MovieLens ``ratings.csv`` (ml-20m,
``userId,movieId,rating,timestamp`` with a header) or ``ratings.dat`` (ml-1m, ``::``-separated) and
applies the paper's preprocessing: ratings ``> 3.5`` (i.e. ≥ 4) are clicks, users with at least 5
clicks are kept. :func:`load_movielens` then splits with the official seed 98765 and 10k/10k users.

Interaction matrices are ``scipy.sparse.csr_matrix`` (float32, 0/1): ML-20M's 136k × 20k does not fit
dense, and the official code keeps them sparse too. Written here: no library ships this generator or
the fold-in split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int

__all__ = [
    "ImplicitFeedback",
    "RecsysTruth",
    "from_interactions",
    "load_movielens",
    "load_recsys",
    "make_implicit_feedback",
    "read_movielens",
    "split_fold_in",
]

OFFICIAL_SEED = 98765  # the official notebook's shuffle and split seed


@dataclass
class RecsysTruth:
    """What generated the synthetic clicks, indexed by the world's user and item ids (after the split's
    re-indexing: rows of ``train``/``val_*``/``test_*`` map to ``user_factors[train_users]`` etc.)."""

    user_factors: torch.Tensor  # [n_users_all, dim]
    item_factors: torch.Tensor  # [n_items, dim]
    item_logpop: torch.Tensor  # [n_items] centred popularity logits (the long tail)
    user_topic: torch.Tensor  # [n_users_all]
    item_topic: torch.Tensor  # [n_items]
    pref_scale: float = 1.0

    def logits(self, users: Any) -> torch.Tensor:
        """The true click logits ``[len(users), n_items]`` of the given (original) user ids."""
        u = self.user_factors[torch.as_tensor(np.asarray(users), dtype=torch.long)]
        d = self.user_factors.shape[1]
        return u @ self.item_factors.T * self.pref_scale / d**0.5 + self.item_logpop


@dataclass
class ImplicitFeedback:
    """Clicks split for strong generalisation. Rows of ``train`` are training users, rows of
    ``val_fold_in``/``val_heldout`` (and ``test_*``) the same validation (test) users; columns are items
    ``0..n_items-1`` (``item_ids`` gives their original ids). ``*_users`` are original user ids."""

    train: sp.csr_matrix
    val_fold_in: sp.csr_matrix
    val_heldout: sp.csr_matrix
    test_fold_in: sp.csr_matrix
    test_heldout: sp.csr_matrix
    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray
    item_ids: np.ndarray
    truth: RecsysTruth | None = None
    item_features: dict[str, torch.Tensor] | None = None
    source: str = "synthetic"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    def popularity(self) -> np.ndarray:
        """Click counts per item over the **training users only** (the popularity baseline's scores)."""
        return np.asarray(self.train.sum(axis=0)).ravel()

    def summary(self) -> dict[str, Any]:
        nnz = (
            self.train.nnz + self.val_fold_in.nnz + self.val_heldout.nnz + self.test_fold_in.nnz + self.test_heldout.nnz
        )
        n_users = self.train.shape[0] + self.val_fold_in.shape[0] + self.test_fold_in.shape[0]
        return {
            "source": self.source,
            "items": self.n_items,
            "train users": int(self.train.shape[0]),
            "validation users": int(self.val_fold_in.shape[0]),
            "test users": int(self.test_fold_in.shape[0]),
            "clicks": int(nnz),
            "density": nnz / max(1, n_users * self.n_items),
        }


def _topk_gumbel(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices drawn without replacement in proportion to ``softmax(logits)``."""
    g = logits - np.log(-np.log(rng.random(logits.shape[0])))
    return np.argpartition(-g, k - 1)[:k]


def make_implicit_feedback(
    n_users: int = 3000,
    n_items: int = 1000,
    *,
    n_topics: int = 20,
    dim: int = 16,
    alpha: float = 1.0,
    pref_scale: float = 1.0,
    topic_scale: float = 1.0,
    mean_clicks: float = 30.0,
    min_clicks: int = 5,
    n_val: int = 400,
    n_test: int = 400,
    holdout: float = 0.2,
    seed: int = 0,
) -> ImplicitFeedback:
    """The synthetic world (ground truth in the module docstring), split by :func:`from_interactions`."""
    n_users = check_int(n_users, "n_users", low=3)
    n_items = check_int(n_items, "n_items", low=2)
    n_topics = check_int(n_topics, "n_topics", low=1)
    dim = check_int(dim, "dim", low=1)
    alpha = check_float(alpha, "alpha", low=0.0)
    pref_scale = check_float(pref_scale, "pref_scale", low=0.0)
    topic_scale = check_float(topic_scale, "topic_scale", low=0.0)
    mean_clicks = check_float(mean_clicks, "mean_clicks", low=0.0)
    min_clicks = check_int(min_clicks, "min_clicks", low=5, high=n_items)
    seed = check_int(seed, "seed")
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(n_items) + 1
    logpop = -alpha * np.log(ranks)
    logpop -= logpop.mean()
    centres = topic_scale * rng.standard_normal((n_topics, dim))
    item_topic = rng.integers(0, n_topics, n_items)
    user_topic = rng.integers(0, n_topics, n_users)
    V = 0.7 * rng.standard_normal((n_items, dim)) + centres[item_topic]
    U = 0.7 * rng.standard_normal((n_users, dim)) + centres[user_topic]
    logits = U @ V.T * pref_scale / np.sqrt(dim) + logpop
    lengths = np.minimum(np.maximum(min_clicks, rng.poisson(mean_clicks, n_users)), n_items)
    rows = [np.full(n, u) for u, n in enumerate(lengths)]
    cols = [_topk_gumbel(logits[u], int(n), rng) for u, n in enumerate(lengths)]
    df = pd.DataFrame({"user": np.concatenate(rows), "item": np.concatenate(cols)})
    truth = RecsysTruth(
        user_factors=torch.tensor(U, dtype=torch.float32),
        item_factors=torch.tensor(V, dtype=torch.float32),
        item_logpop=torch.tensor(logpop, dtype=torch.float32),
        user_topic=torch.tensor(user_topic),
        item_topic=torch.tensor(item_topic),
        pref_scale=pref_scale,
    )
    feats = _item_features(item_topic, n_topics, rng)
    data = from_interactions(df, n_val=n_val, n_test=n_test, holdout=holdout, seed=seed)
    keep = torch.as_tensor(data.item_ids, dtype=torch.long)  # items clicked by training users
    data.truth = RecsysTruth(
        truth.user_factors,
        truth.item_factors[keep],
        truth.item_logpop[keep],
        truth.user_topic,
        truth.item_topic[keep],
        pref_scale,
    )
    data.item_features = {k: v[keep] for k, v in feats.items()}
    data.meta.update(n_items_generated=n_items, n_topics=n_topics, dim=dim, alpha=alpha, seed=seed)
    return data


def _item_features(item_topic: np.ndarray, n_topics: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Categorical item features with mutual information among topic, sub-topic, brand and tags."""
    n = len(item_topic)
    sub = item_topic * 4 + rng.integers(0, 4, n)  # 4 sub-topics per topic, a deterministic parent
    brands_per_topic, n_brands = 12, 12 * n_topics
    own = item_topic * brands_per_topic + rng.integers(0, brands_per_topic, n)
    brand = np.where(rng.random(n) < 0.8, own, rng.integers(0, n_brands, n))
    n_tags = max(200, 8 * n_topics)
    pools = rng.integers(0, n_tags, (n_topics, 8))
    tags = np.zeros((n, n_tags), dtype=bool)
    for i in range(n):
        for _ in range(int(rng.integers(3, 7))):
            t = rng.choice(pools[item_topic[i]]) if rng.random() < 0.8 else rng.integers(0, n_tags)
            tags[i, t] = True
    return {
        "item_id": torch.arange(n),
        "topic": torch.tensor(item_topic),
        "subtopic": torch.tensor(sub),
        "brand": torch.tensor(brand),
        "price": torch.tensor(rng.integers(0, 5, n)),
        "tags": torch.tensor(tags),
    }


# --------------------------------------------------------------------------------------------
# The strong-generalisation split (synthetic and real data alike)
# --------------------------------------------------------------------------------------------


def _interactions(df: Any, name: str = "interactions") -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame) or not {"user", "item"} <= set(df.columns):
        raise InputError(f"`{name}` must be a pandas DataFrame with columns 'user' and 'item'")
    if len(df) == 0:
        raise InputError(f"`{name}` is empty")
    return df[["user", "item"]].drop_duplicates()


def split_fold_in(
    df: pd.DataFrame, *, holdout: float = 0.2, min_items: int = 5, rng: np.random.RandomState | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user with at least ``min_items`` clicks, a random ``int(holdout * n)`` of them as held-out
    targets and the rest as fold-in input (the official ``split_train_test_proportion``); users with
    fewer clicks are left out of both. Users are taken in sorted order, so the draw is reproducible."""
    holdout = check_float(holdout, "holdout", low=0.0, high=1.0)
    if not 0.0 < holdout < 1.0:
        raise InputError(f"`holdout` must lie strictly between 0 and 1; got {holdout}")
    min_items = check_int(min_items, "min_items", low=2)
    df = _interactions(df, "df")
    rng = rng if rng is not None else np.random.RandomState(OFFICIAL_SEED)
    fold, held = [], []
    for _, g in df.sort_values(["user", "item"]).groupby("user", sort=True):
        n = len(g)
        if n < min_items:
            continue
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=max(1, int(holdout * n)), replace=False)] = True
        held.append(g[mask])
        fold.append(g[~mask])
    if not fold:
        raise InputError(f"no user has at least {min_items} clicks to split into fold-in and held-out")
    return pd.concat(fold), pd.concat(held)


def _csr(df: pd.DataFrame, users: np.ndarray, item_index: pd.Series) -> sp.csr_matrix:
    row = pd.Series(np.arange(len(users)), index=users)
    r = row.loc[df["user"].to_numpy()].to_numpy()
    c = item_index.loc[df["item"].to_numpy()].to_numpy()
    return sp.csr_matrix((np.ones(len(df), dtype=np.float32), (r, c)), shape=(len(users), len(item_index)))


def from_interactions(
    interactions: pd.DataFrame,
    *,
    n_val: int,
    n_test: int,
    holdout: float = 0.2,
    seed: int = OFFICIAL_SEED,
    source: str = "synthetic",
) -> ImplicitFeedback:
    """Strong generalisation from a ``(user, item)`` click table: shuffle the users (``seed``), hold out
    ``n_val`` validation and ``n_test`` test users, keep the items clicked by the training users, and
    split each held-out user's clicks on those items into fold-in and held-out (:func:`split_fold_in`)."""
    df = _interactions(interactions)
    n_val = check_int(n_val, "n_val", low=1)
    n_test = check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed")
    uids = np.sort(df["user"].unique())
    if n_val + n_test >= len(uids):
        raise InputError(f"`n_val` + `n_test` must leave training users: {n_val} + {n_test} >= {len(uids)} users")
    rng = np.random.RandomState(seed)
    uids = uids[rng.permutation(len(uids))]
    n_tr = len(uids) - n_val - n_test
    tr_u, va_u, te_u = uids[:n_tr], uids[n_tr : n_tr + n_val], uids[n_tr + n_val :]
    tr = df[df["user"].isin(tr_u)]
    items = np.sort(tr["item"].unique())
    item_index = pd.Series(np.arange(len(items)), index=items)
    parts = []
    for users in (va_u, te_u):
        d = df[df["user"].isin(users) & df["item"].isin(items)]
        fold, held = split_fold_in(d, holdout=holdout, rng=rng)
        kept = np.sort(held["user"].unique())
        parts.append((kept, _csr(fold, kept, item_index), _csr(held, kept, item_index)))
    tr_users = np.sort(tr["user"].unique())
    (va_kept, va_f, va_h), (te_kept, te_f, te_h) = parts
    return ImplicitFeedback(
        train=_csr(tr, tr_users, item_index),
        val_fold_in=va_f,
        val_heldout=va_h,
        test_fold_in=te_f,
        test_heldout=te_h,
        train_users=tr_users,
        val_users=va_kept,
        test_users=te_kept,
        item_ids=items,
        source=source,
        meta={"split_seed": seed, "holdout": holdout},
    )


# --------------------------------------------------------------------------------------------
# MovieLens files (scale="full")
# --------------------------------------------------------------------------------------------


def _ratings_file(path: Any) -> Path:
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputError(f"`path` must be a ratings file or a folder holding one; got {path!r}")
    p = Path(path)
    if p.is_dir():
        for name in ("ratings.csv", "ratings.dat", "ml-20m/ratings.csv", "ml-1m/ratings.dat"):
            if (p / name).is_file():
                return p / name
        raise InputError(f"`path` {str(p)!r} holds no ratings.csv (ml-20m) or ratings.dat (ml-1m)")
    if not p.is_file():
        raise InputError(f"`path` {str(p)!r} does not exist")
    return p


def read_movielens(path: Any, *, threshold: float = 3.5, min_user_clicks: int = 5) -> pd.DataFrame:
    """Clicks ``(user, item)`` from a MovieLens ratings file with the paper's preprocessing: a rating
    ``> threshold`` (3.5: ratings ≥ 4) is a click; users with fewer than ``min_user_clicks`` clicks are
    dropped (the official ``filter_triplets(min_uc=5, min_sc=0)``: no item filter).

    ``path``: ``ratings.csv`` (ml-20m/ml-25m: ``userId,movieId,rating,timestamp`` with a header),
    ``ratings.dat`` (ml-1m/ml-10m: ``UserID::MovieID::Rating::Timestamp``), or a folder holding one.
    """
    f = _ratings_file(path)
    threshold = check_float(threshold, "threshold")
    min_user_clicks = check_int(min_user_clicks, "min_user_clicks", low=1)
    names = ["user", "item", "rating", "timestamp"]
    if f.suffix == ".dat":
        df = pd.read_csv(f, sep="::", engine="python", header=None, names=names)
    else:
        df = pd.read_csv(f)
        cols = {"userId": "user", "movieId": "item", "rating": "rating"}
        if not set(cols) <= set(df.columns):
            raise InputError(f"`path` {str(f)!r} must have columns userId, movieId, rating; got {list(df.columns)}")
        df = df.rename(columns=cols)
    if df.empty:
        raise InputError(f"`path` {str(f)!r} holds no ratings")
    df = df[df["rating"] > threshold]
    counts = df.groupby("user")["item"].transform("size")
    return df[counts >= min_user_clicks][["user", "item"]].reset_index(drop=True)


def load_movielens(
    path: Any,
    *,
    n_heldout: int = 10_000,
    holdout: float = 0.2,
    threshold: float = 3.5,
    min_user_clicks: int = 5,
    seed: int = OFFICIAL_SEED,
) -> ImplicitFeedback:
    """A MovieLens file read by :func:`read_movielens`, split as the paper does: ``n_heldout``
    validation and ``n_heldout`` test users (10k each on ML-20M), official seed 98765."""
    df = read_movielens(path, threshold=threshold, min_user_clicks=min_user_clicks)
    return from_interactions(df, n_val=n_heldout, n_test=n_heldout, holdout=holdout, seed=seed, source=str(path))


def load_recsys(scale: str = "cpu", *, data_dir: Any = None, seed: int = 0, **kwargs: Any) -> ImplicitFeedback:
    """The notebooks' one loader: ``scale="cpu"`` the synthetic world (``seed`` draws it; ``kwargs`` go to
    :func:`make_implicit_feedback`), ``scale="full"`` the MovieLens file under ``data_dir`` (``kwargs``
    go to :func:`load_movielens`; the split seed stays the official one unless given)."""
    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "cpu":
        return make_implicit_feedback(seed=seed, **kwargs)
    if data_dir is None or not str(data_dir):
        raise InputError("`data_dir` must name a MovieLens ratings file or folder when scale='full'")
    return load_movielens(data_dir, **kwargs)
