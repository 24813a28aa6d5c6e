"""A tabular world with known structure, and a CSV reader for paper-scale tables (T-JEPA, paper 28).

:func:`make_latent_factor_table` draws the spec's world: a latent ``z ~ N(0, I_k)`` drives the structured
numeric columns (``a_jᵀz + 0.3ε`` for the first half, ``tanh(a_jᵀz) + 0.3ε`` for the second) and the
categorical columns (quantile bins of ``b_jᵀz``); the nuisance columns are independent ``N(0, 1)``; the label
is ``y = 1[wᵀz + 0.5·z₁z₂ > 0]`` (:func:`label_of`), then a documented fraction is flipped. So the
structured features are mutually predictable (they share ``z``), the nuisance ones are not, and the label
depends on ``z`` only.

:func:`read_csv_table` reads a CSV file (the paper's benchmark tables exported as CSV: one row per example,
a label column) into the same :class:`TabularTable`; :func:`load_tabular` is the notebooks' one loader.
Numeric columns are min-max scaled on the pre-training rows (the official preprocessing), categorical
columns become integer codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xattr_nb.checks import InputError, check_choice, check_float, check_int

__all__ = [
    "TabularTable",
    "label_of",
    "load_tabular",
    "make_latent_factor_table",
    "minmax_fit_transform",
    "read_csv_table",
]


@dataclass
class TabularTable:
    """A table split for self-supervised pre-training and a few-label probe.

    ``x_num`` (float32, min-max scaled on ``pretrain_idx``) and ``x_cat`` (int64 codes) hold the features;
    the token order used everywhere is numeric columns first, then categorical ones (``feature_names``,
    ``feature_kind`` follow that order). ``pretrain_idx`` are the unlabelled rows SSL trains on,
    ``labelled_idx`` (a subset of them) the rows the probe may use with their labels, ``test_idx`` held-out
    rows never seen by pre-training. Synthetic tables also carry ``z`` (the latent), ``w`` and ``y_clean``
    (the label before flips) and ``flipped``.
    """

    x_num: np.ndarray
    x_cat: np.ndarray
    y: np.ndarray
    cat_cardinalities: list[int]
    feature_names: list[str]
    feature_kind: list[str]
    pretrain_idx: np.ndarray
    labelled_idx: np.ndarray
    test_idx: np.ndarray
    z: np.ndarray | None = None
    w: np.ndarray | None = None
    y_clean: np.ndarray | None = None
    flipped: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.x_num.shape[1] + self.x_cat.shape[1]

    def raw(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as one float matrix: scaled numerics, then one-hot categoricals (for raw-feature baselines)."""
        parts = [self.x_num[idx]]
        for j, card in enumerate(self.cat_cardinalities):
            parts.append(np.eye(card, dtype=np.float32)[self.x_cat[idx, j]])
        return np.concatenate(parts, axis=1)

    def summary(self) -> dict[str, Any]:
        kinds = {k: self.feature_kind.count(k) for k in dict.fromkeys(self.feature_kind)}
        return {
            "rows": len(self.y),
            "pre-training rows": len(self.pretrain_idx),
            "labelled rows": len(self.labelled_idx),
            "test rows": len(self.test_idx),
            "features": self.n_features,
            **{f"{k} features": v for k, v in kinds.items()},
            "positive rate": float(np.mean(self.y == 1)) if self.y.max() <= 1 else float("nan"),
        }


def _array(x: Any, name: str, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`{name}` must be a {ndim}-D numeric array; got {type(x).__name__}") from exc
    if a.ndim != ndim or a.size == 0 or not np.isfinite(a).all():
        raise InputError(f"`{name}` must be a non-empty finite {ndim}-D numeric array; got shape {a.shape}")
    return a


def label_of(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The world's clean label: ``1[wᵀz + 0.5·z₁z₂ > 0]`` (depends on ``z`` only)."""
    z, w = _array(z, "z", 2), _array(w, "w", 1)
    if z.shape[1] < 2 or len(w) != z.shape[1]:
        raise InputError(f"`w` must have one weight per column of `z` (>= 2 columns); got {len(w)} for z {z.shape}")
    return ((z @ w + 0.5 * z[:, 0] * z[:, 1]) > 0).astype(np.int64)


def minmax_fit_transform(x_fit: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Min-max scale with the range of ``x_fit`` (constant columns map to 0); returns the scaled arrays."""
    x_fit = _array(x_fit, "x_fit", 2)
    arrs = [_array(a, "others", 2) for a in others]
    if any(a.shape[1] != x_fit.shape[1] for a in arrs):
        raise InputError(f"`others` must have the {x_fit.shape[1]} columns of `x_fit`")
    lo, hi = x_fit.min(0), x_fit.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return tuple(((a - lo) / span).astype(np.float32) for a in (x_fit, *arrs))


def _splits(n: int, n_test: int, n_labelled: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    perm = rng.permutation(n)
    test, pre = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    lab = np.sort(rng.choice(pre, size=n_labelled, replace=False))
    return pre, lab, test


def make_latent_factor_table(
    n: int = 6000,
    n_latent: int = 4,
    n_struct: int = 12,
    n_cat: int = 2,
    n_nuisance: int = 10,
    *,
    n_test: int = 1000,
    n_labelled: int = 100,
    noise: float = 0.3,
    flip: float = 0.05,
    n_bins: int = 4,
    seed: int = 0,
) -> TabularTable:
    """The spec's latent-factor table (see the module docstring for the generative model)."""
    n = check_int(n, "n", low=20)
    n_latent = check_int(n_latent, "n_latent", low=2)
    n_struct = check_int(n_struct, "n_struct", low=2)
    n_cat = check_int(n_cat, "n_cat", low=0)
    n_nuisance = check_int(n_nuisance, "n_nuisance", low=0)
    n_test = check_int(n_test, "n_test", low=1, high=n - 2)
    n_labelled = check_int(n_labelled, "n_labelled", low=2, high=n - n_test)
    noise = check_float(noise, "noise", low=0.0)
    flip = check_float(flip, "flip", low=0.0, high=0.5)
    n_bins = check_int(n_bins, "n_bins", low=2)
    seed = check_int(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, n_latent))
    a = rng.standard_normal((n_latent, n_struct)) / np.sqrt(n_latent) * 1.5
    lin = z @ a
    half = n_struct // 2
    struct = np.concatenate([lin[:, :half], np.tanh(lin[:, half:])], axis=1) + noise * rng.standard_normal(
        (n, n_struct)
    )
    b = rng.standard_normal((n_latent, n_cat))
    proj = z @ b
    x_cat = np.zeros((n, n_cat), dtype=np.int64)
    for j in range(n_cat):
        edges = np.quantile(proj[:, j], np.linspace(0, 1, n_bins + 1)[1:-1])
        x_cat[:, j] = np.searchsorted(edges, proj[:, j])
    nuis = rng.standard_normal((n, n_nuisance))
    w = rng.standard_normal(n_latent)
    y_clean = label_of(z, w)
    flipped = rng.random(n) < flip
    y = np.where(flipped, 1 - y_clean, y_clean)
    pre, lab, test = _splits(n, n_test, n_labelled, rng)
    x_raw = np.concatenate([struct, nuis], axis=1)
    x_num = minmax_fit_transform(x_raw[pre], x_raw)[1]
    names = (
        [f"lin{j}" for j in range(half)]
        + [f"tanh{j}" for j in range(n_struct - half)]
        + [f"noise{j}" for j in range(n_nuisance)]
        + [f"cat{j}" for j in range(n_cat)]
    )
    kind = ["linear"] * half + ["tanh"] * (n_struct - half) + ["nuisance"] * n_nuisance + ["categorical"] * n_cat
    return TabularTable(
        x_num=x_num,
        x_cat=x_cat,
        y=y.astype(np.int64),
        cat_cardinalities=[n_bins] * n_cat,
        feature_names=names,
        feature_kind=kind,
        pretrain_idx=pre,
        labelled_idx=lab,
        test_idx=test,
        z=z,
        w=w,
        y_clean=y_clean,
        flipped=flipped,
        meta={"a": a, "b": b, "noise": noise, "flip": flip, "seed": seed},
    )


def read_csv_table(
    path: Any,
    target: str,
    *,
    categorical: list[str] | None = None,
    test_frac: float = 0.2,
    n_labelled: int | None = None,
    seed: int = 0,
) -> TabularTable:
    """A CSV file (header row, one example per row) as a :class:`TabularTable`.

    ``target`` names the label column (any values; factorised to 0..C-1). ``categorical`` names the
    categorical columns (default: every non-numeric column); the other columns must be numeric. Rows are
    split at random (``seed``) into pre-training rows and ``test_frac`` test rows; ``n_labelled`` of the
    pre-training rows keep their labels for the probe (default: all of them).
    """
    import pandas as pd

    if not isinstance(path, (str, Path)) or not str(path):
        raise InputError(f"`path` must be a CSV file path (str or Path); got {type(path).__name__}")
    p = Path(path)
    try:
        ok = p.is_file()
    except OSError:
        ok = False
    if not ok:
        raise InputError(f"`path` must be an existing CSV file; got {str(path)!r}")
    df = pd.read_csv(p)
    if not isinstance(target, str) or target not in df.columns:
        raise InputError(f"`target` must name a column of {p.name}; got {target!r} (columns: {list(df.columns)})")
    test_frac = check_float(test_frac, "test_frac", low=0.0)
    if not 0.0 < test_frac < 1.0:
        raise InputError(f"`test_frac` must lie strictly between 0 and 1; got {test_frac}")
    feats = [c for c in df.columns if c != target]
    if categorical is None:
        categorical = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c])]
    bad = [c for c in categorical if c not in feats]
    if bad:
        raise InputError(f"`categorical` must name feature columns of {p.name}; unknown {bad}")
    numeric = [c for c in feats if c not in categorical]
    for c in numeric:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise InputError(f"`categorical` must list the non-numeric column {c!r} (it is not numeric)")
    df = df.dropna(subset=[target]).reset_index(drop=True)
    n = len(df)
    n_test = max(1, round(test_frac * n))
    if n - n_test < 2:
        raise InputError(f"`path` must hold enough rows for a split; got {n}")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    n_lab = n - n_test if n_labelled is None else check_int(n_labelled, "n_labelled", low=2, high=n - n_test)
    pre, lab, test = _splits(n, n_test, n_lab, rng)
    xn = df[numeric].to_numpy(dtype=np.float64) if numeric else np.zeros((n, 0))
    if numeric:
        med = np.nanmedian(xn[pre], axis=0)
        xn = np.where(np.isnan(xn), med, xn)
        x_num = minmax_fit_transform(xn[pre], xn)[1]
    else:
        x_num = np.zeros((n, 0), dtype=np.float32)
    x_cat = np.zeros((n, len(categorical)), dtype=np.int64)
    cards = []
    for j, c in enumerate(categorical):
        codes, uniq = pd.factorize(df[c].astype("string").fillna("<NA>"), sort=True)
        x_cat[:, j] = codes
        cards.append(max(1, len(uniq)))
    y, classes = pd.factorize(df[target], sort=True)
    return TabularTable(
        x_num=x_num,
        x_cat=x_cat,
        y=y.astype(np.int64),
        cat_cardinalities=cards,
        feature_names=numeric + list(categorical),
        feature_kind=["numeric"] * len(numeric) + ["categorical"] * len(categorical),
        pretrain_idx=pre,
        labelled_idx=lab,
        test_idx=test,
        meta={"path": str(p), "classes": [str(c) for c in classes], "target": target},
    )


def load_tabular(
    scale: str = "cpu", *, data_csv: Any = None, target: str | None = None, seed: int = 0, **kwargs: Any
) -> TabularTable:
    """The notebooks' one loader: ``scale="cpu"`` the latent-factor world (``kwargs`` go to
    :func:`make_latent_factor_table`), ``scale="full"`` the CSV file ``data_csv`` with label column ``target``
    (``kwargs`` go to :func:`read_csv_table`)."""
    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "cpu":
        return make_latent_factor_table(seed=seed, **kwargs)
    if data_csv is None or not str(data_csv):
        raise InputError("`data_csv` must name a CSV file when scale='full'")
    if not target:
        raise InputError("`target` must name the label column when scale='full'")
    return read_csv_table(data_csv, target, seed=seed, **kwargs)
