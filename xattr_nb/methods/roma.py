"""RoMA: routing manifold alignment, router-only fine-tuning of a mixture-of-experts LM.

Li, Li and Zhou, "Routing Manifold Alignment Improves Generalization of Mixture-of-Experts LLMs"
(ICLR 2026, arXiv:2511.07419; project: github.com/tianyi-lab/RoMA, no code snapshot was available;
conventions from the sibling C3PO code, github.com/tianyi-lab/C3PO).

RoMA fine-tunes only the routers of the last ``L`` MoE layers with the task loss plus a manifold
term that pulls each training sample's routing weights towards those of its *successful*
neighbours in a task-embedding space (MiniLM sentence embeddings of the question):

    CE(y_i | x_i) + λ Σ_{j ∈ N(i)} w_ij Σ_{l ∈ last L} ‖r_i^l − sg(r_j^l)‖²,

``r_i^l`` the full softmax of router ``l`` at the sample's last prompt token, ``N(i)`` its ``k``
nearest neighbours by cosine among the training samples the current model answers correctly
(itself excluded), ``w_ij`` their cosines normalised over ``N(i)``; the successful set, the
neighbours and the detached targets are refreshed every epoch [recon: the detached-target form,
the L2 distance, λ and k are the toolkit's reading of the abstract; the paper may differ].

Steps, in the order the notebook calls them: :func:`task_embeddings` → :func:`prompt_routing` and
:func:`correct` → :func:`successful_neighbours` → :func:`manifold_loss` → :func:`finetune_routers`
(``lam=0`` is the CE-only baseline); :func:`oracle_routing` (per-sample routing logits optimised with
the label: the upper bound); :func:`knn_task_agreement` and :func:`routing_silhouette` (routing–task
alignment) and :func:`expert_usage_entropy` (how evenly the routers spread samples over the
experts: a collapse of routing shows here); :func:`evaluate` runs them all on a held-out set;
:func:`explain`, the entry point, fine-tunes CE-only and RoMA routers from one base model for several
seeds and evaluates all three. Routers are found by name (:func:`router_names`): our
:class:`~xattr_nb.models.moe.TopKMoEMLP` (``...mlp.router``) and HF OLMoE / Qwen-MoE blocks
(``...mlp.gate``), so a paper MoE LM from ``xattr_nb.models.load_lm("full", small="multitask_moe_gpt2",
full=<HF name>)`` runs through the same steps.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor, check_texts
from xattr_nb.interventions.hooks import first_tensor, hooks
from xattr_nb.models.io import check_model, device_of, logits_of
from xattr_nb.models.moe import override_routing
from xattr_nb.models.moe_recipes import answer_loss, answer_targets, exact_match
from xattr_nb.runtime import progress
from xattr_nb.worlds.multitask import MultitaskData

__all__ = [
    "PAPER_CONFIG",
    "SMALL_CONFIG",
    "Comparison",
    "FinetuneHistory",
    "correct",
    "cross_group_knn_agreement",
    "evaluate",
    "expert_load",
    "expert_usage_entropy",
    "experts_per_token",
    "explain",
    "finetune_routers",
    "knn_task_agreement",
    "last_layers",
    "manifold_loss",
    "max_load",
    "oracle_routing",
    "prompt_routing",
    "router_names",
    "routing_and_correct",
    "routing_silhouette",
    "successful_neighbours",
    "task_embeddings",
    "text_routing",
]

#: The paper's setting as far as the abstract and C3PO's code tell: routers of the last 5 layers, last-token
#: weights, k = 3 MiniLM neighbours [code, C3PO]; λ, lr and epochs are the toolkit's defaults [recon].
PAPER_CONFIG: dict[str, Any] = {"n_layers": 5, "k": 3, "lam": 1.0, "lr": 1e-2, "epochs": 3}
#: The small-scale setting: 2 of the tiny model's 4 MoE layers, otherwise the toolkit defaults.
SMALL_CONFIG: dict[str, Any] = {"n_layers": 2, "k": 3, "lam": 1.0, "lr": 1e-2, "epochs": 3}

_ROUTER = re.compile(r"(?:^|\.)(\d+)\.mlp\.(?:router|gate)$")


# ----------------------------------------------------------------------------------------------
# Models and routers.


def router_names(model: nn.Module) -> dict[int, str]:
    """Block index → module name of its router: ``<...>.<i>.mlp.router`` (TopKMoEMLP) or ``<...>.<i>.mlp.gate``
    (OLMoE, Qwen-MoE); the module's first output is the router logits."""
    check_model(model)
    out = {}
    for name, mod in model.named_modules():
        m = _ROUTER.search(name)
        if m and any(True for _ in mod.parameters(recurse=False)):
            out[int(m.group(1))] = name
    if not out:
        raise InputError(f"{type(model).__name__} has no router module (named '<i>.mlp.router' or '<i>.mlp.gate')")
    return dict(sorted(out.items()))


def last_layers(model: nn.Module, n_layers: int) -> list[int]:
    """The last ``n_layers`` blocks that have a router."""
    have = list(router_names(model))
    n_layers = check_int(n_layers, "n_layers", low=1, high=len(have))
    return have[-n_layers:]


def _router_map(model: nn.Module, layers: Sequence[int]) -> dict[int, str]:
    names = router_names(model)
    if isinstance(layers, (int, str)) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"`layers` must be a non-empty list of block indices with routers {list(names)}")
    missing = [layer for layer in layers if layer not in names]
    if missing:
        raise InputError(f"`layers` {missing} have no router; blocks with routers: {list(names)}")
    return {int(layer): names[layer] for layer in layers}


def _freeze_to_routers(model: nn.Module, layers: Sequence[int]) -> list[nn.Parameter]:
    """``requires_grad`` only on the routers of ``layers`` (router post-training); returns them."""
    keep = set(_router_map(model, layers).values())
    mods = dict(model.named_modules())
    params = [p for n in keep for p in mods[n].parameters(recurse=False)]
    ids = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return params


def _forward_with_routing(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, layers: Sequence[int], pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward: the logits ``[B, T, V]`` and the full-softmax routing ``[B, L, E]`` at ``pos`` (with graph)."""
    names = _router_map(model, layers)
    got: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            got[layer] = first_tensor(output)

        return fn

    dev = device_of(model)
    ids, pos = ids.to(dev), pos.to(dev)
    with hooks(model, {name: keep(layer) for layer, name in names.items()}):
        logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(dev)).logits
    b, t = ids.shape
    rows = torch.arange(b, device=dev)
    probs = []
    for layer in names:
        z = got[layer].reshape(b, t, -1)  # HF MoE routers return flattened [B*T, E]
        probs.append(z[rows, pos].float().softmax(-1))
    return logits, torch.stack(probs, 1)


def _check_data(data: Any) -> MultitaskData:
    if not isinstance(data, MultitaskData):
        raise InputError(f"`data` must be a MultitaskData from xattr_nb.worlds.multitask; got {type(data).__name__}")
    return data


@torch.no_grad()
def prompt_routing(model: nn.Module, data: MultitaskData, layers: Sequence[int]) -> torch.Tensor:
    """Full-softmax routing ``[N, L, E]`` of ``layers`` at each example's last prompt token (``=``)."""
    data = _check_data(data)
    return _forward_with_routing(model, data.ids, data.mask.long(), layers, data.prompt_len - 1)[1].cpu()


@torch.no_grad()
def correct(model: nn.Module, data: MultitaskData) -> torch.Tensor:
    """Bool ``[N]``: the model gets all four answer digits right under teacher forcing."""
    data = _check_data(data)
    dev = device_of(model)
    logits = logits_of(model(input_ids=data.ids.to(dev), attention_mask=data.mask.long().to(dev)))
    return exact_match(logits.cpu(), answer_targets(data))


@torch.no_grad()
def routing_and_correct(
    model: nn.Module, data: MultitaskData, layers: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`prompt_routing` and :func:`correct` from one forward pass (what each fine-tuning epoch refreshes)."""
    data = _check_data(data)
    logits, r = _forward_with_routing(model, data.ids, data.mask.long(), layers, data.prompt_len - 1)
    return r.cpu(), exact_match(logits.cpu(), answer_targets(data))


@torch.no_grad()
def text_routing(model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int]) -> torch.Tensor:
    """Full-softmax routing ``[N, L, E]`` at the last token of each text (any HF MoE LM and its tokenizer):
    the read-out of RoMA's routing manifold for free-form questions (right padding, no special tokens added)."""
    texts = check_texts(list(texts) if not isinstance(texts, str) else texts, "texts")
    if tokenizer.pad_token is None:
        raise InputError("`tokenizer` has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    side = tokenizer.padding_side
    try:
        tokenizer.padding_side = "right"
        enc = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    last = enc["attention_mask"].sum(1) - 1
    return _forward_with_routing(model, enc["input_ids"], enc["attention_mask"], layers, last)[1].cpu()


# ----------------------------------------------------------------------------------------------
# Task embeddings and successful neighbours.


def task_embeddings(texts: Sequence[str], *, encoder: tuple[Any, Any] | None = None, cache: dict | None = None):
    """MiniLM sentence embeddings ``[N, 384]`` (L2-normalised) of ``texts``; each distinct text is embedded once.

    ``encoder``: ``(tokenizer, model)`` from :func:`xattr_nb.models.hub.load_encoder` (loaded if None);
    ``cache``: a dict text → embedding reused across calls (the 24 paraphrases are embedded once).
    """
    texts = check_texts(list(texts) if not isinstance(texts, str) else texts, "texts")
    cache = {} if cache is None else cache
    if not isinstance(cache, dict):
        raise InputError(f"`cache` must be a dict or None; got {type(cache).__name__}")
    todo = sorted({t for t in texts if t not in cache})
    if todo:
        from xattr_nb.models.hub import embed, load_encoder

        tok, enc = load_encoder() if encoder is None else encoder
        for t, e in zip(todo, embed(todo, tok, enc, show_progress=False), strict=True):
            cache[t] = e
    return torch.stack([cache[t] for t in texts])


def successful_neighbours(
    emb: torch.Tensor, ok: torch.Tensor, k: int = 3, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest successful samples of every sample by cosine, itself excluded.

    ``emb`` ``[N, D]`` (L2-normalised rows), ``ok`` ``[N]`` bool (the successful set S). Returns
    ``idx`` ``[N, k]`` (``-1`` where S has fewer than ``k`` candidates) and weights ``w`` ``[N, k]``:
    the cosines, clipped at 0 and normalised over the valid neighbours (0 for invalid ones; a row
    with no valid neighbour, or only non-positive cosines, is all 0). Ties in cosine (identical
    instructions) are broken by a random order per row drawn from ``seed``, so the choice is deterministic.
    """
    emb = check_tensor(emb, "emb", ndim=2, dtype="float", layout="[N, D]")
    ok = check_tensor(ok, "ok", shape=(emb.shape[0],), dtype="bool", layout="[N]")
    n = emb.shape[0]
    k = check_int(k, "k", low=1, high=max(1, n - 1))
    norms = emb.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise InputError("`emb` rows must be L2-normalised (cosine = dot product)")
    sim = emb.double() @ emb.double().T
    sim[:, ~ok] = -np.inf
    sim.fill_diagonal_(-np.inf)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    # a stable sort over a random column order per row = random tie-breaking, reproducible per seed
    perm = torch.rand(n, n, generator=gen).argsort(1)
    order = torch.sort(-sim.gather(1, perm), dim=1, stable=True).indices[:, :k]
    idx = perm.gather(1, order)
    top = sim.gather(1, idx)
    valid = torch.isfinite(top)
    w = torch.where(valid, top.clamp_min(0.0), torch.zeros_like(top))
    s = w.sum(1, keepdim=True)
    w = torch.where(s > 0, w / s.clamp_min(1e-12), torch.zeros_like(w)).float()
    return torch.where(valid, idx, torch.full_like(idx, -1)), w


def manifold_loss(r: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """RoMA's term, averaged over the batch: ``mean_i Σ_j w_ij Σ_l ‖r_i^l − t_ij^l‖²``.

    ``r`` ``[B, L, E]`` (with graph), ``targets`` ``[B, k, L, E]`` (the neighbours' detached routing),
    ``w`` ``[B, k]`` (0 for a missing neighbour).
    """
    r = check_tensor(r, "r", ndim=3, dtype="float", layout="[B, L, E]")
    targets = check_tensor(targets, "targets", ndim=4, dtype="float", layout="[B, k, L, E]")
    w = check_tensor(w, "w", ndim=2, dtype="float", layout="[B, k]")
    if targets.shape[0] != r.shape[0] or targets.shape[2:] != r.shape[1:] or tuple(w.shape) != targets.shape[:2]:
        raise InputError(
            f"shapes do not fit: r {tuple(r.shape)}, targets {tuple(targets.shape)} (want [B, k, L, E]), "
            f"w {tuple(w.shape)} (want [B, k])"
        )
    d2 = ((r.unsqueeze(1) - targets.detach()) ** 2).sum((-1, -2))
    return (w * d2).sum(1).mean()


# ----------------------------------------------------------------------------------------------
# Router fine-tuning.


@dataclass
class FinetuneHistory:
    """Per epoch: mean CE, mean manifold term, share of the training set in the successful set (RoMA only)."""

    ce: list[float] = field(default_factory=list)
    manifold: list[float] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)
    n_trainable: int = 0


def finetune_routers(
    model: nn.Module,
    train: MultitaskData,
    emb: torch.Tensor,
    *,
    layers: Sequence[int],
    lam: float = 1.0,
    k: int = 3,
    lr: float = 1e-2,
    epochs: int = 3,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[nn.Module, FinetuneHistory]:
    """A copy of ``model`` whose routers of ``layers`` (only) were trained with CE + ``lam`` × the manifold term.

    ``lam=0`` is the CE-only baseline (same data, order and steps). ``emb`` ``[N, D]``: the task
    embeddings of ``train`` (:func:`task_embeddings`). At the start of every epoch the successful set,
    the neighbours (:func:`successful_neighbours`, tie-break seed ``seed + epoch``) and their detached
    routing targets are recomputed with the current routers. Adam, batches shuffled from ``seed``.
    """
    train = _check_data(train)
    emb = check_tensor(emb, "emb", shape=(len(train), None), dtype="float", layout="[N, D]")
    lam = check_float(lam, "lam", low=0.0)
    lr = check_float(lr, "lr", low=0.0)
    if lr == 0.0:
        raise InputError("`lr` must be > 0")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    seed = check_int(seed, "seed", low=0, high=2**31)
    model = copy.deepcopy(model).eval()  # no dropout; train mode is irrelevant for the tiny models
    layers = list(layers)
    params = _freeze_to_routers(model, layers)
    names = _router_map(model, layers)
    mods = dict(model.named_modules())
    hist = FinetuneHistory(
        [], [], [], [f"{n}.{p}" for n in names.values() for p, _ in mods[n].named_parameters(recurse=False)]
    )
    hist.n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=lr)
    targets_all = answer_targets(train)
    pos_all = train.prompt_len - 1
    mask_all = train.mask.long()
    gen = torch.Generator().manual_seed(seed)
    for epoch in progress(range(epochs), desc="router fine-tuning", disable=not show_progress):
        if lam > 0:  # the CE-only baseline needs no successful set
            routing, ok = routing_and_correct(model, train, layers)
            nbr, w = successful_neighbours(emb, ok, k, seed=seed + epoch)
            hist.success.append(float(ok.float().mean()))
        order = torch.randperm(len(train), generator=gen)
        ce_sum = man_sum = 0.0
        for s in range(0, len(order), batch_size):
            b = order[s : s + batch_size]
            logits, r = _forward_with_routing(model, train.ids[b], mask_all[b], layers, pos_all[b])
            ce = answer_loss(logits, targets_all[b].to(logits.device))
            if lam > 0:
                man = manifold_loss(r, routing[nbr[b].clamp_min(0)].to(r.device), w[b].to(r.device))
            else:
                man = torch.zeros((), device=r.device)
            loss = ce + lam * man
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ce_sum += float(ce.detach()) * len(b)
            man_sum += float(man.detach()) * len(b)
        hist.ce.append(ce_sum / len(train))
        hist.manifold.append(man_sum / len(train))
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), hist


# ----------------------------------------------------------------------------------------------
# Oracle routing and alignment metrics.


def oracle_routing(
    model: nn.Module, data: MultitaskData, layers: Sequence[int], *, steps: int = 20, lr: float = 0.5
) -> torch.Tensor:
    """Bool ``[N]``: correct after optimising each example's routing logits with its label (the upper bound).

    Per example a free offset ``δ ∈ R^{L×E}`` is added to the router logits of ``layers`` at every
    position (``δ = 0`` is the model's own routing) and ``steps`` Adam steps minimise the answer CE.
    Examples do not interact (each ``δ`` only affects its own sequence), so all run as one batch. Needs
    :class:`~xattr_nb.models.moe.TopKMoEMLP` blocks (the override hook). [recon: the paper's oracle
    parametrisation is not stated in the abstract.]
    """
    data = _check_data(data)
    steps = check_int(steps, "steps", low=0)
    lr = check_float(lr, "lr", low=0.0)
    layers = list(layers)
    _router_map(model, layers)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    e = dict(model.named_modules())[router_names(model)[layers[0]]].weight.shape[0]
    dev = device_of(model)
    delta = torch.zeros(len(data), len(layers), e, device=dev, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    targets, ids, mask = answer_targets(data).to(dev), data.ids.to(dev), data.mask.long().to(dev)
    fns = {layer: (lambda z, j=j: z + delta[:, j].unsqueeze(1)) for j, layer in enumerate(layers)}
    with override_routing(model, fns):
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=mask).logits
            # a sum over examples: each δ_i gets exactly its own example's gradient
            loss = answer_loss(logits, targets) * len(data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return exact_match(model(input_ids=ids, attention_mask=mask).logits, targets).cpu()


def _flat_routing(routing: Any) -> np.ndarray:
    r = routing.detach().cpu().numpy() if isinstance(routing, torch.Tensor) else np.asarray(routing)
    if r.ndim not in (2, 3) or r.shape[0] < 2:
        raise InputError(f"`routing` must be [N, L, E] or [N, D] with N >= 2; got shape {r.shape}")
    return r.reshape(r.shape[0], -1).astype(np.float64)


def knn_task_agreement(routing: Any, labels: Any, k: int = 5) -> float:
    """Mean share of each sample's ``k`` nearest neighbours in routing space (Euclidean on the concatenated
    ``[N, L·E]`` weights, itself excluded) that share its task label. 1/n_tasks for routing blind to tasks."""
    from sklearn.neighbors import NearestNeighbors

    r = _flat_routing(routing)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (r.shape[0],):
        raise InputError(f"`labels` must have shape ({r.shape[0]},); got {y.shape}")
    k = check_int(k, "k", low=1, high=r.shape[0] - 1)
    nn_idx = NearestNeighbors(n_neighbors=k + 1).fit(r).kneighbors(r, return_distance=False)
    # drop the sample itself (not always column 0 when duplicates tie at distance 0)
    others = np.array([[j for j in row if j != i][:k] for i, row in enumerate(nn_idx)])
    return float((y[others] == y[:, None]).mean())


def cross_group_knn_agreement(routing: Any, labels: Any, groups: Any, k: int = 5) -> float:
    """:func:`knn_task_agreement` with each sample's neighbours taken only among samples of **another group**
    (here: another paraphrase of the instruction). RoMA's neighbours are almost always samples of the same
    paraphrase, so the manifold term optimises same-paraphrase agreement; this control asks whether routing
    also groups *different* phrasings of one task, which the term does not optimise directly. 1/n_tasks (per
    group mix) for routing blind to tasks."""
    r = torch.as_tensor(_flat_routing(routing))
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    g = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
    if y.shape != (r.shape[0],) or g.shape != (r.shape[0],):
        raise InputError(f"`labels` and `groups` must each have shape ({r.shape[0]},); got {y.shape} and {g.shape}")
    others = (g[None, :] != g[:, None]).sum(1)
    if others.min() < 1:
        raise InputError("`groups` must hold at least two distinct groups (a sample needs neighbours of another)")
    k = check_int(k, "k", low=1, high=int(others.min()))
    d = torch.cdist(r, r)
    d[torch.as_tensor(g[None, :] == g[:, None])] = float("inf")  # same group (and the sample itself) excluded
    idx = d.topk(k, dim=1, largest=False).indices.numpy()
    return float((y[idx] == y[:, None]).mean())


def routing_silhouette(routing: Any, labels: Any) -> float:
    """scikit-learn's silhouette score of the routing weights (Euclidean) with the task labels as clusters."""
    from sklearn.metrics import silhouette_score

    r = _flat_routing(routing)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (r.shape[0],) or len(np.unique(y)) < 2:
        raise InputError(f"`labels` must have shape ({r.shape[0]},) and at least 2 distinct values")
    return float(silhouette_score(r, y))


def expert_usage_entropy(routing: Any, top_k: int) -> float:
    """How evenly samples use the experts: per layer, the share of samples whose top-``top_k`` experts include
    expert ``e``, normalised to a distribution ``u`` over the ``E`` experts; its entropy divided by ``log E``,
    averaged over the layers.

    ``routing`` ``[N, L, E]`` (full-softmax weights, e.g. :func:`prompt_routing`). 1 = every expert chosen
    equally often; ``log(top_k) / log(E)`` = the same ``top_k`` experts for every sample (routing collapsed
    onto one choice). Ties are broken by ``torch.topk``'s order.
    """
    r = check_tensor(routing, "routing", ndim=3, dtype="float", layout="[N, L, E]")
    n, _, e = r.shape
    if n < 1 or e < 2:
        raise InputError(f"`routing` needs at least one sample and two experts; got shape {tuple(r.shape)}")
    top_k = check_int(top_k, "top_k", low=1, high=e)
    chosen = torch.zeros_like(r, dtype=torch.float64).scatter_(-1, r.topk(top_k, dim=-1).indices, 1.0)
    u = chosen.sum(0) / (n * top_k)  # [L, E], each row sums to 1
    h = -(u * u.clamp_min(1e-300).log()).sum(-1)
    return float(h.mean() / np.log(e))


def expert_load(routing: Any, top_k: int) -> torch.Tensor:
    """``[L, E]``: per layer, each expert's share of the samples' top-``top_k`` choices (rows sum to 1; ``1/E``
    everywhere when balanced). The distribution whose entropy :func:`expert_usage_entropy` reports."""
    r = check_tensor(routing, "routing", ndim=3, dtype="float", layout="[N, L, E]")
    n, _, e = r.shape
    if n < 1 or e < 2:
        raise InputError(f"`routing` needs at least one sample and two experts; got shape {tuple(r.shape)}")
    top_k = check_int(top_k, "top_k", low=1, high=e)
    chosen = torch.zeros_like(r, dtype=torch.float64).scatter_(-1, r.topk(top_k, dim=-1).indices, 1.0)
    return chosen.sum(0) / (n * top_k)


def max_load(routing: Any, top_k: int) -> float:
    """Load imbalance: the busiest expert's share of the top-``top_k`` choices over the balanced share ``1/E``,
    averaged over the layers. 1 = balanced; ``E/top_k`` = every sample sent to the same ``top_k`` experts."""
    u = expert_load(routing, top_k)
    return float((u.max(-1).values * u.shape[-1]).mean())


def _top_k(model: nn.Module, layers: Sequence[int]) -> int:
    """Experts per token of the MoE blocks of ``layers``: ``TopKMoEMLP.k``, an HF block's ``top_k``, or the
    config's ``num_experts_per_tok``."""
    mods = dict(model.named_modules())
    for name in _router_map(model, layers).values():
        block = mods[name.rsplit(".", 1)[0]]
        for attr in ("k", "top_k", "num_experts_per_tok"):
            v = getattr(block, attr, None)
            if isinstance(v, int):
                return v
    v = getattr(getattr(model, "config", None), "num_experts_per_tok", None)
    if isinstance(v, int):
        return v
    raise InputError(f"cannot tell how many experts per token {type(model).__name__} uses; pass `top_k`")


def experts_per_token(model: nn.Module, layers: Sequence[int]) -> int:
    """The ``top_k`` of the MoE blocks of ``layers`` (what :func:`expert_load` and :func:`max_load` need)."""
    return _top_k(model, layers)


def evaluate(
    model: nn.Module, test: MultitaskData, layers: Sequence[int], *, k: int = 5, top_k: int | None = None
) -> dict[str, float]:
    """Held-out exact match (all, rare, frequent paraphrases), routing–task alignment (kNN agreement, silhouette,
    and the kNN agreement among other paraphrases only, :func:`cross_group_knn_agreement`), and the expert-usage
    entropy and load imbalance of the prompt routing (:func:`expert_usage_entropy`, :func:`max_load`; ``top_k``
    experts per token, read from the model when None)."""
    test = _check_data(test)
    ok = correct(model, test)
    r = prompt_routing(model, test, layers)
    top_k = _top_k(model, layers) if top_k is None else top_k
    return {
        "acc": float(ok.float().mean()),
        "acc_rare": float(ok[test.rare].float().mean()),
        "acc_frequent": float(ok[~test.rare].float().mean()),
        "knn_agreement": knn_task_agreement(r, test.task, k),
        "knn_cross_paraphrase": cross_group_knn_agreement(r, test.task, test.paraphrase, k),
        "silhouette": routing_silhouette(r, test.task),
        "usage_entropy": expert_usage_entropy(r, top_k),
        "max_load": max_load(r, top_k),
    }


@dataclass
class Comparison:
    """What :func:`explain` ran: per variant (``base``, ``ce_only``, ``roma``) one :func:`evaluate` dict per seed,
    the fine-tuning histories, and the models of the last seed (for plots)."""

    results: dict[str, list[dict[str, float]]]
    histories: dict[str, list[FinetuneHistory]]
    models: dict[str, nn.Module]

    def mean(self, variant: str, metric: str) -> float:
        return float(np.mean([r[metric] for r in self.results[variant]]))

    def values(self, metric: str) -> dict[str, list[float]]:
        """Per variant, the metric at every seed (what a bar plot with seed dots needs)."""
        return {v: [r[metric] for r in rs] for v, rs in self.results.items()}


def explain(
    base: nn.Module,
    train: MultitaskData,
    emb: torch.Tensor,
    test: MultitaskData,
    *,
    layers: Sequence[int],
    seeds: Sequence[int],
    lam: float = 1.0,
    k: int = 3,
    lr: float = 1e-2,
    epochs: int = 3,
    knn_k: int = 5,
) -> Comparison:
    """The entry point: the base model, then CE-only (``lam=0``) and RoMA router fine-tuning from the same base
    for each seed (:func:`finetune_routers`), all evaluated on ``test`` with :func:`evaluate`.

    ``emb`` ``[N, D]``: the task embeddings of ``train`` (:func:`task_embeddings` of ``train.instructions``).
    Returns a :class:`Comparison` (per-seed metrics, fine-tuning histories, the last seed's models).
    """
    if isinstance(seeds, int) or not isinstance(seeds, Sequence) or not seeds:
        raise InputError(f"`seeds` must be a non-empty list of ints; got {seeds!r}")
    results: dict[str, list[dict[str, float]]] = {
        "base": [evaluate(base, test, layers, k=knn_k)],
        "ce_only": [],
        "roma": [],
    }
    histories: dict[str, list[FinetuneHistory]] = {"ce_only": [], "roma": []}
    models: dict[str, nn.Module] = {"base": base}
    for seed in progress(list(seeds), desc="fine-tuning seeds", unit="seed"):
        for name, weight in (("ce_only", 0.0), ("roma", lam)):
            model, hist = finetune_routers(
                base, train, emb, layers=layers, lam=weight, k=k, lr=lr, epochs=epochs, seed=seed, show_progress=False
            )
            results[name].append(evaluate(model, test, layers, k=knn_k))
            histories[name].append(hist)
            models[name] = model
    return Comparison(results, histories, models)
