"""Losses shared by papers that train a model to explain itself: attribution-prior alignment.

Explanation-guided learning adds to the task loss a term that pulls the model's *own*
attribution towards a prior saying which input units should matter:

    L(θ) = CE(f_θ(x), y) + λ · D( N(s_θ(x)), N(prior) )

- :func:`token_grad_x_input`: the model's self-attribution ``s_θ`` for text models, gradient ×
  input on the input embeddings summed over the embedding dimension, computed with
  ``create_graph=True`` so the loss can be differentiated *through* the attribution (a double
  backward). Written by hand because captum's attributions are detached results, not graph nodes.
- :func:`normalize_scores`: ``N(a) = |a| / Σ|a|`` over the units a mask keeps (a distribution).
- :func:`alignment_loss`: ``D`` as the squared L2 distance (``"mse"``) or ``KL(prior ‖ N(s))``
  (``"kl"``) between the two distributions, averaged over the batch.
- :class:`PriorAlignment`: the term as an ``extra_loss`` for :func:`xattr_nb.models.fit`: it
  finds each batch row's prior by the row's token ids, so ``fit`` can shuffle freely.

Label-noise losses (ELR, paper 18):

- :func:`gce_loss` / :class:`GCELoss`: generalized cross-entropy (Zhang & Sabuncu 2018),
  ``(1 − p_y^q) / q``: cross-entropy as ``q → 0``, ``1 − p_y`` (half the MAE ``‖e_y − p‖₁``) at ``q = 1``.
- :func:`elr_regularizer` / :class:`ELRLoss`: early-learning regularization (Liu et al. 2020),
  ``CE + λ · mean log(1 − ⟨p_i, t_i⟩)`` with per-example targets ``t_i`` that are a running
  average of the model's own past predictions (``t_i ← β t_i + (1 − β) p̂_i``, once per visit).

Preference training (CREAM, paper 25):

- :func:`dpo_loss`: DPO per pair with an optional soft label ``C``:
  ``C · (−log σ(βh)) + (1 − C) · (−log σ(−βh))`` (``C = 1``: DPO);
- :func:`implicit_reward`: ``log π(y|x) − log π_ref(y|x)`` of ``N`` responses per prompt;
- :func:`kendall_consistency`: ``(τ + 1) / 2`` between two reward rankings of the same responses;
- :func:`best_worst_pairs`: the highest- and lowest-reward response per prompt.

Used by CAP (paper 09); written generally for the later papers that align attributions (CFT,
COMET): any model with ``get_input_embeddings()`` whose forward takes ``(input_ids,
attention_mask)`` and returns logits ``[B, C]`` (or an HF output with ``.logits``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.io import logits_of

__all__ = [
    "ELRLoss",
    "GCELoss",
    "PriorAlignment",
    "alignment_loss",
    "best_worst_pairs",
    "dpo_loss",
    "elr_regularizer",
    "gce_loss",
    "implicit_reward",
    "kendall_consistency",
    "normalize_scores",
    "token_grad_x_input",
]


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
    m = check_tensor(mask, name, shape=shape, layout="[B, T]")
    if m.is_floating_point():
        raise InputError(f"`{name}` must be bool or 0/1 integers; got {m.dtype}")
    m = m.bool()
    if not bool(m.any(1).all()):
        raise InputError(f"`{name}` has a row that keeps no unit")
    return m


def token_grad_x_input(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient × input of the ``target`` logit on the input embeddings, per token: ``[B, T]``.

    ``s_t = Σ_d e_{t,d} · ∂f_y/∂e_{t,d}`` where ``e_t`` is token t's word embedding (the output of
    ``model.get_input_embeddings()``, read by a forward hook removed afterwards). With
    ``create_graph=True`` the scores stay in the autograd graph, so a loss on them trains the
    model (the cost: one forward plus a double backward). Returns ``(scores, logits)``: the
    logits of the same forward, so the task loss needs no second forward. Padding positions are
    zeroed. Matches captum's ``LayerGradientXActivation`` on the embedding layer.
    """
    if not isinstance(model, nn.Module) or not callable(getattr(model, "get_input_embeddings", None)):
        raise InputError("`model` must be a torch module with get_input_embeddings()")
    emb = model.get_input_embeddings()
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
    n_rows = int(getattr(emb, "num_embeddings", 0) or emb.weight.shape[0])
    if int(ids.min()) < 0 or int(ids.max()) >= n_rows:
        raise InputError(f"`input_ids` must lie in [0, {n_rows}) (the model's embedding rows)")
    mask = _check_mask(torch.ones_like(ids) if attention_mask is None else attention_mask, tuple(ids.shape),
                       "attention_mask")  # fmt: skip
    tgt = check_tensor(torch.as_tensor(target), "target", shape=(ids.shape[0],), dtype="int", layout="[B]")
    if not isinstance(create_graph, bool):
        raise InputError(f"`create_graph` must be a bool; got {type(create_graph).__name__}")
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        if not out.requires_grad:  # frozen embeddings: make the output a leaf we can differentiate
            out = out.detach().requires_grad_(True)
        store["e"] = out
        return out

    handle = emb.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = logits_of(model(ids, mask.long()), ndim=2)
    finally:
        handle.remove()
    if "e" not in store:
        raise InputError("the model's forward did not call its input embedding layer")
    if int(tgt.min()) < 0 or int(tgt.max()) >= logits.shape[1]:
        raise InputError(f"`target` must lie in [0, {logits.shape[1]}); got [{int(tgt.min())}, {int(tgt.max())}]")
    e = store["e"]
    picked = logits.gather(1, tgt.to(logits.device)[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, e, create_graph=create_graph)
    scores = (grad * e).sum(-1).masked_fill(~mask.to(e.device), 0.0)
    return scores, logits


def normalize_scores(scores: torch.Tensor, mask: torch.Tensor | None = None, *, eps: float = 1e-12) -> torch.Tensor:
    """``N(a) = |a| / Σ_t |a_t|`` over the kept units (mask ``True``); 0 elsewhere. Rows sum to 1.

    A row whose kept scores are all 0 becomes uniform over its kept units (no direction to
    prefer), so the result is always a distribution. Differentiable.
    """
    s = check_tensor(scores, "scores", ndim=2, dtype="float", layout="[B, T]")
    m = torch.ones_like(s, dtype=torch.bool) if mask is None else _check_mask(mask, tuple(s.shape), "mask")
    m = m.to(s.device)
    a = s.abs().masked_fill(~m, 0.0)
    total = a.sum(1, keepdim=True)
    uniform = m.float() / m.sum(1, keepdim=True)
    return torch.where(total > eps, a / total.clamp_min(eps), uniform)


def alignment_loss(
    scores: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor | None = None, *, distance: str = "mse"
) -> torch.Tensor:
    """Distance between the model's normalised attribution and a prior, averaged over the batch.

    Both ``scores`` and ``prior`` (``[B, T]``, any non-negative scale for the prior) pass through
    :func:`normalize_scores` on ``mask``. ``distance="mse"``: ``Σ_t (N(s)_t − N(p)_t)²`` (the
    squared L2 distance of two distributions, in [0, 2]); ``"kl"``: ``KL(N(p) ‖ N(s))`` (the
    prior is the reference; units the prior gives no mass add nothing).
    """
    s = check_tensor(scores, "scores", ndim=2, dtype="float", layout="[B, T]")
    p = check_tensor(prior, "prior", shape=tuple(s.shape), dtype="float", layout="[B, T]")
    if bool((p < 0).any()):
        raise InputError("`prior` must be non-negative (an importance per unit)")
    distance = check_choice(distance, ("mse", "kl"), "distance")
    ns = normalize_scores(s, mask)
    np_ = normalize_scores(p.to(s.device), mask).detach()
    if distance == "mse":
        return ((ns - np_) ** 2).sum(1).mean()
    eps = 1e-8
    kl = np_ * (torch.log(np_ + eps) - torch.log(ns + eps))
    return kl.sum(1).mean()


class PriorAlignment:
    """``λ · D(N(s_θ(x)), N(prior[x]))`` as an ``extra_loss`` for :func:`xattr_nb.models.fit`.

    ``input_ids`` ``[N, T]`` and ``prior`` ``[N, T]`` are the training set's ids and priors (rows
    in the same order); ``prior_mask`` ``[N, T]`` says which tokens the prior scores (e.g. the
    words but not [CLS] or padding; default: all). Each batch row is matched to its prior by its
    exact token ids, so ``fit`` may shuffle; two training rows with equal ids must have equal
    priors. ``warmup`` ramps ``λ`` linearly from 0 over that many steps: a freshly initialised
    model has near-zero input gradients, and the normalised attribution's gradient (∝ 1/Σ|s|)
    would then swamp the task loss. Called as ``extra(model, (ids, attention_mask), y, logits)``: the self-attribution
    :func:`token_grad_x_input` of the gold class ``y`` costs one more forward and a double backward.
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        prior: torch.Tensor,
        *,
        prior_mask: torch.Tensor | None = None,
        lam: float = 1.0,
        distance: str = "mse",
        warmup: int = 0,
    ) -> None:
        ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[N, T]")
        self.prior = check_tensor(prior, "prior", shape=tuple(ids.shape), dtype="float", layout="[N, T]").detach()
        if bool((self.prior < 0).any()):
            raise InputError("`prior` must be non-negative (an importance per unit)")
        self.prior_mask = _check_mask(
            torch.ones_like(ids, dtype=torch.bool) if prior_mask is None else prior_mask, tuple(ids.shape), "prior_mask"
        )
        self.lam = check_float(lam, "lam", low=0.0)
        self.distance = check_choice(distance, ("mse", "kl"), "distance")
        self.warmup = check_int(warmup, "warmup", low=0)
        self.calls = 0
        self._row: dict[tuple[int, ...], int] = {}
        for i, r in enumerate(ids.tolist()):
            j = self._row.setdefault(tuple(r), i)
            if j != i and not torch.equal(self.prior[i], self.prior[j]):
                raise InputError(f"`input_ids` rows {j} and {i} are equal but their priors differ")
        self.width = ids.shape[1]

    def weight(self) -> float:
        """The current ``λ``: ramped linearly from 0 over the first ``warmup`` calls (steps), then ``lam``."""
        return self.lam if self.warmup == 0 else self.lam * min(1.0, self.calls / self.warmup)

    def rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index into the training set of each row of a batch (an error for an unknown row)."""
        ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
        if ids.shape[1] != self.width:
            raise InputError(f"`input_ids` must have {self.width} positions like the training ids; got {ids.shape[1]}")
        out = []
        for r in ids.tolist():
            if tuple(r) not in self._row:
                raise InputError("a batch row of `input_ids` is not among the training rows this prior was built on")
            out.append(self._row[tuple(r)])
        return torch.as_tensor(out, dtype=torch.long)

    def __call__(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor, logits: Any
    ) -> torch.Tensor:
        if not isinstance(inputs, (tuple, list)) or not 1 <= len(inputs) <= 2:
            raise InputError("`inputs` must be (input_ids,) or (input_ids, attention_mask)")
        ids = inputs[0]
        idx = self.rows(ids.cpu())
        mask = inputs[1] if len(inputs) == 2 else None
        scores, _ = token_grad_x_input(model, ids, y, attention_mask=mask, create_graph=True)
        prior, pmask = self.prior[idx].to(scores.device), self.prior_mask[idx].to(scores.device)
        self.calls += 1
        return self.weight() * alignment_loss(scores, prior, pmask, distance=self.distance)


# --------------------------------------------------------------------------------------------
# Label-noise losses: generalized cross-entropy and early-learning regularization
# --------------------------------------------------------------------------------------------


def _check_logits_labels(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, C]")
    y = check_tensor(torch.as_tensor(labels), "labels", shape=(z.shape[0],), dtype="int", layout="[B]").long()
    if int(y.min()) < 0 or int(y.max()) >= z.shape[1]:
        raise InputError(
            f"`labels` must lie in [0, {z.shape[1]}) (the logits' classes); got [{int(y.min())}, {int(y.max())}]"
        )
    return z, y.to(z.device)


def gce_loss(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalized cross-entropy ``mean_i (1 − p_{i,y_i}^q) / q`` with ``p = softmax(logits)``.

    ``q`` in (0, 1]: the limit ``q → 0`` is cross-entropy ``−log p_y``; ``q = 1`` is ``1 − p_y``,
    i.e. half the mean absolute error ``‖e_y − p‖₁`` (robust to label noise but slow to fit).
    The plain ``L_q`` loss, not the truncated variant.
    """
    z, y = _check_logits_labels(logits, labels)
    q = check_float(q, "q", low=0.0, high=1.0)
    if q == 0.0:
        raise InputError("`q` must lie in (0, 1]; q → 0 is cross-entropy: use that")
    p_y = torch.softmax(z, dim=1).gather(1, y[:, None]).squeeze(1)
    return ((1.0 - p_y.clamp_min(1e-12) ** q) / q).mean()


class GCELoss(nn.Module):
    """:func:`gce_loss` as a module: ``GCELoss(q=0.7)(logits, labels)``."""

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        q = check_float(q, "q", low=0.0, high=1.0)
        if q == 0.0:
            raise InputError("`q` must lie in (0, 1]; q → 0 is cross-entropy: use that")
        self.q = q

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return gce_loss(logits, labels, self.q)


ELR_CLAMP = 1e-4  # the official code clamps p to [1e-4, 1 - 1e-4] (keeps log(1 - <p, t>) finite)


def elr_regularizer(logits: torch.Tensor, targets: torch.Tensor, *, clamp: float = ELR_CLAMP) -> torch.Tensor:
    """ELR's term ``mean_i log(1 − ⟨p_i, t_i⟩)`` with ``p = clamp(softmax(logits), c, 1 − c)``.

    ``targets`` ``[B, C]``: non-negative rows summing to at most 1 (the running averages; 0 at
    the start), treated as constants. Minimising it pushes ``⟨p, t⟩`` up; its gradient in the
    logits (without the clamp) is ``p_k (⟨p, t⟩ − t_k) / (1 − ⟨p, t⟩)``: it raises the classes
    the target favours over the current prediction, and vanishes once ``p`` is one-hot.
    """
    z = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, C]")
    t = check_tensor(targets, "targets", shape=tuple(z.shape), dtype="float", layout="[B, C]").to(z.device).detach()
    clamp = check_float(clamp, "clamp", low=0.0, high=0.5)
    if bool((t < 0).any()) or bool((t.sum(1) > 1 + 1e-5).any()):
        raise InputError("`targets` rows must be non-negative and sum to at most 1 (averaged probabilities)")
    p = torch.softmax(z, dim=1)
    if clamp > 0:
        p = p.clamp(clamp, 1.0 - clamp)
    return torch.log(1.0 - (t * p).sum(1)).mean()


class ELRLoss(nn.Module):
    """Early-learning regularization: ``CE(z, y) + λ · mean log(1 − ⟨p_i, t_i⟩)``.

    Holds the targets ``t`` ``[n_examples, n_classes]`` (``.targets``, zeros at the start). Each
    call ``loss(idx, logits, labels)`` first updates the rows ``idx`` (the examples' indices in
    the training set, so the loader must return them) with the detached, clamped and renormalised
    prediction, ``t_i ← β t_i + (1 − β) p̂_i``, then returns the loss with the updated targets
    (the official ``elr_loss``). One call per visit: the ensemble's horizon is about ``1/(1 − β)``
    epochs when every example is visited once an epoch.
    """

    def __init__(self, n_examples: int, n_classes: int, *, lam: float = 3.0, beta: float = 0.7) -> None:
        super().__init__()
        self.n_examples = check_int(n_examples, "n_examples", low=1)
        self.n_classes = check_int(n_classes, "n_classes", low=2)
        self.lam = check_float(lam, "lam", low=0.0)
        beta = check_float(beta, "beta", low=0.0, high=1.0)
        if beta >= 1.0:
            raise InputError(f"`beta` must lie in [0, 1) (at 1 the targets never move); got {beta}")
        self.beta = beta
        self.register_buffer("targets", torch.zeros(self.n_examples, self.n_classes))
        self.last_reg = 0.0

    def update(self, idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Move the targets of ``idx`` towards the current predictions; return them ``[B, C]``."""
        z = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, C]")
        if z.shape[1] != self.n_classes:
            raise InputError(f"`logits` must have {self.n_classes} classes; got {z.shape[1]}")
        i = check_tensor(torch.as_tensor(idx), "idx", shape=(z.shape[0],), dtype="int", layout="[B]").long()
        if int(i.min()) < 0 or int(i.max()) >= self.n_examples:
            raise InputError(
                f"`idx` must lie in [0, {self.n_examples}) (training-set indices); got [{int(i.min())}, {int(i.max())}]"
            )
        if i.unique().numel() != i.numel():
            raise InputError("`idx` repeats an example within a batch; each visit must update its target once")
        i = i.to(self.targets.device)
        with torch.no_grad():
            p = torch.softmax(z.detach(), dim=1).clamp(ELR_CLAMP, 1.0 - ELR_CLAMP).to(self.targets.device)
            p = p / p.sum(1, keepdim=True)
            self.targets[i] = self.beta * self.targets[i] + (1.0 - self.beta) * p
        return self.targets[i]

    def forward(self, idx: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _check_logits_labels(logits, labels)
        t = self.update(idx, z).to(z.device)
        reg = elr_regularizer(z, t)
        self.last_reg = float(reg.detach())
        return torch.nn.functional.cross_entropy(z, y) + self.lam * reg


# --------------------------------------------------------------------------------------------
# Preference training: DPO with soft labels, implicit rewards, ranking consistency (CREAM, paper 25)
# --------------------------------------------------------------------------------------------


def dpo_loss(
    pi_chosen: torch.Tensor,
    pi_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    soft_label: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Per-pair DPO loss with an optional soft label ``C`` (CREAM's consistency-regularised DPO).

    With ``h = [log π(y⁺) − log π_ref(y⁺)] − [log π(y⁻) − log π_ref(y⁻)]`` (summed sequence
    log-probabilities, ``[B]`` each): ``L = C · (−log σ(β h)) + (1 − C) · (−log σ(−β h))``.
    ``C = 1`` (``None``) is standard DPO (Rafailov et al. 2023); its optimum is ``σ(β h) = C``, so
    ``C = 0.5`` is minimised at ``h = 0`` (label-smoothed / conservative DPO with ``ε = 1 − C``).
    ``soft_label`` is a number or a ``[B]`` tensor in ``[0, 1]``. Returns ``[B]`` (take the mean).
    """
    xs = [
        check_tensor(t, n, ndim=1, dtype="float", layout="[B]")
        for t, n in ((pi_chosen, "pi_chosen"), (pi_rejected, "pi_rejected"), (ref_chosen, "ref_chosen"),
                     (ref_rejected, "ref_rejected"))
    ]  # fmt: skip
    if len({x.shape[0] for x in xs}) != 1:
        raise InputError(f"the four log-probability tensors must have the same length; got {[x.shape[0] for x in xs]}")
    b = check_float(beta, "beta", low=0.0)
    h = (xs[0] - xs[2].to(xs[0].device)) - (xs[1] - xs[3].to(xs[0].device))
    if soft_label is None:
        return -torch.nn.functional.logsigmoid(b * h)
    if isinstance(soft_label, torch.Tensor):
        c = check_tensor(soft_label, "soft_label", shape=(h.shape[0],), dtype="float", layout="[B]").to(h)
    else:
        c = torch.full_like(h, check_float(soft_label, "soft_label"))
    if bool((c < 0).any() or (c > 1).any()):
        raise InputError("`soft_label` must lie in [0, 1]")
    return -c * torch.nn.functional.logsigmoid(b * h) - (1 - c) * torch.nn.functional.logsigmoid(-b * h)


@torch.no_grad()
def implicit_reward(
    model: nn.Module,
    ref_model: nn.Module | None,
    prompt_ids: torch.Tensor,
    resp_ids: torch.Tensor,
    *,
    length_norm: bool = False,
    batch_size: int = 1024,
) -> torch.Tensor:
    """DPO's implicit reward ``r(x, y) = log π(y|x) − log π_ref(y|x)`` of ``N`` responses per prompt.

    ``prompt_ids [P, Tp]``, ``resp_ids [P, N, Tr]`` → ``[P, N]`` (summed log-probabilities, so the
    ``β`` of DPO is left out: it does not change a ranking). ``ref_model=None`` gives ``log π(y|x)``
    alone, divided by the response length with ``length_norm=True`` (CREAM's reward of the base
    model at iteration 1).
    """
    from xattr_nb.models.policy import sequence_logprob

    p = check_tensor(prompt_ids, "prompt_ids", ndim=2, layout="[P, Tp]")
    r = check_tensor(resp_ids, "resp_ids", ndim=3, layout="[P, N, Tr]")
    if r.shape[0] != p.shape[0]:
        raise InputError(f"`resp_ids` must have one row per prompt ({p.shape[0]}); got {r.shape[0]}")
    n = r.shape[1]
    pp = p.repeat_interleave(n, 0)
    rr = r.reshape(-1, r.shape[2])
    bs = check_int(batch_size, "batch_size", low=1)

    def score(m: nn.Module) -> torch.Tensor:
        was = m.training
        m.eval()
        out = torch.cat(
            [sequence_logprob(m, pp[i : i + bs], rr[i : i + bs], length_norm=length_norm).cpu()
             for i in range(0, len(pp), bs)]
        )  # fmt: skip
        m.train(was)
        return out

    out = score(model)
    if ref_model is not None:
        out = out - score(ref_model)
    return out.reshape(p.shape[0], n)


def _ordinal_ranks(r: torch.Tensor) -> torch.Tensor:
    """Ordinal ranks along the last axis (ties broken by position, as ``scipy.stats.rankdata(method='ordinal')``)."""
    order = torch.argsort(r, dim=-1, stable=True)
    return torch.argsort(order, dim=-1, stable=True).to(torch.float64)


def kendall_consistency(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """CREAM's consistency ``C = (τ + 1) / 2`` per row between two reward rankings, ``[P]``.

    ``r_a``, ``r_b``: ``[P, N]`` rewards of the same ``N`` responses under two reward models. Both
    are turned into ordinal ranks (ties broken by position, the official code's convention) and
    Kendall's τ is computed over the ``N(N−1)/2`` pairs; with untied ranks this is τ-a = τ-b
    (``scipy.stats.kendalltau``). Identical rankings give 1, reversed ones 0.
    """
    a = check_tensor(r_a, "r_a", ndim=2, layout="[P, N]")
    b = check_tensor(r_b, "r_b", ndim=2, layout="[P, N]")
    if a.shape != b.shape:
        raise InputError(f"`r_a` and `r_b` must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[1]
    if n < 2:
        raise InputError(f"`r_a` needs at least 2 responses per row to rank; got {n}")
    ra, rb = _ordinal_ranks(a.cpu()), _ordinal_ranks(b.cpu())
    i, j = torch.triu_indices(n, n, 1)
    agree = torch.sign(ra[:, i] - ra[:, j]) * torch.sign(rb[:, i] - rb[:, j])
    tau = agree.mean(1)
    return ((tau + 1) / 2).float()


def best_worst_pairs(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row the index of the highest and of the lowest reward, and whether they differ.

    ``rewards [P, N]`` → ``(best [P], worst [P], valid [P] bool)``; a row whose rewards are all
    equal has ``best == worst`` (both the first index) and is not valid (CREAM skips it).
    """
    r = check_tensor(rewards, "rewards", ndim=2, dtype="float", layout="[P, N]")
    best, worst = r.argmax(1), r.argmin(1)
    return best, worst, best != worst
