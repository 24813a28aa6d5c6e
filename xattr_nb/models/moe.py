"""A tiny mixture-of-experts MLP for GPT-2 blocks, and the routing read-outs RoMA-style methods need.

- :class:`TopKMoEMLP`: ``n_experts`` small GELU MLPs behind a softmax router with top-``k`` gating.
  The forward loops over experts, each on the tokens routed to it (gathered, then scatter-added):
  on CPU with batches of ~10k tokens that is 4x faster than running every expert on every token
  and masking (:meth:`~TopKMoEMLP.expert_outputs` is that dense path, equal up to float rounding).
  The module keeps the last full-softmax router probabilities (``last_probs``, before top-k, as
  OLMoE's ``router_logits`` softmax) and accepts a routing-logit override (``override``), the hook an
  oracle or a test-time re-mix uses.
- :func:`moeify_gpt2`: swap the ``GPT2MLP`` of chosen blocks of a ``GPT2LMHeadModel`` for
  :class:`TopKMoEMLP` (in place); the model stays an HF ``GPT2LMHeadModel``.
- :func:`moe_layers`, :func:`router_parameters`, :func:`freeze_all_but_routers`: find the MoE
  blocks and train only their routers (router post-training).
- :func:`routing_weights`: full-softmax routing ``[N, L, E]`` at one position per sequence.
- :func:`override_routing`: a context manager that edits router logits of chosen layers.
- :func:`moe_arch_config` / the ``"moe_gpt2"`` architecture: rebuild an moeified GPT-2 from a config
  dict, so the zoo can ship one (``{"arch": "moe_gpt2", "kwargs": {...}}``).

Written by hand: transformers' MoE classes (Mixtral, OLMoE) come with their own attention blocks
and sparse dispatch; a GPT-2 with swappable tiny expert MLPs is what the small-scale notebooks need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from xattr_nb.checks import InputError, check_int, check_tensor
from xattr_nb.models.text import build_hf, hf_arch_config

__all__ = [
    "TopKMoEMLP",
    "freeze_all_but_routers",
    "load_balance_loss",
    "moe_arch_config",
    "moe_layers",
    "moeify_gpt2",
    "override_routing",
    "router_parameters",
    "routing_weights",
]

LogitOverride = Callable[[torch.Tensor], torch.Tensor]


class TopKMoEMLP(nn.Module):
    """``y = Σ_e g_e(x) · expert_e(x)`` with ``g`` the top-``k`` of ``softmax(router(x))``.

    - ``router``: ``nn.Linear(d_model, n_experts, bias=False)`` (the only routing parameters).
    - experts: ``W_in [E, d_model, d_ff]``, ``b_in [E, d_ff]``, ``W_out [E, d_ff, d_model]``,
      ``b_out [E, d_model]``, GELU (GPT-2's tanh approximation) in between.
    - gates: the full softmax ``p`` over experts, kept at its top-``k`` entries; with
      ``normalize_topk=True`` (Mixtral) they are renormalised to sum to 1, else used as is (OLMoE).
      ``k == n_experts`` is the dense softmax mixture either way.
    - ``last_probs``: the full softmax ``[..., E]`` of the last forward (before top-k); what
      :func:`routing_weights` reads. It keeps the graph, so a loss on it trains the router.
    - ``override``: ``None`` or a function ``logits -> logits`` applied to the router logits
      ``[B, T, E]`` before the softmax (set it with :func:`override_routing`).
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int = 8,
        k: int = 2,
        d_ff: int = 64,
        *,
        normalize_topk: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", low=1)
        self.n_experts = check_int(n_experts, "n_experts", low=1)
        self.k = check_int(k, "k", low=1, high=self.n_experts)
        self.d_ff = check_int(d_ff, "d_ff", low=1)
        if not isinstance(normalize_topk, bool):
            raise InputError(f"`normalize_topk` must be a bool; got {type(normalize_topk).__name__}")
        self.normalize_topk = normalize_topk
        e, d, f = self.n_experts, self.d_model, self.d_ff
        self.router = nn.Linear(d, e, bias=False)
        self.w_in = nn.Parameter(torch.empty(e, d, f))
        self.b_in = nn.Parameter(torch.zeros(e, f))
        self.w_out = nn.Parameter(torch.empty(e, f, d))
        self.b_out = nn.Parameter(torch.zeros(e, d))
        self.reset_parameters(seed)
        self.last_probs: torch.Tensor | None = None
        self.override: LogitOverride | None = None

    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2's initialisation (normal, std 0.02) for router and experts; a ``seed`` forks the RNG."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(check_int(seed, "seed", low=0, high=2**32 - 1))
            for w in (self.router.weight, self.w_in, self.w_out):
                nn.init.normal_(w, std=0.02)
            nn.init.zeros_(self.b_in)
            nn.init.zeros_(self.b_out)

    def gates(self, probs: torch.Tensor) -> torch.Tensor:
        """The top-``k`` masked (and, if ``normalize_topk``, renormalised) gates of full probabilities ``probs``."""
        top, idx = probs.topk(self.k, dim=-1)
        if self.normalize_topk:
            top = top / top.sum(-1, keepdim=True)
        return torch.zeros_like(probs).scatter(-1, idx, top)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's output ``[..., E, d_model]`` for ``x [..., d_model]`` (the dense path)."""
        h = torch.einsum("...d,edf->...ef", x, self.w_in) + self.b_in
        h = nn.functional.gelu(h, approximate="tanh")
        return torch.einsum("...ef,efd->...ed", h, self.w_out) + self.b_out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[-1] != self.d_model:
            raise InputError(
                f"`hidden_states` must end in d_model={self.d_model}; got shape {tuple(hidden_states.shape)}"
            )
        logits = self.router(hidden_states)
        if self.override is not None:
            new = self.override(logits)
            if not isinstance(new, torch.Tensor) or new.shape != logits.shape:
                raise InputError(
                    f"a routing override must return a tensor of shape {tuple(logits.shape)}; "
                    f"got {getattr(new, 'shape', type(new).__name__)}"
                )
            logits = new
        probs = logits.softmax(-1)
        self.last_probs = probs
        g = self.gates(probs).reshape(-1, self.n_experts)
        flat = hidden_states.reshape(-1, self.d_model)
        out = torch.zeros_like(flat)
        for e in range(self.n_experts):  # each expert on the tokens routed to it
            rows = g[:, e].nonzero().squeeze(1)
            if rows.numel():
                h = nn.functional.gelu(flat[rows] @ self.w_in[e] + self.b_in[e], approximate="tanh")
                out = out.index_add(0, rows, g[rows, e, None] * (h @ self.w_out[e] + self.b_out[e]))
        return out.reshape(hidden_states.shape)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_experts={self.n_experts}, k={self.k}, d_ff={self.d_ff}"


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if not isinstance(model, GPT2LMHeadModel) or not isinstance(blocks, nn.ModuleList):
        raise InputError(f"`model` must be a transformers GPT2LMHeadModel; got {type(model).__name__}")
    return blocks


def _check_layers(layers: Any, n_layer: int, name: str = "layers") -> list[int]:
    """Layer indices (negatives count from the end, as in ``range(n)[-2:]``), checked and made non-negative."""
    if isinstance(layers, (int, bool)) or not isinstance(layers, (Sequence, range)) or len(layers) == 0:
        raise InputError(f"`{name}` must be a non-empty list of block indices; got {layers!r}")
    out = []
    for i, layer in enumerate(layers):
        v = check_int(layer, f"{name}[{i}]", low=-n_layer, high=n_layer - 1)
        out.append(v % n_layer)
    if len(set(out)) != len(out):
        raise InputError(f"`{name}` repeats a block: {list(layers)}")
    return out


def moeify_gpt2(
    model: GPT2LMHeadModel,
    n_experts: int = 8,
    k: int = 2,
    d_ff: int = 64,
    layers: Sequence[int] | None = None,
    *,
    normalize_topk: bool = True,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """Replace ``model.transformer.h[l].mlp`` by a fresh :class:`TopKMoEMLP` for each ``l`` in ``layers``
    (default: every block), in place; return the model.

    Expert ``l`` is initialised from ``seed + l`` (deterministic, global RNG untouched). The MoE
    settings are kept in ``model.moe_settings`` so :func:`moe_arch_config` can describe the model.
    """
    blocks = _blocks(model)
    if getattr(model, "moe_settings", None) is not None:
        raise InputError("`model` is already moeified (it has `moe_settings`)")
    layers = list(range(len(blocks))) if layers is None else _check_layers(layers, len(blocks))
    seed = check_int(seed, "seed", low=0, high=2**32 - 1 - len(blocks))
    d = int(model.config.n_embd)
    for layer in layers:
        blocks[layer].mlp = TopKMoEMLP(d, n_experts, k, d_ff, normalize_topk=normalize_topk, seed=seed + layer)
    model.moe_settings = {
        "n_experts": int(n_experts), "k": int(k), "d_ff": int(d_ff), "layers": sorted(layers),
        "normalize_topk": normalize_topk, "seed": seed,
    }  # fmt: skip
    return model


def moe_layers(model: nn.Module) -> list[int]:
    """Indices of the blocks whose MLP is a :class:`TopKMoEMLP`."""
    return [i for i, b in enumerate(_blocks(model)) if isinstance(b.mlp, TopKMoEMLP)]


def _moe(model: nn.Module, layers: Sequence[int] | None, name: str = "layers") -> dict[int, TopKMoEMLP]:
    have = moe_layers(model)
    if not have:
        raise InputError("`model` has no TopKMoEMLP block; call moeify_gpt2 first")
    blocks = _blocks(model)
    chosen = have if layers is None else _check_layers(layers, len(blocks), name)
    missing = [i for i in chosen if i not in have]
    if missing:
        raise InputError(f"`{name}`: blocks {missing} are not MoE blocks (MoE blocks: {have})")
    return {i: blocks[i].mlp for i in chosen}


def router_parameters(model: nn.Module, layers: Sequence[int] | None = None) -> list[nn.Parameter]:
    """The router weights of the chosen MoE blocks (default: all MoE blocks)."""
    return [m.router.weight for m in _moe(model, layers).values()]


def freeze_all_but_routers(model: nn.Module, layers: Sequence[int] | None = None) -> list[str]:
    """Set ``requires_grad`` to False everywhere except the routers of ``layers``; return the trainable names."""
    keep = {id(p) for p in router_parameters(model, layers)}
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            names.append(name)
    return names


def load_balance_loss(model: nn.Module, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch-Transformer load balancing over the last forward, averaged over MoE blocks:
    ``E · Σ_e f_e · P_e`` (``f_e`` the share of top-k assignments to expert ``e``, ``P_e`` the mean
    router probability) over the tokens where ``mask`` is True. Equals 1 at perfect balance; used in
    base training only (router post-training leaves it off)."""
    total = []
    for m in _moe(model, None).values():
        if m.last_probs is None:
            raise InputError("no forward pass has been run yet: call the model first")
        p = m.last_probs.reshape(-1, m.n_experts)
        if mask is not None:
            p = p[check_tensor(mask, "mask", dtype="bool").reshape(-1)]
        assigned = torch.zeros_like(p).scatter(-1, p.topk(m.k, dim=-1).indices, 1.0)
        total.append(m.n_experts * (assigned.mean(0) / m.k * p.mean(0)).sum())
    return torch.stack(total).mean()


def _positions(pos: Any, n: int, t: int) -> torch.Tensor:
    if isinstance(pos, (int,)) and not isinstance(pos, bool):
        p = check_int(pos, "pos", low=-t, high=t - 1)
        return torch.full((n,), p % t, dtype=torch.long)
    p = check_tensor(pos, "pos", shape=(n,), dtype="int", layout="[N]").long()
    if bool(((p < 0) | (p >= t)).any()):
        raise InputError(f"`pos` must lie in [0, {t}) (positions of the sequences); got {p.min()}..{p.max()}")
    return p


def routing_weights(
    model: nn.Module,
    ids: torch.Tensor,
    layers: Sequence[int] | None = None,
    pos: int | torch.Tensor = -1,
    *,
    attention_mask: torch.Tensor | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """Full-softmax routing weights ``[N, L, E]`` of ``layers`` (default: all MoE blocks, in order) at
    position ``pos`` of each sequence (an int for all, or a LongTensor ``[N]`` per sequence, e.g. the
    last prompt token of right-padded prompts). With ``grad=True`` the graph is kept (a loss on the
    result trains the routers); otherwise it runs under ``no_grad``."""
    ids = check_tensor(ids, "ids", ndim=2, dtype="int", layout="[N, T]")
    mods = _moe(model, layers)
    p = _positions(pos, ids.shape[0], ids.shape[1])
    with torch.set_grad_enabled(grad):
        model(input_ids=ids, attention_mask=attention_mask)
        rows = torch.arange(ids.shape[0])
        return torch.stack([m.last_probs[rows, p] for m in mods.values()], dim=1)


@contextmanager
def override_routing(model: nn.Module, fns: Mapping[int, LogitOverride]) -> Iterator[None]:
    """Within the ``with`` body, block ``l``'s router logits ``[B, T, E]`` become ``fns[l](logits)``.

    E.g. ``{3: lambda z: z + delta[:, None]}`` adds a per-sequence offset (an oracle's free logits);
    removed on exit, also when the body raises.
    """
    if not isinstance(fns, Mapping) or not fns:
        raise InputError("`fns` must be a non-empty dict {block index: function(logits) -> logits}")
    mods = _moe(model, list(fns), "fns")
    for key, fn in fns.items():
        if not callable(fn):
            raise InputError(f"`fns[{key}]` must be callable; got {type(fn).__name__}")
    previous = {i: m.override for i, m in mods.items()}
    try:
        for m, fn in zip(mods.values(), fns.values(), strict=True):
            m.override = fn
        yield
    finally:
        for i, m in mods.items():
            m.override = previous[i]


def moe_arch_config(model: GPT2LMHeadModel) -> dict[str, Any]:
    """The ``{"arch": "moe_gpt2", ...}`` config that rebuilds an moeified GPT-2 (for the zoo)."""
    settings = getattr(model, "moe_settings", None)
    if settings is None:
        raise InputError("`model` was not built by moeify_gpt2 (no `moe_settings`)")
    hf = hf_arch_config(model)["kwargs"]
    return {"arch": "moe_gpt2", "kwargs": {"gpt2": hf["config"], **settings}}


def build_moe_gpt2(
    gpt2: dict[str, Any],
    n_experts: int = 8,
    k: int = 2,
    d_ff: int = 64,
    layers: Sequence[int] | None = None,
    normalize_topk: bool = True,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """Build a GPT-2 from its config dict and moeify it (what ``build({"arch": "moe_gpt2", ...})`` calls)."""
    model = build_hf("GPT2LMHeadModel", gpt2, "eager")
    return moeify_gpt2(model, n_experts, k, d_ff, layers, normalize_topk=normalize_topk, seed=seed).eval()
