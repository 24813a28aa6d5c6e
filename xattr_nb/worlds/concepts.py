"""A latent-concept language: tokens emitted i.i.d. from binary concepts, with exact Bayes posteriors.

The generative model of Liu et al., *I Predict Therefore I Am* (arXiv 2503.08980), in the small form
of the spec:

- ``m`` binary concepts ``c = (c_0, ..., c_{m-1})`` with a dependency DAG (edges ``(parent, child)``,
  parent < child): ``p(c_j = 1 | parents) = sigmoid(b_j + sum_p w_pj (2 c_p - 1))``;
- every configuration ``k`` of ``c`` (``K = 2^m`` of them; concept ``i`` is bit ``i`` of ``k``) has an
  emission distribution ``p(x | c) = softmax(u_0 + sum_i c_i u_i)`` over ``vocab_size`` tokens, with
  ``u_0`` (shared by all configurations) and the ``u_i`` drawn ``N(0, emission_scale^2)``. Tokens overlap
  across configurations, so no token reveals ``c``: the map from ``c`` to ``x`` is not invertible;
- a sequence is ``seq_len`` tokens drawn i.i.d. from ``p(x | c)`` given one ``c`` per sequence.

Ground truth, exact (enumeration over the ``K`` configurations, no sampling noise):
``log p(c | x_{<=t}) = log p(c) + sum_{s<=t} log p(x_s | c) - log Z`` for every prefix length
``t = 0 .. seq_len`` (:meth:`ConceptLVM.exact_log_posterior`), from which the per-concept log-odds
``log p(c_i=1|x) - log p(c_i=0|x)`` (:meth:`ConceptLVM.concept_log_odds`), the posterior probabilities and
the MAP configuration follow. The Bayes-optimal next-token distribution is ``sum_c p(x|c) p(c|x_{<=t})``
(:meth:`ConceptLVM.bayes_next_token`). :meth:`ConceptLVM.counterfactual_pairs` draws pairs of sequences
whose concepts differ in one concept only, with common random numbers (the same uniform draw per position
is pushed through both emission tables), the interventions that estimate concept directions.

The world's parameters (prior and emission tables) are fixed by ``concept_lvm(..., seed)``; sequences
are drawn with their own seed by :meth:`ConceptLVM.sample`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = ["ConceptData", "ConceptLVM", "concept_lvm"]


@dataclasses.dataclass
class ConceptData(WorldData):
    """Sequences of the concept world.

    ``tokens`` ``[N, T]`` long in ``[0, vocab_size)``; ``concepts`` ``[N, m]`` long 0/1 (the true ``c``);
    ``config`` ``[N]`` long, the index ``k = sum_i c_i 2^i`` of ``c`` among the ``2^m`` configurations.
    """

    _items: ClassVar[tuple[str, ...]] = ("tokens", "concepts", "config")
    tokens: torch.Tensor
    concepts: torch.Tensor
    config: torch.Tensor
    vocab_size: int = 0


def _check_dag(dag: Any, m: int) -> tuple[tuple[int, int], ...]:
    if isinstance(dag, (str, bytes)) or not isinstance(dag, Sequence):
        raise InputError(f"`dag` must be a sequence of (parent, child) pairs; got {dag!r}")
    edges = []
    for e in dag:
        if not (isinstance(e, Sequence) and len(e) == 2):
            raise InputError(f"`dag` must hold (parent, child) pairs; got {e!r}")
        p, c = check_int(e[0], "dag parent", low=0, high=m - 1), check_int(e[1], "dag child", low=0, high=m - 1)
        if p >= c:
            raise InputError(f"`dag` edges must go from a lower to a higher concept index (parent < child); got {e!r}")
        edges.append((p, c))
    if len(set(edges)) != len(edges):
        raise InputError(f"`dag` has repeated edges: {list(dag)!r}")
    return tuple(edges)


@dataclasses.dataclass(frozen=True)
class ConceptLVM:
    """The world's parameters: ``configs`` ``[K, m]`` (row ``k`` = bits of ``k``), ``log_prior`` ``[K]`` and
    ``log_emission`` ``[K, V]`` (rows sum to 1 in probability). Built by :func:`concept_lvm`."""

    m: int
    dag: tuple[tuple[int, int], ...]
    vocab_size: int
    seq_len: int
    seed: int
    configs: torch.Tensor
    log_prior: torch.Tensor
    log_emission: torch.Tensor

    @property
    def n_configs(self) -> int:
        return self.configs.shape[0]

    def _check_tokens(self, tokens: Any) -> torch.Tensor:
        tokens = check_tensor(tokens, "tokens", ndim=2, dtype="int", layout="[N, T]")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            raise InputError(
                f"`tokens` must lie in [0, {self.vocab_size}) (the world's vocabulary); "
                f"got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long()

    def sample(self, n: int, *, seed: int = 0) -> ConceptData:
        """``n`` sequences: ``c ~ p(c)``, then ``seq_len`` tokens i.i.d. from ``p(x | c)``."""
        n, seed = check_n(n), check_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        config = torch.multinomial(self.log_prior.exp(), n, replacement=True, generator=gen)
        return self._emit(config, torch.rand(n, self.seq_len, generator=gen))

    def _emit(self, config: torch.Tensor, u: torch.Tensor) -> ConceptData:
        # Inverse-CDF sampling: the same uniform u gives coupled tokens under two configurations.
        cdf = self.log_emission.exp().cumsum(-1)[config]  # [N, V]
        tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(self.vocab_size - 1)
        return ConceptData(
            tokens=tokens, concepts=self.configs[config].clone(), config=config, vocab_size=self.vocab_size
        )

    def counterfactual_pairs(self, n: int, concept: int, *, seed: int = 0) -> tuple[ConceptData, ConceptData]:
        """``(base, flipped)``: ``n`` sequence pairs whose concepts differ only in ``concept``.

        ``c`` is drawn from the prior; ``flipped`` has ``c_concept`` negated and every other concept kept.
        Both sequences use the same uniform draw per position (common random numbers), so their tokens
        differ only where the flip changes the emission, which makes mean differences low-variance.
        """
        n, seed = check_n(n), check_seed(seed)
        concept = check_int(concept, "concept", low=0, high=self.m - 1)
        gen = torch.Generator().manual_seed(seed)
        config = torch.multinomial(self.log_prior.exp(), n, replacement=True, generator=gen)
        u = torch.rand(n, self.seq_len, generator=gen)
        return self._emit(config, u), self._emit(config ^ (1 << concept), u)

    def exact_log_posterior(self, tokens: Any) -> torch.Tensor:
        """``log p(c = k | x_{<=t})`` ``[N, T+1, K]`` for every prefix length ``t = 0..T`` (``t = 0``: the prior).

        Exact Bayes by enumeration over the ``K = 2^m`` configurations (float64 inside).
        """
        tokens = self._check_tokens(tokens)
        ll = self.log_emission.double().T[tokens]  # [N, T, K]: log p(x_s | c = k)
        joint = torch.cat([torch.zeros_like(ll[:, :1]), ll.cumsum(1)], 1) + self.log_prior.double()
        return (joint - joint.logsumexp(-1, keepdim=True)).float()

    def _check_log_post(self, log_post: Any) -> torch.Tensor:
        log_post = check_tensor(log_post, "log_post", dtype="float", finite=False, layout="[..., K]")
        if log_post.shape[-1] != self.n_configs:
            raise InputError(
                f"`log_post` must end with the {self.n_configs} configurations; got {tuple(log_post.shape)}"
            )
        return log_post

    def concept_log_odds(self, log_post: Any) -> torch.Tensor:
        """Per-concept log-odds ``log p(c_i=1|x) - log p(c_i=0|x)`` ``[..., m]`` from ``log p(c|x)`` ``[..., K]``."""
        lp = self._check_log_post(log_post)
        on = self.configs.bool().T  # [m, K]
        big = torch.finfo(lp.dtype).min
        lp1 = lp.unsqueeze(-2).masked_fill(~on, big).logsumexp(-1)
        lp0 = lp.unsqueeze(-2).masked_fill(on, big).logsumexp(-1)
        return lp1 - lp0

    def posterior(self, log_post: Any) -> torch.Tensor:
        """Posterior probabilities ``p(c|x)`` ``[..., K]`` (they sum to 1)."""
        return self._check_log_post(log_post).exp()

    def map_config(self, log_post: Any) -> torch.Tensor:
        """The MAP configuration index ``argmax_k p(c=k|x)`` ``[...]``."""
        return self._check_log_post(log_post).argmax(-1)

    def bayes_next_token(self, log_post: Any) -> torch.Tensor:
        """The Bayes-optimal next-token log-distribution ``log sum_c p(x|c) p(c|x_{<=t})`` ``[..., V]``."""
        lp = self._check_log_post(log_post)
        return (lp.unsqueeze(-1) + self.log_emission).logsumexp(-2)


def concept_lvm(
    m: int = 3,
    dag: Sequence[tuple[int, int]] = ((0, 1), (0, 2)),
    vocab_size: int = 32,
    seq_len: int = 8,
    *,
    seed: int = 0,
    emission_scale: float = 1.5,
    dependence: float = 1.5,
) -> ConceptLVM:
    """Draw the parameters of a latent-concept world (see the module docstring).

    ``emission_scale``: SD of the emission logits; small values make the configurations' token
    distributions alike (the paper's diversity condition weakens and posteriors stay flat).
    ``dependence``: scale of the parent->child logit weights ``w ~ ±U(dependence/2, dependence)``
    (0 makes the concepts independent).
    """
    m = check_int(m, "m", low=1, high=10)
    edges = _check_dag(dag, m)
    vocab_size = check_int(vocab_size, "vocab_size", low=2)
    seq_len = check_int(seq_len, "seq_len", low=1)
    seed = check_seed(seed)
    emission_scale = check_float(emission_scale, "emission_scale", low=0.0)
    dependence = check_float(dependence, "dependence", low=0.0)
    gen = torch.Generator().manual_seed(seed)
    configs = (torch.arange(2**m).unsqueeze(1) >> torch.arange(m)) & 1  # [K, m]
    bias = torch.rand(m, generator=gen) - 0.5
    w = torch.zeros(m, m)
    for p, c in edges:
        sign = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
        w[p, c] = sign * dependence * (0.5 + 0.5 * torch.rand(1, generator=gen).item())
    logit = bias + (2 * configs.float() - 1) @ w  # [K, m]: logit of p(c_j = 1 | parents of j)
    c = configs.float()
    log_prior = (c * torch.nn.functional.logsigmoid(logit) + (1 - c) * torch.nn.functional.logsigmoid(-logit)).sum(-1)
    u = torch.randn(m + 1, vocab_size, generator=gen) * emission_scale
    log_emission = torch.log_softmax(u[0] + c @ u[1:], -1)
    return ConceptLVM(
        m=m, dag=edges, vocab_size=vocab_size, seq_len=seq_len, seed=seed, configs=configs,
        log_prior=log_prior, log_emission=log_emission,
    )  # fmt: skip
