"""I Predict Therefore I Am (Liu et al., ICLR 2026): is a next-token predictor's representation linear in the
log-posterior of latent concepts, and how close do SAEs come to the supervised concept extractor?

Steps, each a function the notebook calls (spec 14, section 8.5):

1. :func:`final_hidden`: the representation ``f(x_{<=t})``, the final hidden state before the unembedding
   (after GPT-2's ``ln_f``), at every prefix position; :func:`rows` flattens the positions analysed.
2. :func:`concept_targets`: the candidate explanations of ``f`` from the world's exact posteriors: ``L`` =
   ``log p(c|x)`` (clipped), ``P`` = ``p(c|x)``, the MAP one-hot, the true ``c`` (one-hot of its
   configuration) and the per-concept log-odds ``ell``.
3. :func:`regression_table`: held-out R² of the linear regression ``f ~ A target + b`` for each target,
   for the trained and an untrained model (the theory says ``L`` explains ``f`` best).
4. :func:`log_odds_probes`: ridge probes ``ell_i ~ W_i f`` (weights and held-out R²).
5. :func:`concept_directions`: ``A_s`` = mean ``f(c_s=1) - f(c_s=0)`` over counterfactual pairs;
   :func:`wa_matrix` and :func:`offdiag_ratio`: the ``W A ≈ diagonal`` check.
6. :class:`StructuredSAE` [recon] and :func:`train_saes`: an L1-SAE, a TopK-SAE and the structured SAE on
   ``f``; :func:`sae_mcc` scores their latents against ``ell`` with the mean correlation coefficient, and
   :func:`supervised_mcc` gives the supervised upper bound.

:func:`explain` is the entry point: it chains the steps on held-out samples of the world and returns a
:class:`ConceptStudy` with every figure the notebook reports.

The structured SAE's exact form is not in the paper's abstract: the one here (a linear SEM over the
latents) is the spec's reconstruction and is marked as such wherever it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import Ridge
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.interventions.probes import regress_r2
from xattr_nb.metrics import mcc
from xattr_nb.models.concept_recipes import lm_inputs
from xattr_nb.models.io import check_model, device_of
from xattr_nb.models.sae import L1SAE, TopKSAE, train_sae
from xattr_nb.worlds.concepts import ConceptLVM

__all__ = [
    "CONCEPT_WORD_PAIRS",
    "ConceptStudy",
    "StructuredSAE",
    "concept_directions",
    "concept_targets",
    "explain",
    "final_hidden",
    "log_odds_probes",
    "offdiag_ratio",
    "regression_table",
    "rows",
    "sae_mcc",
    "sae_seed_table",
    "sparsity",
    "supervised_mcc",
    "text_concept_check",
    "train_saes",
    "true_flip_effects",
    "wa_matrix",
]

TARGETS = ("L", "P", "MAP", "c")


@torch.no_grad()
def final_hidden(model: nn.Module, tokens: Any, vocab_size: int, *, batch_size: int = 1024) -> torch.Tensor:
    """``f`` ``[N, T+1, D]``: the last hidden state (after the final layer norm, i.e. what the unembedding reads)
    at positions ``t = 0..T`` of ``[BOS] x_1..x_T``; position ``t`` has read the prefix ``x_{<=t}``."""
    check_model(model)
    ids = lm_inputs(tokens, vocab_size)
    batch_size = check_int(batch_size, "batch_size", low=1)
    device = device_of(model)
    out = [
        model(input_ids=chunk.to(device), output_hidden_states=True).hidden_states[-1].float().cpu()
        for chunk in ids.split(batch_size)
    ]
    return torch.cat(out)


def rows(x: Any, t_min: int, t_max: int | None = None) -> torch.Tensor:
    """Flatten positions ``t_min..t_max`` (inclusive) of ``x`` ``[N, T+1, ...]`` into rows ``[N * n_pos, ...]``."""
    x = check_tensor(x, "x", finite=False, layout="[N, T+1, ...]")
    if x.ndim < 2:
        raise InputError(f"`x` must have a position axis: [N, T+1, ...]; got shape {tuple(x.shape)}")
    t_max = x.shape[1] - 1 if t_max is None else t_max
    t_min = check_int(t_min, "t_min", low=0, high=x.shape[1] - 1)
    t_max = check_int(t_max, "t_max", low=t_min, high=x.shape[1] - 1)
    sel = x[:, t_min : t_max + 1]
    return sel.reshape(-1, *sel.shape[2:])


def concept_targets(world: ConceptLVM, tokens: Any, concepts_config: Any, *, clip: float = 1e-6) -> dict[str, Any]:
    """The explanations of ``f`` compared by the regression test, each ``[N, T+1, ...]`` (position ``t`` = prefix
    ``x_{<=t}``):

    - ``L``: ``log p(c|x)`` over the ``K`` configurations, clipped below at ``log(clip)`` (the theory's target);
    - ``P``: ``p(c|x)``; ``MAP``: one-hot of the MAP configuration; ``c``: one-hot of the true configuration
      (``concepts_config`` ``[N]``, e.g. ``ConceptData.config``), the same at every position;
    - ``next``: the Bayes-optimal next-token log-distribution ``log sum_c p(x|c) p(c|x)`` ``[N, T+1, V]``,
      what an ideal predictor's logits compute (a ceiling for any target of the regression test);
    - ``ell``: the per-concept log-odds ``[N, T+1, m]`` (unclipped: they are finite).
    """
    if not isinstance(world, ConceptLVM):
        raise InputError(f"`world` must be a ConceptLVM (xattr_nb.worlds.concepts); got {type(world).__name__}")
    clip = check_float(clip, "clip", low=0.0, high=1.0)
    if clip <= 0.0:
        raise InputError("`clip` must be > 0 (log 0 is -inf)")
    lp = world.exact_log_posterior(tokens)
    cfg = check_tensor(concepts_config, "concepts_config", ndim=1, dtype="int", layout="[N]")
    if cfg.shape[0] != lp.shape[0]:
        raise InputError(f"`concepts_config` has {cfg.shape[0]} entries but `tokens` has {lp.shape[0]} rows")
    k = world.n_configs
    one_hot = nn.functional.one_hot
    return {
        "L": lp.clamp_min(float(np.log(clip))),
        "P": world.posterior(lp),
        "MAP": one_hot(world.map_config(lp), k).float(),
        "c": one_hot(cfg.long(), k).float()[:, None].expand(-1, lp.shape[1], -1),
        "next": world.bayes_next_token(lp),
        "ell": world.concept_log_odds(lp),
    }


def regression_table(
    f_train: dict[str, torch.Tensor],
    f_test: dict[str, torch.Tensor],
    targets_train: dict[str, torch.Tensor],
    targets_test: dict[str, torch.Tensor],
    *,
    names: tuple[str, ...] = TARGETS,
    ridge: float = 1e-3,
) -> pd.DataFrame:
    """Held-out R² of ``f ~ A target + b`` (ridge with intercept; variance-weighted over f's dimensions).

    ``f_train``/``f_test``: ``{model_name: rows [n, D]}`` (e.g. trained and untrained); ``targets_*``:
    ``{target_name: rows [n, ·]}``. Returns one row per (model, target) with ``r2``.
    """
    out = []
    for model_name, ftr in f_train.items():
        if model_name not in f_test:
            raise InputError(f"`f_test` lacks the model {model_name!r} of `f_train`")
        for name in names:
            if name not in targets_train or name not in targets_test:
                raise InputError(f"target {name!r} missing; have {sorted(targets_train)}")
            r2 = regress_r2(targets_train[name], ftr, X_test=targets_test[name], Y_test=f_test[model_name], ridge=ridge)
            out.append({"model": model_name, "target": name, "r2": float(r2)})
    return pd.DataFrame(out)


def log_odds_probes(f_train: Any, ell_train: Any, f_test: Any, ell_test: Any, *, ridge: float = 1e-3) -> dict[str, Any]:
    """Ridge probes ``ell_i ≈ W_i f + b_i``: ``W`` ``[m, D]``, ``b`` ``[m]``, held-out ``r2`` ``[m]`` and the test
    predictions ``pred`` ``[n_test, m]`` (the supervised concept extractor)."""
    ftr = check_tensor(f_train, "f_train", ndim=2, layout="[n, D]").double().numpy()
    fte = check_tensor(f_test, "f_test", ndim=2, layout="[n, D]").double().numpy()
    ltr = check_tensor(ell_train, "ell_train", ndim=2, layout="[n, m]").double().numpy()
    lte = check_tensor(ell_test, "ell_test", ndim=2, layout="[n, m]").double().numpy()
    if len(ftr) != len(ltr) or len(fte) != len(lte):
        raise InputError("`f_*` and `ell_*` must have the same rows")
    reg = Ridge(alpha=check_float(ridge, "ridge", low=0.0)).fit(ftr, ltr)
    pred = reg.predict(fte)
    r2 = 1 - ((lte - pred) ** 2).sum(0) / ((lte - lte.mean(0)) ** 2).sum(0)
    return {
        "W": torch.as_tensor(reg.coef_, dtype=torch.float32),
        "b": torch.as_tensor(reg.intercept_, dtype=torch.float32),
        "r2": torch.as_tensor(r2, dtype=torch.float32),
        "pred": torch.as_tensor(pred, dtype=torch.float32),
    }


def concept_directions(
    model: nn.Module, world: ConceptLVM, *, n_pairs: int = 1000, t_min: int = 2, t_max: int | None = None, seed: int = 0
) -> torch.Tensor:
    """``A`` ``[D, m]``: column ``s`` is the mean of ``f(c_s = 1) - f(c_s = 0)`` over ``n_pairs`` counterfactual
    pairs (only ``c_s`` differs; common random numbers) and the positions ``t_min..t_max``."""
    n_pairs, seed = check_int(n_pairs, "n_pairs", low=1), check_int(seed, "seed", low=0)
    cols = []
    for s in range(world.m):
        base, flip = world.counterfactual_pairs(n_pairs, s, seed=seed + s)
        sign = (flip.concepts[:, s] - base.concepts[:, s]).float()  # +1 where the flip turned c_s on
        diff = final_hidden(model, flip.tokens, world.vocab_size) - final_hidden(model, base.tokens, world.vocab_size)
        diff = diff * sign[:, None, None]
        cols.append(rows(diff, t_min, t_max).mean(0))
    return torch.stack(cols, 1)


def true_flip_effects(
    world: ConceptLVM, *, n_pairs: int = 1000, t_min: int = 2, t_max: int | None = None, seed: int = 0
) -> torch.Tensor:
    """``[m, m]``: entry ``(i, s)`` is the mean change of the exact log-odds ``ell_i`` when ``c_s`` turns on in the
    same counterfactual pairs as :func:`concept_directions`: what ``W A`` would be for a perfect probe."""
    n_pairs, seed = check_int(n_pairs, "n_pairs", low=1), check_int(seed, "seed", low=0)
    cols = []
    for s in range(world.m):
        base, flip = world.counterfactual_pairs(n_pairs, s, seed=seed + s)
        sign = (flip.concepts[:, s] - base.concepts[:, s]).float()
        ell = world.concept_log_odds(world.exact_log_posterior(flip.tokens))
        ell = ell - world.concept_log_odds(world.exact_log_posterior(base.tokens))
        cols.append(rows(ell * sign[:, None, None], t_min, t_max).mean(0))
    return torch.stack(cols, 1)


def wa_matrix(W: Any, A: Any) -> torch.Tensor:
    """``W A`` ``[m, m]``: entry ``(i, s)`` = how much the probe of concept ``i`` moves along concept ``s``'s direction."""
    W = check_tensor(W, "W", ndim=2, dtype="float", layout="[m, D]")
    A = check_tensor(A, "A", ndim=2, dtype="float", layout="[D, m]")
    if W.shape[1] != A.shape[0] or W.shape[0] != A.shape[1]:
        raise InputError(f"`W` [m, D] and `A` [D, m] do not fit: {tuple(W.shape)} and {tuple(A.shape)}")
    return W.float() @ A.float()


def offdiag_ratio(M: Any) -> float:
    """mean |off-diagonal| / mean |diagonal| of a square matrix (0 = diagonal; the spec's check is ≤ 0.3)."""
    M = check_tensor(M, "M", ndim=2, dtype="float", layout="[m, m]")
    if M.shape[0] != M.shape[1] or M.shape[0] < 2:
        raise InputError(f"`M` must be square with at least 2 rows; got {tuple(M.shape)}")
    eye = torch.eye(M.shape[0], dtype=torch.bool)
    return float(M[~eye].abs().mean() / M[eye].abs().mean().clamp_min(1e-12))


class StructuredSAE(L1SAE):
    """[recon] A sparse autoencoder whose latents follow a linear structural equation model.

    The paper motivates an SAE that "enforces dependence among latent concepts in addition to promoting
    sparsity"; its equation was not retrieved, so this is the spec's reconstruction (section 8.2):
    exogenous codes ``eps = ReLU((x - b_dec) W_enc + b_enc)`` are sparse (L1), the latents are
    ``z = B z + eps``, i.e. ``z = (I - B)^{-1} eps`` (a latent is its own sparse cause plus a weighted sum of
    other latents), and ``x_hat = z W_dec + b_dec`` with unit-norm decoder rows. ``structure="lower"``
    fixes a latent order (``B`` strictly lower-triangular, so ``I - B`` is always invertible);
    ``"notears"`` learns a full ``B`` (zero diagonal) with the NOTEARS acyclicity penalty
    ``h(B) = tr(exp(B∘B)) - F``. Loss: nMSE + ``l1 ||eps||_1 + l1_B ||B||_1 (+ acyclic h(B))``.
    Written by hand because no maintained library offers this form. It subclasses :class:`L1SAE` so
    the shared :func:`~xattr_nb.models.sae.train_sae` trains it (decoder rows renormalised each step).
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        *,
        l1: float = 1e-2,
        l1_B: float = 1e-3,
        structure: str = "lower",
        acyclic: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(d_in, d_hidden, l1=l1, seed=seed)
        self.structure = check_choice(structure, ("lower", "notears"), "structure")
        self.l1_B = check_float(l1_B, "l1_B", low=0.0)
        self.acyclic = check_float(acyclic, "acyclic", low=0.0)
        self.B_raw = nn.Parameter(torch.zeros(d_hidden, d_hidden))
        keep = torch.ones(d_hidden, d_hidden).tril(-1) if structure == "lower" else 1 - torch.eye(d_hidden)
        self.register_buffer("B_mask", keep)

    @property
    def B(self) -> torch.Tensor:
        """``[F, F]``: ``B[j, i]`` is the weight of latent ``i`` in latent ``j``'s structural equation."""
        return self.B_raw * self.B_mask

    def exogenous(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse exogenous codes ``eps`` ``[N, F]``."""
        return torch.relu(self.encode_pre(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latents ``z = (I - B)^{-1} eps`` ``[N, F]`` (row form: ``z^T = eps^T (I - B)^{-T}``)."""
        eye = torch.eye(self.d_hidden, dtype=self.B_raw.dtype, device=self.B_raw.device)
        return torch.linalg.solve(eye - self.B, self.exogenous(x).T).T

    def extra_loss(self, a: torch.Tensor) -> torch.Tensor:
        eps = a - a @ self.B.T  # eps = (I - B) z, recovered from the latents
        loss = self.l1 * eps.abs().sum(-1).mean() + self.l1_B * self.B.abs().sum()
        if self.structure == "notears":
            loss = loss + self.acyclic * (torch.linalg.matrix_exp(self.B * self.B).trace() - self.d_hidden)
        return loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_B={self.l1_B}, structure={self.structure!r}"


def train_saes(
    acts: Any,
    *,
    width: int = 16,
    k: int = 3,
    l1: float = 1e-2,
    l1_B: float = 1e-3,
    structured: bool = True,
    structure: str = "lower",
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, nn.Module]:
    """Train the L1-SAE, the TopK-SAE (``k``) and, when ``structured``, the [recon] structured SAE on ``acts``."""
    acts = check_tensor(acts, "acts", ndim=2, dtype="float", layout="[n, D]")
    width, seed = check_int(width, "width", low=1), check_int(seed, "seed", low=0)
    d = acts.shape[1]
    saes: dict[str, nn.Module] = {
        "l1": L1SAE(d, width, l1=l1, seed=seed),
        "topk": TopKSAE(d, width, k, tied=False, seed=seed),
    }
    if structured:
        saes["structured"] = StructuredSAE(d, width, l1=l1, l1_B=l1_B, structure=structure, seed=seed)
    for sae in saes.values():
        train_sae(sae, acts, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, show_progress=show_progress)
    return saes


def sae_seed_table(acts_train: Any, acts_test: Any, ell_test: Any, seeds: Any, **train_kw: Any) -> pd.DataFrame:
    """The SAE comparison over SAE seeds: :func:`train_saes` on ``acts_train`` once per seed in ``seeds``,
    each dictionary scored by :func:`sae_mcc` on ``acts_test`` against ``ell_test``.

    Returns one row per seed (index ``seed``) and one column per dictionary (``l1``, ``topk`` and, when
    ``structured``, ``structured``) holding the held-out MCC, then one ``<name>_L0`` column per dictionary
    with its mean active codes on ``acts_test`` (:func:`sparsity`). ``train_kw`` goes to :func:`train_saes`
    (``width``, ``k``, ``l1``, ``epochs``, ...). One seed's ranking of the dictionaries can flip at the
    next; this table is what a comparison should be read from.
    """
    acts_train = check_tensor(acts_train, "acts_train", ndim=2, dtype="float", layout="[n, D]")
    acts_test = check_tensor(acts_test, "acts_test", ndim=2, dtype="float", layout="[n, D]")
    if acts_test.shape[1] != acts_train.shape[1]:
        raise InputError(f"`acts_test` has {acts_test.shape[1]} features but `acts_train` has {acts_train.shape[1]}")
    ell_test = check_tensor(ell_test, "ell_test", ndim=2, layout="[n, m]")
    if ell_test.shape[0] != acts_test.shape[0]:
        raise InputError(f"`ell_test` has {ell_test.shape[0]} rows but `acts_test` has {acts_test.shape[0]}")
    if isinstance(seeds, int) or not hasattr(seeds, "__iter__"):
        raise InputError(f"`seeds` must be a list of non-negative ints; got {seeds!r}")
    seeds = [check_int(s, "seeds[]", low=0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"`seeds` must be a non-empty list of distinct ints; got {seeds!r}")
    rows = {}
    for s in seeds:
        saes = train_saes(acts_train, seed=s, **train_kw)
        rows[s] = {name: sae_mcc(sae, acts_test, ell_test) for name, sae in saes.items()}
        rows[s] |= {f"{name}_L0": sparsity(sae, acts_test) for name, sae in saes.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")


@torch.no_grad()
def sparsity(sae: nn.Module, acts: Any) -> float:
    """Mean number of active codes per row: the latents of an L1/TopK SAE, the exogenous codes ``eps`` of a
    :class:`StructuredSAE` (its latents ``z`` mix the codes through ``B`` and are not sparse by design)."""
    acts = check_tensor(acts, "acts", ndim=2, dtype="float", layout="[n, D]")
    codes = sae.exogenous(acts) if isinstance(sae, StructuredSAE) else sae.encode(acts)
    return float((codes > 0).float().sum(-1).mean())


@torch.no_grad()
def sae_mcc(sae: nn.Module, acts: Any, ell: Any) -> float:
    """MCC between the SAE's latents on ``acts`` ``[n, D]`` and the concept log-odds ``ell`` ``[n, m]``."""
    acts = check_tensor(acts, "acts", ndim=2, dtype="float", layout="[n, D]")
    return mcc(sae.encode(acts), ell)


def supervised_mcc(pred: Any, ell: Any) -> float:
    """MCC of the supervised extractor's held-out predictions ``pred`` ``[n, m]`` (:func:`log_odds_probes`) with
    ``ell``: the upper bound an unsupervised dictionary is compared with."""
    return mcc(pred, ell)


@dataclass
class ConceptStudy:
    """What :func:`explain` measured on held-out prefixes.

    ``r2``: held-out R² of ``f ~ A target + b`` (rows: ``trained``/``untrained``, columns: targets);
    ``probe_r2`` ``[m]``: R² of the log-odds probes; ``WA``, ``exact`` ``[m, m]``: probes × concept directions and
    the exact flip effects, ``offdiag_ratio`` (of ``WA``), ``offdiag_ratio_exact`` and ``wa_rel_error``
    (``‖WA − exact‖ / ‖exact‖``); ``mcc``: MCC with the log-odds of the supervised extractor and of each SAE;
    ``sparsity``: each SAE's mean L0; ``saes`` and ``probes`` (weights, predictions) for further use.
    """

    r2: pd.DataFrame
    probe_r2: torch.Tensor
    WA: torch.Tensor
    exact: torch.Tensor
    offdiag_ratio: float
    offdiag_ratio_exact: float
    wa_rel_error: float
    mcc: dict[str, float]
    sparsity: dict[str, float]
    saes: dict[str, nn.Module] = field(repr=False)
    probes: dict[str, Any] = field(repr=False)


def explain(
    model: nn.Module,
    world: ConceptLVM,
    *,
    untrained: nn.Module | None = None,
    n_train: int = 4000,
    n_test: int = 1000,
    t_min: int = 2,
    clip: float = 1e-6,
    n_pairs: int = 1000,
    sae_width: int = 16,
    k: int = 3,
    l1: float = 0.015,
    l1_B: float = 1e-3,
    structured: bool = True,
    structure: str = "lower",
    sae_epochs: int = 20,
    seed: int = 0,
) -> ConceptStudy:
    """The whole study in one call (steps 1-6 of the module docstring) on the world's own samples.

    Training and test sequences are drawn with seeds ``1000 + seed`` and ``2000 + seed``; prefixes
    ``t_min..seq_len - 1`` are analysed (the last prefix has no next token). ``untrained``: a model of the same
    architecture with random weights, the contrast of the regression test (only ``trained`` is reported when None).
    """
    check_model(model)
    if not isinstance(world, ConceptLVM):
        raise InputError(f"`world` must be a ConceptLVM (xattr_nb.worlds.concepts); got {type(world).__name__}")
    n_train, n_test = check_int(n_train, "n_train", low=2), check_int(n_test, "n_test", low=2)
    seed = check_int(seed, "seed", low=0)
    t_max = world.seq_len - 1
    train, test = world.sample(n_train, seed=1000 + seed), world.sample(n_test, seed=2000 + seed)
    nets = {"trained": model} if untrained is None else {"trained": model, "untrained": untrained}
    Y, F = {}, {}
    for split, d in (("train", train), ("test", test)):
        Y[split] = {n: rows(v, t_min, t_max) for n, v in concept_targets(world, d.tokens, d.config, clip=clip).items()}
        F[split] = {n: rows(final_hidden(net, d.tokens, world.vocab_size), t_min, t_max) for n, net in nets.items()}
    tab = regression_table(F["train"], F["test"], Y["train"], Y["test"], names=(*TARGETS, "next"))
    r2 = tab.pivot(index="model", columns="target", values="r2")[[*TARGETS, "next"]]
    probes = log_odds_probes(F["train"]["trained"], Y["train"]["ell"], F["test"]["trained"], Y["test"]["ell"])
    A = concept_directions(model, world, n_pairs=n_pairs, t_min=t_min, t_max=t_max, seed=seed)
    WA = wa_matrix(probes["W"], A)
    exact = true_flip_effects(world, n_pairs=n_pairs, t_min=t_min, t_max=t_max, seed=seed)
    saes = train_saes(F["train"]["trained"], width=sae_width, k=k, l1=l1, l1_B=l1_B, structured=structured,
                      structure=structure, epochs=sae_epochs, seed=seed)  # fmt: skip
    mccs = {"supervised": supervised_mcc(probes["pred"], Y["test"]["ell"])}
    mccs.update({name: sae_mcc(sae, F["test"]["trained"], Y["test"]["ell"]) for name, sae in saes.items()})
    return ConceptStudy(
        r2=r2,
        probe_r2=probes["r2"],
        WA=WA,
        exact=exact,
        offdiag_ratio=offdiag_ratio(WA),
        offdiag_ratio_exact=offdiag_ratio(exact),
        wa_rel_error=float((WA - exact).norm() / exact.norm()),
        mcc=mccs,
        sparsity={name: sparsity(sae, F["test"]["trained"]) for name, sae in saes.items()},
        saes=saes,
        probes=probes,
    )


# ----------------------------------------------------------------------------------------------
# Full scale: the A W check on a pretrained LM from counterfactual word pairs.

CONCEPT_WORD_PAIRS: dict[str, list[tuple[str, str]]] = {
    "male->female": [("he", "she"), ("man", "woman"), ("king", "queen"), ("boy", "girl"), ("father", "mother"),
                     ("son", "daughter"), ("brother", "sister"), ("husband", "wife"), ("uncle", "aunt"),
                     ("actor", "actress")],
    "english->french": [("house", "maison"), ("water", "eau"), ("cat", "chat"), ("book", "livre"),
                        ("tree", "arbre"), ("sun", "soleil"), ("city", "ville"), ("bread", "pain"),
                        ("friend", "ami"), ("night", "nuit")],
}  # fmt: skip


@torch.no_grad()
def _word_states(model: nn.Module, tokenizer: Any, words: list[str]) -> torch.Tensor:
    device = device_of(model)
    out = []
    for w in words:
        ids = tokenizer(" " + w, return_tensors="pt")["input_ids"].to(device)
        out.append(model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].float().cpu())
    return torch.stack(out)


def text_concept_check(
    model: nn.Module, tokenizer: Any, pairs: dict[str, list[tuple[str, str]]] | None = None, *, ridge: float = 1.0
) -> dict[str, Any]:
    """The ``W A`` check on a real LM: ``A_s`` = mean difference of the last-token final hidden state over the
    counterfactual word pairs of concept ``s``; ``W_s`` = a ridge probe of the pair side (0/1) from the same
    states. Returns ``A`` ``[D, m]``, ``W`` ``[m, D]``, ``WA`` and its off-diagonal ratio."""
    pairs = CONCEPT_WORD_PAIRS if pairs is None else pairs
    if not isinstance(pairs, dict) or len(pairs) < 2 or any(len(v) < 2 for v in pairs.values()):
        raise InputError("`pairs` must map at least 2 concept names to lists of >= 2 (word, counterfactual) pairs")
    A, W = [], []
    for ps in pairs.values():
        lo, hi = _word_states(model, tokenizer, [a for a, _ in ps]), _word_states(model, tokenizer, [b for _, b in ps])
        A.append((hi - lo).mean(0))
        x = torch.cat([lo, hi]).double().numpy()
        y = np.r_[np.zeros(len(ps)), np.ones(len(ps))]
        W.append(torch.as_tensor(Ridge(alpha=ridge).fit(x, y).coef_, dtype=torch.float32))
    A_m, W_m = torch.stack(A, 1), torch.stack(W)
    M = wa_matrix(W_m, A_m)
    return {"A": A_m, "W": W_m, "WA": M, "offdiag_ratio": offdiag_ratio(M), "concepts": list(pairs)}
