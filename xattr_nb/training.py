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
    "elr_regularizer",
    "gce_loss",
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
