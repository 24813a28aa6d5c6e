"""Reading a model's residual stream: pooled hidden states per layer, linear probes, regressions.

- :func:`hidden_states`: the residual stream after each block (GPT-2, BERT/MiniLM, our tiny models),
  pooled over tokens or not, recorded by hooks on the blocks (:func:`~xattr_nb.interventions.block_names`).
- :func:`layerwise_probe`: a cross-validated logistic-regression probe per layer (AUC, accuracy).
- :func:`regress_r2`: held-out R² of a ridge regression from representations to targets.
- :func:`diff_of_means`: the difference of class means, the usual steering / concept direction.

scikit-learn does the fitting (``LogisticRegression``, ``Ridge``, cross-validation); this module only
collects activations and keeps every probe's protocol (scaling, folds, seeds) the same across notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_numeric, check_tensor
from xattr_nb.interventions.hooks import block_names, run_with_cache
from xattr_nb.models.io import device_of

__all__ = ["diff_of_means", "hidden_states", "layerwise_probe", "regress_r2"]


def _pool(h: torch.Tensor, keep: torch.Tensor, pool: str | None) -> torch.Tensor:
    if pool is None:
        return h
    if pool == "mean":
        w = keep.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)
    # "last": the last kept position of each row (works with left or right padding)
    pos = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    last = torch.where(keep, pos, torch.full_like(pos, -1)).max(1).values
    return h[torch.arange(h.shape[0], device=h.device), last]


@torch.no_grad()
def hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layers: Sequence[int] | None = None,
    pool: str | None = "mean",
    exclude_mask: torch.Tensor | None = None,
    batch_size: int = 256,
) -> dict[int, torch.Tensor]:
    """The residual stream after block ``l`` (``transformer.h[l]`` output for GPT-2, ``encoder.layer[l]`` for
    BERT), for each ``l`` in ``layers`` (default: all blocks).

    ``pool="mean"`` averages over the tokens where ``attention_mask`` is 1 and ``exclude_mask`` is 0
    (e.g. special or template tokens) -> ``[N, D]``; ``"last"`` takes the last such token; ``None`` keeps
    ``[N, T, D]``. The forward runs in chunks of ``batch_size`` rows.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, layout="[N, T]")
    if ids.is_floating_point():
        raise InputError(f"`input_ids` must hold integer token ids; got dtype {ids.dtype}")
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask
    mask = check_tensor(mask, "attention_mask", ndim=2).bool()
    if mask.shape != ids.shape:
        raise InputError(
            f"`attention_mask` must have the shape of `input_ids` {tuple(ids.shape)}; got {tuple(mask.shape)}"
        )
    keep = mask.clone()
    if exclude_mask is not None:
        ex = check_tensor(exclude_mask, "exclude_mask", ndim=2).bool()
        if ex.shape != ids.shape:
            raise InputError(
                f"`exclude_mask` must have the shape of `input_ids` {tuple(ids.shape)}; got {tuple(ex.shape)}"
            )
        keep &= ~ex
    if not keep.any(1).all():
        bad = int(torch.nonzero(~keep.any(1))[0])
        raise InputError(f"row {bad} has no token left to pool (attention_mask and exclude_mask remove all of them)")
    check_choice(pool, ("mean", "last", None), "pool")
    names = block_names(model)
    chosen = list(range(len(names))) if layers is None else [int(v) for v in layers]
    for layer in chosen:
        check_int(layer, "layers[...]", low=0, high=len(names) - 1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    device = device_of(model)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in chosen}
    for start in range(0, len(ids), batch_size):
        sl = slice(start, start + batch_size)
        _, cache = run_with_cache(
            model,
            input_ids=ids[sl].to(device),
            attention_mask=mask[sl].long().to(device),
            names=[names[layer] for layer in chosen],
        )
        for layer in chosen:
            out[layer].append(_pool(cache[names[layer]].float().cpu(), keep[sl], pool))
    return {layer: torch.cat(v) for layer, v in out.items()}


def _labels(y: Any, n: int) -> np.ndarray:
    arr = check_numeric(y, "y", finite=False).detach().cpu().numpy()
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"`y` must be a vector with one label per row ({n}); got shape {arr.shape}")
    if len(np.unique(arr)) != 2:
        raise InputError(f"`y` must hold exactly two classes; got {sorted(np.unique(arr).tolist())[:5]}")
    return arr


def _features(x: Any, name: str) -> np.ndarray:
    arr = check_numeric(x, name, finite=False).detach().cpu().double().numpy()
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or len(arr) < 2:
        raise InputError(f"`{name}` must be a matrix [N, D] with N >= 2; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"`{name}` holds NaN or infinite values")
    return arr


def layerwise_probe(
    acts: Mapping[int, Any],
    y: Any,
    *,
    cv: int = 5,
    C: float = 1.0,
    seed: int = 0,
    groups: Any = None,
) -> pd.DataFrame:
    """A logistic-regression probe (standardised features) per layer, scored by ``cv``-fold cross-validation.

    ``acts``: ``{layer: [N, D]}`` (e.g. from :func:`hidden_states`); ``y``: binary labels ``[N]``;
    ``groups``: optional group ids so that no group (e.g. a template) is in both train and test folds.
    Returns one row per layer: ``layer, auc, auc_sd, accuracy`` (means over folds).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(acts, Mapping) or not acts:
        raise InputError("`acts` must be a non-empty dict {layer: activations [N, D]}")
    cv = check_int(cv, "cv", low=2)
    C = check_float(C, "C", low=0.0)
    rows = []
    for layer, x in acts.items():
        X = _features(x, f"acts[{layer}]")
        labels = _labels(y, len(X))
        if groups is None:
            split = StratifiedKFold(cv, shuffle=True, random_state=seed)
            g = None
        else:
            g = np.asarray(groups)
            if len(g) != len(X):
                raise InputError(f"`groups` must have one id per row ({len(X)}); got {len(g)}")
            split = GroupKFold(cv)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        res = cross_validate(probe, X, labels, cv=split, groups=g, scoring=("roc_auc", "accuracy"))
        rows.append(
            {
                "layer": layer,
                "auc": float(res["test_roc_auc"].mean()),
                "auc_sd": float(res["test_roc_auc"].std()),
                "accuracy": float(res["test_accuracy"].mean()),
            }
        )
    return pd.DataFrame(rows)


def regress_r2(
    X: Any,
    Y: Any,
    *,
    X_test: Any = None,
    Y_test: Any = None,
    test_frac: float = 0.2,
    ridge: float = 1e-3,
    seed: int = 0,
    per_target: bool = False,
) -> float | np.ndarray:
    """Held-out R² of a ridge regression ``Y ~ X`` (with intercept), fitted on train rows, scored on test rows.

    Pass ``X_test``/``Y_test``, or let a seeded split hold out ``test_frac`` of the rows. Returns the
    variance-weighted mean R² over targets, or one R² per target with ``per_target=True``.
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    X, Y = _features(X, "X"), _features(Y, "Y")
    if len(X) != len(Y):
        raise InputError(f"`X` and `Y` must have the same rows; got {len(X)} and {len(Y)}")
    ridge = check_float(ridge, "ridge", low=0.0)
    if (X_test is None) != (Y_test is None):
        raise InputError("pass both `X_test` and `Y_test`, or neither")
    if X_test is None:
        test_frac = check_float(test_frac, "test_frac", low=0.0, high=1.0)
        if not 0 < test_frac < 1:
            raise InputError(f"`test_frac` must lie strictly between 0 and 1; got {test_frac}")
        X, X_test, Y, Y_test = train_test_split(X, Y, test_size=test_frac, random_state=seed)
    else:
        X_test, Y_test = _features(X_test, "X_test"), _features(Y_test, "Y_test")
        if X_test.shape[1] != X.shape[1] or Y_test.shape[1] != Y.shape[1] or len(X_test) != len(Y_test):
            raise InputError(
                f"test data {X_test.shape}/{Y_test.shape} does not match the training data {X.shape}/{Y.shape}"
            )
    pred = Ridge(alpha=ridge).fit(X, Y).predict(X_test)
    if per_target:
        return np.asarray(r2_score(Y_test, pred, multioutput="raw_values"))
    return float(r2_score(Y_test, pred, multioutput="variance_weighted"))


def diff_of_means(acts: Any, y: Any) -> torch.Tensor:
    """``mean(acts[y == 1]) - mean(acts[y == 0])`` over rows: the difference-of-means direction ``[D]``."""
    x = check_numeric(acts, "acts", ndim=2, layout="[N, D]").float()
    labels = torch.as_tensor(_labels(y, len(x)))
    if set(labels.unique().tolist()) != {0, 1}:
        raise InputError(f"`y` must hold the labels 0 and 1; got {sorted(labels.unique().tolist())}")
    return x[labels == 1].mean(0) - x[labels == 0].mean(0)
