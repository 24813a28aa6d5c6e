"""Causal paths: interventions on hidden channels give a class's causal graph and a "causal CAM".

Paper: Ahmad, Bereux, Baret, Hashemi, Lecue, *Causal Analysis for Robust Interpretability of
Neural Networks*, WACV 2024 (arXiv 2305.08950).

**This module is a RECONSTRUCTION from the paper's abstract**, not a port: no code and no method
text were in reach (spec ``06_causal_paths.md`` §5.2, tag [recon]). What the abstract states is the
idea: intervene on hidden units along paths, keep the cause–effect mechanisms that drive a class,
discard the rest, and read explanations from the resulting graph. The intervention value, the
effect measure, the path definition, the thresholds and the map below are our choices.

The steps, each a small function (the notebook calls them one by one):

1. :func:`reference` — the value ``a*`` an intervention sets a channel to: its mean map over an
   *intervention set* of images (or zero).
2. :func:`channel_effects` — per image, the drop in the target's probability when one channel is
   set to ``a*``: ``p_c(x) − p_c(x | do(A_u = a*_u))``. :func:`node_effects` averages it over the
   images of each class: the node causal effect ``CE_c(u)``.
3. :func:`edge_effects` — the same for one *edge* ``j → i`` of a conv layer: channel ``j``'s
   contribution ``W_ij * A_j`` is replaced by ``W_ij * a*_j`` in output channel ``i`` only, every
   other output channel untouched. :func:`path_effects` averages it per class: ``PE_c(j → i)``.
4. :func:`build_graph` — top-down: keep the top-k channels of the last conv layer by ``CE_c``, then
   for each kept node its top-k incoming edges by ``PE_c``, whose tails are the next level's nodes.
   Each class's graph is a :class:`~xattr_nb.interventions.Circuit` of channel nodes
   (:func:`class_circuit`), shown by :class:`~xattr_nb.widgets.CircuitView`; the node effects convert
   to ``Attribution(kind="components")`` (:meth:`CausalPaths.to_attribution`).
5. :func:`causal_cam` — ``ReLU(Σ_{u ∈ G_c} CE_c(u) · A_u(x))`` upsampled to the image: a CAM whose
   weights are class-level causal effects, fixed for every image (hence, we expect, stable).
   :func:`ablation_cam` uses per-image effects instead (the same interventions, no class average).
6. Evaluation: :func:`graph_faithfulness` (recall drop when the graph's channels are ablated, vs
   random non-graph channels, through :func:`xattr_nb.metrics.class_recall`). The map stability
   metrics are shared: :func:`xattr_nb.metrics.max_sensitivity` (captum's ``sensitivity_max``) and
   :func:`xattr_nb.metrics.noise_spearman` (rank agreement of the maps of ``x`` and ``x`` + noise).

:func:`explain` chains 1–5 and returns an :class:`~xattr_nb.attribution.Attribution`.

The effect is a probability difference, as in the spec; ``output="logit"`` or ``"logprob"`` measure
it on the logit or the log-probability instead (probabilities saturate near 1 on a confident model,
which shrinks every single-channel effect).

What is written by hand, and why: channel and edge interventions on conv layers, their batched
effects and the graph search (captum has layer ablation but no edge-level ``do()``; TransformerLens
and nnsight target transformers). Standard pieces come from libraries and shared layers: the
baselines from captum, the stability and recall metrics from :mod:`xattr_nb.metrics`; the graph is the project's
:class:`~xattr_nb.interventions.Circuit` (networkx through ``Circuit.to_networkx``).

Interventions are forward hooks from :mod:`xattr_nb.interventions` (removed on exit, also on
errors). Many interventions share one forward: the hook *fans out* the layer's output into one
copy per intervention, so the layers before it run once (``fan_out=True``; a model with a skip
connection around the hooked layer needs ``fan_out=False``, which repeats the inputs instead).

Models come from the shared scale switch :func:`xattr_nb.models.load_image_model`: the zoo's
``shapes_cnn`` at ``scale="cpu"``; at full scale (``scale="full"`` in the notebook) a Hugging Face
image classifier (e.g. ``microsoft/resnet-50``) behind a ``[0, 1]``-pixel interface; :func:`xattr_nb.worlds.folders.load_image_folder` reads an ImageNet-style folder and
:func:`hf_resnet_layout` finds the layers to intervene on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int, check_target, check_tensor
from xattr_nb.interventions import (
    Circuit,
    CircuitEdge,
    CircuitNode,
    first_tensor,
    get_module,
    hooks,
    node_name,
    patch_output,
    run_with_cache,
)
from xattr_nb.metrics import class_recall
from xattr_nb.models.io import check_model, device_of, logits_of
from xattr_nb.plots import DIVERGING, figure, show
from xattr_nb.runtime import Cost, progress, timer

__all__ = [
    "CausalPaths",
    "Layout",
    "ablation_cam",
    "build_graph",
    "causal_cam",
    "channel_effects",
    "channel_intervention",
    "class_circuit",
    "class_means",
    "edge_effects",
    "explain",
    "first_per_class",
    "graph_faithfulness",
    "hf_resnet_layout",
    "node_effects",
    "path_effects",
    "path_intervention",
    "plot_effects",
    "plot_path_effects",
    "reference",
    "tinycnn_layout",
    "top_edges",
]

_MAX_BYTES = 64 * 2**20  # activations held by one fanned-out forward


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_images(x: Any, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, ndim=4, dtype="float", layout="[B, C, H, W]")


def _n_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(logits_of(model(x[:1]), ndim=2).shape[-1])


def _check_conv(model: nn.Module, name: str) -> nn.Conv2d:
    conv = get_module(model, name)
    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"`{name}` must name an nn.Conv2d for a path intervention; it is a {type(conv).__name__}")
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise InputError(
            f"`{name}`: path interventions need a plain conv (groups=1, zero padding); "
            f"got groups={conv.groups}, padding_mode={conv.padding_mode!r}"
        )
    return conv


def _check_ref(ref: Any, shape: Sequence[int], name: str = "ref") -> torch.Tensor:
    """A reference ``[C, h, w]`` (one map per channel) or ``[C]`` (one value per channel)."""
    ref = check_tensor(ref, name, ndim=(1, 3), dtype="float", layout="[C, h, w] or [C]")
    c = shape[0]
    if ref.shape[0] != c:
        raise InputError(f"`{name}` has {ref.shape[0]} channels but the layer has {c}")
    if ref.ndim == 3 and tuple(ref.shape[1:]) != tuple(shape[1:]):
        raise InputError(f"`{name}` maps are {tuple(ref.shape[1:])} but the layer's maps are {tuple(shape[1:])}")
    return ref if ref.ndim == 3 else ref[:, None, None].expand(c, *shape[1:])


def _channels(channels: Any, n: int, name: str = "channels") -> torch.Tensor:
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [int(channels)]
    if isinstance(channels, (list, tuple, np.ndarray)):
        channels = torch.as_tensor(np.asarray(channels, dtype=np.int64))
    t = check_tensor(channels, name, ndim=1, dtype="int", layout="[S]").long()
    if bool(((t < 0) | (t >= n)).any()):
        raise InputError(f"`{name}` must lie in [0, {n}); got {t[(t < 0) | (t >= n)].tolist()}")
    return t


_OUTPUTS = ("prob", "logit", "logprob")


def _score(logits: torch.Tensor, output: str) -> torch.Tensor:
    """The class score an effect is measured on: softmax probability, raw logit or log-probability."""
    if output == "prob":
        return logits.softmax(-1)
    if output == "logprob":
        return logits.log_softmax(-1)
    return logits


def _probs(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, output: str = "prob", batch_size: int = 256
) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            p = _score(logits_of(model(x[s : s + batch_size]), ndim=2), output)
            out.append(p.gather(1, target[s : s + batch_size, None])[:, 0])
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Layout: which layer holds the nodes, which convs carry the paths
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the graph lives in a model.

    - ``layer``: the module whose output channels are the top nodes (the last conv block; its
      output is what a CAM weighs);
    - ``path_convs``: top-down, the convs whose edges are the paths: ``path_convs[0]``'s output
      channels are ``layer``'s channels, ``path_convs[k]``'s input channels are level ``k + 1``;
    - ``levels``: a name per level (``levels[0]`` describes ``layer``), for figures.
    """

    layer: str
    path_convs: tuple[str, ...]
    levels: tuple[str, ...]


def tinycnn_layout(model: nn.Module) -> Layout:
    """The layout of a :class:`~xattr_nb.models.TinyCNN` (or any model with ``blocks[i].conv``):
    nodes at ``blocks.{L-1}``, paths through ``blocks.{L-1}.conv`` … ``blocks.1.conv``.

    Block ``i``'s conv reads (the 2×2 max-pooled) output of block ``i − 1``, and each of its output
    channels feeds one channel of the block through batch norm and ReLU, so an edit of conv output
    channel ``i`` reaches node ``i`` only: the path definition holds exactly.
    """
    check_model(model)
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not all(
        isinstance(getattr(b, "conv", None), nn.Conv2d) for b in blocks
    ):
        raise InputError("`model` must keep its conv blocks in `model.blocks` with a `.conv` each (a TinyCNN)")
    n = len(blocks)
    return Layout(
        layer=f"blocks.{n - 1}",
        path_convs=tuple(f"blocks.{i}.conv" for i in range(n - 1, 0, -1)),
        levels=tuple(f"blocks.{i}" for i in range(n - 1, -1, -1)),
    )


def hf_resnet_layout(model: nn.Module, *, depth: int = 2) -> Layout:
    """The layout of a Hugging Face ResNet (``ResNetForImageClassification``, possibly inside an
    :class:`~xattr_nb.models.ImageClassifier`, whose modules are then named ``hf.resnet...``): nodes at the last stage's output, paths through the convs of that
    stage's last residual layer, last conv first (``depth`` of them).

    The last conv's output channel ``i`` reaches stage output ``i`` only (batch norm, the residual
    add and ReLU are per channel), so its edges are paths; the residual branch itself is not
    intervened on (spec §5.8: skips are a separate edge we leave out). Residual blocks need
    ``fan_out=False`` for path effects.
    """
    check_model(model)
    names = [n for n, _ in model.named_modules()]
    stages = [n for n in names if n.split(".")[-2:-1] == ["stages"]]
    if not stages:
        raise InputError("`model` has no `...encoder.stages.<i>` modules: it is not a Hugging Face ResNet")
    last = max(stages, key=lambda n: int(n.rsplit(".", 1)[1]))
    n_layers = 1 + max(int(n.split(".")[-1]) for n in names if n.rsplit(".", 1)[0] == f"{last}.layers")
    block = f"{last}.layers.{n_layers - 1}.layer"
    n_convs = 1 + max(int(n.split(".")[-1]) for n in names if n.rsplit(".", 1)[0] == block)
    depth = check_int(depth, "depth", low=1, high=n_convs)
    stage = f"stage{int(last.rsplit('.', 1)[1]) + 1}"
    convs = tuple(f"{block}.{k}.convolution" for k in range(n_convs - 1, n_convs - 1 - depth, -1))
    levels = (stage, *(f"{stage}.conv{k + 1}.in" for k in range(n_convs - 1, n_convs - 1 - depth, -1)))
    return Layout(layer=last, path_convs=convs, levels=levels)


def first_per_class(y: Any, n: int) -> torch.Tensor:
    """``[B]`` bool: the first ``n`` images of each class in ``y`` (to split one labelled set into a
    disjoint intervention set and evaluation set)."""
    y = check_tensor(torch.as_tensor(y), "y", ndim=1, dtype="int", layout="[B]")
    n = check_int(n, "n", low=1)
    out = torch.zeros(y.shape[0], dtype=torch.bool)
    for c in y.unique().tolist():
        out[torch.nonzero(y == c).flatten()[:n]] = True
    return out


# --------------------------------------------------------------------------------------------
# 1. References and single interventions
# --------------------------------------------------------------------------------------------


def reference(
    model: nn.Module, name: str, x: torch.Tensor, *, how: str = "mean", at: str = "output", batch_size: int = 256
) -> torch.Tensor:
    """The intervention value ``a*`` of every channel of module ``name``: ``[C, h, w]``.

    ``how="mean"``: the channel's mean map over the images ``x`` (the intervention set; it must
    be disjoint from the images you evaluate on). ``how="zero"``: zeros. ``at="output"`` takes the
    module's output (a node layer), ``at="input"`` what the module reads (a conv's input, the
    reference of its path interventions: after any pooling in between).
    """
    check_model(model)
    x = _check_images(x)
    check_choice(how, ("mean", "zero"), "how")
    check_choice(at, ("output", "input"), "at")
    batch_size = check_int(batch_size, "batch_size", low=1)
    total: torch.Tensor | None = None

    def grab(_m: nn.Module, args: tuple, output: Any = None) -> None:
        nonlocal total
        t = args[0] if at == "input" else first_tensor(output)
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise InputError(f"module {name!r} {at} must be feature maps [B, C, h, w] for a channel reference")
        s = t.detach().double().sum(0)
        total = s if total is None else total + s

    fn = (lambda m, a: grab(m, a)) if at == "input" else grab
    with torch.no_grad(), hooks(model, {name: fn}, kind="pre" if at == "input" else "forward"):
        for s in range(0, x.shape[0], batch_size):
            model(x[s : s + batch_size])
    if total is None:
        raise InputError(f"module {name!r} did not run in the model's forward")
    ref = (total / x.shape[0]).float()
    return torch.zeros_like(ref) if how == "zero" else ref


@contextmanager
def channel_intervention(model: nn.Module, name: str, channels: Any, ref: torch.Tensor) -> Iterator[nn.Module]:
    """Within the ``with``: ``do(A_u := a*_u)`` for each ``u`` in ``channels`` of module ``name``'s output.

    ``ref`` is the reference ``[C, h, w]`` (or ``[C]``) from :func:`reference`. Built on
    :func:`xattr_nb.interventions.patch_output`; every other channel keeps its value.
    """
    check_model(model)

    def edit(out: torch.Tensor) -> torch.Tensor:
        if out.ndim != 4:
            raise InputError(f"module {name!r} must output feature maps [B, C, h, w]; got {tuple(out.shape)}")
        r = _check_ref(ref, tuple(out.shape[1:])).to(out)
        ch = _channels(channels, out.shape[1]).to(out.device)
        new = out.clone()
        new[:, ch] = r[ch]
        return new

    with patch_output(model, name, edit) as mod:
        yield mod


def _edge_delta(conv: nn.Conv2d, inp: torch.Tensor, ref_in: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``[B, E, h', w']``: for each edge ``(j, i)``, ``W_ij * (A_j − a*_j)``, the part of conv output
    channel ``i`` that channel ``j`` adds beyond its reference (a conv is linear in its input, so
    subtracting this from output ``i`` is exactly "``j`` at its reference, for ``i`` only")."""
    j, i = edges[:, 0], edges[:, 1]
    diff = inp[:, j] - ref_in[j].to(inp)
    w = conv.weight[i, j].unsqueeze(1)  # [E, 1, k, k]
    return F.conv2d(diff, w, None, conv.stride, conv.padding, conv.dilation, groups=edges.shape[0])


@contextmanager
def path_intervention(
    model: nn.Module, conv: str, in_ch: int, out_ch: int, ref_in: torch.Tensor
) -> Iterator[nn.Module]:
    """Within the ``with``: the edge ``in_ch → out_ch`` of conv ``conv`` sees channel ``in_ch`` at its
    reference ``ref_in[in_ch]``; every other output channel, and every other input of ``out_ch``, is
    untouched. ``ref_in`` is :func:`reference` of the conv with ``at="input"``."""
    mod = _check_conv(check_model(model), conv)
    in_ch = check_int(in_ch, "in_ch", low=0, high=mod.in_channels - 1)
    out_ch = check_int(out_ch, "out_ch", low=0, high=mod.out_channels - 1)
    edge = torch.tensor([[in_ch, out_ch]])

    def hook(m: nn.Conv2d, args: tuple, out: torch.Tensor) -> torch.Tensor:
        r = _check_ref(ref_in, tuple(args[0].shape[1:]), "ref_in")
        new = out.clone()
        new[:, out_ch] -= _edge_delta(m, args[0], r, edge)[:, 0]
        return new

    with hooks(model, {conv: hook}):
        yield mod


# --------------------------------------------------------------------------------------------
# 2–3. Batched effects: many interventions in one forward (fan-out)
# --------------------------------------------------------------------------------------------


def _fanned_probs(
    model: nn.Module,
    name: str,
    x: torch.Tensor,
    target: torch.Tensor,
    n_variants: int,
    variants: Callable[[nn.Module, tuple, torch.Tensor, slice], torch.Tensor],
    *,
    output: str,
    fan_out: bool,
    row_bytes: int,
    max_bytes: int,
    batch_size: int,
) -> torch.Tensor:
    """Target probabilities ``[B, K]`` under ``K`` interventions at module ``name``.

    ``variants(module, args, out, ks)`` returns the outputs ``[len(ks), b, ...]`` of the
    interventions ``ks`` on a batch whose clean output is ``out`` ``[b, ...]``. With ``fan_out`` the
    hook turns the ``b`` rows into ``len(ks) * b`` (the layers before ``name`` run once); without,
    the inputs are repeated and the hook edits each copy.
    """
    k_per = max(1, min(n_variants, max_bytes // max(1, row_bytes * min(batch_size, x.shape[0]))))
    out_p = torch.empty(x.shape[0], n_variants)
    state: dict[str, Any] = {}

    def hook(m: nn.Module, args: tuple, out: Any) -> Any:
        t = first_tensor(out)
        ks, b = state["ks"], state["b"]
        if fan_out:
            new = variants(m, args, t, ks)  # [k, b, ...]
        else:
            k = ks.stop - ks.start
            clean = t.view(k, b, *t.shape[1:])[0]
            new = variants(m, tuple(a.view(k, b, *a.shape[1:])[0] for a in args), clean, ks)
        return new.reshape(-1, *t.shape[1:])

    with torch.no_grad(), hooks(model, {name: hook}):
        for s in range(0, x.shape[0], batch_size):
            xb, tb = x[s : s + batch_size], target[s : s + batch_size]
            b = xb.shape[0]
            for k0 in range(0, n_variants, k_per):
                ks = slice(k0, min(n_variants, k0 + k_per))
                k = ks.stop - ks.start
                state.update(ks=ks, b=b)
                inp = xb if fan_out else xb.repeat(k, *([1] * (xb.ndim - 1)))
                try:
                    logits = logits_of(model(inp), ndim=2)
                except RuntimeError as exc:
                    raise InputError(
                        f"the fanned-out forward at {name!r} failed ({exc}); a skip connection around it mixes "
                        "copies with the clean batch: pass fan_out=False"
                    ) from exc
                if logits.shape[0] != k * b:
                    raise InputError(
                        f"the model returned {logits.shape[0]} rows for {k} interventions × {b} images; "
                        "pass fan_out=False for this model"
                    )
                p = _score(logits, output).view(k, b, -1).gather(2, tb.view(1, b, 1).expand(k, b, 1))[..., 0]
                out_p[s : s + b, ks] = p.T.cpu()
    return out_p


def channel_effects(
    model: nn.Module,
    name: str,
    x: torch.Tensor,
    target: Any,
    ref: torch.Tensor,
    *,
    channels: Any = None,
    output: str = "prob",
    fan_out: bool = True,
    batch_size: int = 64,
    max_bytes: int = _MAX_BYTES,
) -> torch.Tensor:
    """Per-image effect of each single-channel intervention: ``[B, S]``.

    ``effect[b, s] = p_t(x_b) − p_t(x_b | do(A_{u_s} := a*_{u_s}))`` with ``t = target[b]``,
    ``u_s = channels[s]`` (default: every channel of module ``name``) and ``a*`` = ``ref``. A
    positive effect means the channel's actual activation supports the target. Without class
    averaging these are the weights of an Ablation-CAM-like map (:func:`ablation_cam`).
    """
    model = check_model(model)
    x = _check_images(x).to(device_of(model))
    target = check_target(target, _n_classes(model, x), x.shape[0]).to(x.device)
    batch_size = check_int(batch_size, "batch_size", low=1)
    max_bytes = check_int(max_bytes, "max_bytes", low=1)
    check_choice(output, _OUTPUTS, "output")
    _, cache = run_with_cache(model, x[:1], names=[name])
    shape = tuple(cache[name].shape[1:])
    if len(shape) != 3:
        raise InputError(f"module {name!r} must output feature maps [B, C, h, w]; got {(1, *shape)}")
    r = _check_ref(ref, shape).to(x.device)
    ch = torch.arange(shape[0]) if channels is None else _channels(channels, shape[0])
    ch = ch.to(x.device)

    def variants(_m: nn.Module, _args: tuple, out: torch.Tensor, ks: slice) -> torch.Tensor:
        c = ch[ks]
        new = out.unsqueeze(0).repeat(len(c), *([1] * out.ndim))  # [k, b, C, h, w]
        new[torch.arange(len(c)), :, c] = r[c].unsqueeze(1)
        return new

    row_bytes = math.prod(shape) * 4
    p_do = _fanned_probs(
        model, name, x, target, len(ch), variants, output=output, fan_out=fan_out, row_bytes=row_bytes,
        max_bytes=max_bytes, batch_size=batch_size,
    )  # fmt: skip
    return _probs(model, x, target, output).cpu()[:, None] - p_do


def edge_effects(
    model: nn.Module,
    conv: str,
    x: torch.Tensor,
    target: Any,
    edges: Any,
    ref_in: torch.Tensor,
    *,
    output: str = "prob",
    fan_out: bool = True,
    batch_size: int = 64,
    max_bytes: int = _MAX_BYTES,
) -> torch.Tensor:
    """Per-image effect of each single-edge intervention of conv ``conv``: ``[B, E]``.

    ``edges`` ``[E, 2]`` holds ``(j, i)`` pairs: input channel ``j`` → output channel ``i``.
    ``effect[b, e] = p_t(x_b) − p_t(x_b | do_path(j → i))`` where ``do_path`` replaces the term
    ``W_ij * A_j`` of output ``i`` by ``W_ij * a*_j`` (``a*`` = ``ref_in``, the conv-input reference)
    and leaves every other output channel as it was.
    """
    model = check_model(model)
    mod = _check_conv(model, conv)
    x = _check_images(x).to(device_of(model))
    target = check_target(target, _n_classes(model, x), x.shape[0]).to(x.device)
    if isinstance(edges, (list, tuple)):
        edges = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    edges = check_tensor(edges, "edges", ndim=2, dtype="int", layout="[E, 2] (j, i) pairs").long()
    if edges.shape[1] != 2:
        raise InputError(f"`edges` must be [E, 2] (in-channel j, out-channel i) pairs; got {tuple(edges.shape)}")
    if bool(((edges[:, 0] < 0) | (edges[:, 0] >= mod.in_channels)).any()):
        raise InputError(f"`edges[:, 0]` (input channels) must lie in [0, {mod.in_channels})")
    if bool(((edges[:, 1] < 0) | (edges[:, 1] >= mod.out_channels)).any()):
        raise InputError(f"`edges[:, 1]` (output channels) must lie in [0, {mod.out_channels})")
    check_choice(output, _OUTPUTS, "output")
    edges = edges.to(x.device)
    shapes: dict[str, tuple[int, ...]] = {}

    def grab(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        shapes["in"], shapes["out"] = tuple(args[0].shape[1:]), tuple(out.shape[1:])

    with torch.no_grad(), hooks(model, {conv: grab}):
        model(x[:1])
    r = _check_ref(ref_in, shapes["in"], "ref_in").to(x.device)

    def variants(m: nn.Module, args: tuple, out: torch.Tensor, ks: slice) -> torch.Tensor:
        e = edges[ks]
        delta = _edge_delta(m, args[0], r, e)  # [b, k, h', w']
        new = out.unsqueeze(0).repeat(len(e), *([1] * out.ndim))  # [k, b, C, h', w']
        new[torch.arange(len(e)), :, e[:, 1]] -= delta.transpose(0, 1)
        return new

    row_bytes = math.prod(shapes["out"]) * 4 * 2  # the copies and their downstream activations
    p_do = _fanned_probs(
        model, conv, x, target, edges.shape[0], variants, output=output, fan_out=fan_out, row_bytes=row_bytes,
        max_bytes=max_bytes, batch_size=batch_size,
    )  # fmt: skip
    return _probs(model, x, target, output).cpu()[:, None] - p_do


def _class_rows(y: torch.Tensor, classes: Sequence[int]) -> dict[int, torch.Tensor]:
    rows = {c: torch.nonzero(y == c).flatten() for c in classes}
    empty = [c for c, r in rows.items() if r.numel() == 0]
    if empty:
        raise InputError(f"`y` has no image of class(es) {empty}: each class needs images in the intervention set")
    return rows


def class_means(effects: torch.Tensor, y: Any, classes: Sequence[int]) -> torch.Tensor:
    """Average per-image effects ``[B, S]`` over the images of each class: ``[len(classes), S]``.

    This is the only difference between a class-level causal effect (:func:`node_effects`) and the
    per-image effects an instance-level map uses (:func:`ablation_cam`).
    """
    effects = check_tensor(effects, "effects", ndim=2, dtype="float", layout="[B, S]")
    y = check_target(y, 2**62, effects.shape[0], "y").to(effects.device)
    rows = _class_rows(y, list(classes))
    return torch.stack([effects[rows[c]].mean(0) for c in classes])


def node_effects(
    model: nn.Module,
    name: str,
    x: torch.Tensor,
    y: Any,
    ref: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    output: str = "prob",
    fan_out: bool = True,
    batch_size: int = 64,
) -> torch.Tensor:
    """Node causal effects ``CE_c(u) = E_{x ∈ D_c}[p_c(x) − p_c(x | do(A_u := a*_u))]``: ``[K, C]``.

    ``D_c`` are the images of ``x`` labelled ``c`` (``y``); row ``k`` is class ``classes[k]``
    (default: every class of the model). One fanned-out forward per batch computes all channels.
    """
    model = check_model(model)
    x = _check_images(x)
    n_cls = _n_classes(model, x.to(device_of(model)))
    y = check_target(y, n_cls, x.shape[0], "y")
    classes = (
        list(range(n_cls)) if classes is None else [check_int(c, "classes[i]", low=0, high=n_cls - 1) for c in classes]
    )
    _class_rows(y, classes)  # every class needs images: fail before the forwards
    eff = channel_effects(model, name, x, y, ref, output=output, fan_out=fan_out, batch_size=batch_size)
    return class_means(eff, y, classes)


def path_effects(
    model: nn.Module,
    conv: str,
    x: torch.Tensor,
    target: int,
    heads: Any,
    ref_in: torch.Tensor,
    *,
    output: str = "prob",
    fan_out: bool = True,
    batch_size: int = 64,
) -> torch.Tensor:
    """Path effects ``PE_c(j → i)`` into the output channels ``heads`` of conv ``conv``: ``[len(heads), C_in]``.

    ``x`` are the images of class ``c = target`` (``D_c``); entry ``[a, j]`` is the mean over ``x``
    of :func:`edge_effects` for the edge ``j → heads[a]``, every input channel ``j`` tried.
    """
    mod = _check_conv(check_model(model), conv)
    heads = _channels(heads, mod.out_channels, "heads")
    c_in = mod.in_channels
    edges = torch.stack([torch.arange(c_in).repeat(len(heads)), heads.repeat_interleave(c_in)], 1)
    eff = edge_effects(model, conv, x, target, edges, ref_in, output=output, fan_out=fan_out, batch_size=batch_size)
    return eff.mean(0).view(len(heads), c_in)


# --------------------------------------------------------------------------------------------
# 4. The causal graph
# --------------------------------------------------------------------------------------------


@dataclass
class CausalPaths:
    """What :func:`build_graph` measured and kept over the channels of a CNN; the graph of each class
    is a :class:`~xattr_nb.interventions.Circuit` (``circuits[c]``), drawn by
    :class:`~xattr_nb.widgets.CircuitView`.

    - ``layout``: where it lives (:class:`Layout`); ``classes``: the class indices it covers.
    - ``node_effects`` ``[K, C_L]``: ``CE_c`` of every channel of ``layout.layer`` (row = class);
      :meth:`to_attribution` hands them on as ``Attribution(kind="components")``.
    - ``circuits[c]``: the causal graph of class ``c``. Its nodes are channels (kind ``"channel"``):
      level ``l`` of the search (level 0 = ``layout.layer``'s kept top nodes, level ``l + 1`` the tails
      of level ``l``'s kept edges) is circuit layer ``depth - l``, so layers run in forward order,
      and ``meta["layer_names"]`` names them by module. Edges ``j -> i`` carry ``PE_c(j -> i)``, and
      each top node has an edge to ``"logits"`` carrying ``CE_c(u)``. A top node's score is
      ``CE_c(u)``; a lower node's score is the sum of its kept outgoing path effects.
    - ``path_matrices[c][l]`` ``[len(level l), C_in]``: every ``PE_c`` computed at that step.
    - ``refs``: the references used (``layout.layer`` output, then each path conv's input).
    """

    layout: Layout
    classes: list[int]
    node_effects: torch.Tensor
    circuits: dict[int, Circuit]
    path_matrices: dict[int, list[torch.Tensor]]
    refs: dict[str, torch.Tensor]
    top_k_nodes: int
    top_k_edges: int
    depth: int
    output: str = "prob"
    cost: Cost = field(default_factory=Cost)

    @property
    def layer_names(self) -> list[str]:
        """The module of each circuit layer, in forward order (the last is ``layout.layer``)."""
        return [self.layout.levels[self.depth - layer] for layer in range(self.depth + 1)]

    def row(self, c: int) -> int:
        if c not in self.classes:
            raise InputError(f"class {c} is not in this graph; it covers {self.classes}")
        return self.classes.index(c)

    def channels(self, c: int, level: int = 0) -> torch.Tensor:
        """The kept channels of level ``level`` for class ``c`` (level 0: the top nodes, strongest first)."""
        self.row(c)
        level = check_int(level, "level", low=0, high=self.depth)
        chans = [n.index for n in self.circuits[c].nodes if n.kind == "channel" and n.layer == self.depth - level]
        return torch.tensor(chans, dtype=torch.long)

    def path_edges(self, c: int, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept edges into level ``level`` of class ``c``: ``(edges [E, 2] as (j, i), PE_c [E])``,
        ``j`` a channel of level ``level + 1`` and ``i`` one of level ``level``."""
        self.row(c)
        if self.depth == 0:
            raise InputError("this graph has no path level (it was built with depth=0)")
        level = check_int(level, "level", low=0, high=self.depth - 1)
        circ, dst = self.circuits[c], self.depth - level
        by_name = {n.name: n for n in circ.nodes}
        kept = [(by_name[e.src].index, by_name[e.dst].index, e.weight) for e in circ.edges
                if e.dst != "logits" and by_name[e.dst].layer == dst]  # fmt: skip
        pairs = torch.tensor([[j, i] for j, i, _ in kept], dtype=torch.long).view(-1, 2)
        return pairs, torch.tensor([w for *_, w in kept], dtype=self.node_effects.dtype)

    def weights(self) -> torch.Tensor:
        """``[K, C_L]`` CAM weights: ``CE_c(u)`` for the kept top nodes ``u``, zero elsewhere."""
        w = torch.zeros_like(self.node_effects)
        for k, c in enumerate(self.classes):
            top = self.channels(c, 0)
            w[k, top] = self.node_effects[k, top]
        return w

    def to_attribution(self) -> Attribution:
        """The node effects as ``Attribution(kind="components")``: one row per class (``target`` = the
        class), one column per channel of ``layout.layer`` (labels ``"L<depth>.C<u>"``, the names of
        :attr:`circuits`' top nodes). ``to_circuit(paths.to_attribution(), example=k)`` is then class
        ``classes[k]``'s total effects (every channel -> logits); ``circuits[c]`` keeps the paths."""
        labels = [node_name("channel", self.depth, u) for u in range(self.node_effects.shape[1])]
        meta = {
            "layer": self.layout.layer, "layer_names": self.layer_names, "n_layers": self.depth + 1,
            "output": self.output, "reconstruction": True,
        }  # fmt: skip
        return Attribution(
            scores=self.node_effects.float().cpu(), kind="components", method="causal_paths",
            target=torch.tensor(self.classes), cost=self.cost, labels=labels, meta=meta,
        )  # fmt: skip

    def __repr__(self) -> str:
        sizes = {c: [len(self.channels(c, lvl)) for lvl in range(self.depth + 1)] for c in self.classes}
        return f"CausalPaths(layer={self.layout.layer!r}, classes={self.classes}, nodes per level={sizes}, cost=({self.cost}))"


def class_circuit(
    c: int,
    node_effects: torch.Tensor,
    levels: Sequence[torch.Tensor],
    edges: Sequence[torch.Tensor],
    effects: Sequence[torch.Tensor],
    layer_names: Sequence[str],
) -> Circuit:
    """The causal graph of class ``c`` as a :class:`~xattr_nb.interventions.Circuit` (see :class:`CausalPaths`).

    ``node_effects`` ``[C_L]`` is ``CE_c``; ``levels[l]`` the kept channels of level ``l`` (level 0 the
    top nodes, in rank order); ``edges[l]`` ``[E, 2]`` the kept ``(j, i)`` edges from level ``l + 1``
    into level ``l`` and ``effects[l]`` ``[E]`` their ``PE_c``; ``layer_names`` the modules of the
    levels in forward order."""
    depth = len(levels) - 1
    if len(edges) != depth or len(effects) != depth or len(layer_names) != depth + 1:
        raise InputError("`levels`, `edges`, `effects` and `layer_names` must describe the same levels")
    out_pe: dict[str, float] = {}
    arcs: dict[tuple[str, str], float] = {}
    for lvl, (e, w) in enumerate(zip(edges, effects, strict=True)):
        for (j, i), pe in zip(e.tolist(), w.tolist(), strict=True):
            src = node_name("channel", depth - lvl - 1, j)
            arcs[(src, node_name("channel", depth - lvl, i))] = pe
            out_pe[src] = out_pe.get(src, 0.0) + pe
    nodes = [
        CircuitNode(node_name("channel", depth - lvl, u), "channel", depth - lvl, None,
                    float(node_effects[u]) if lvl == 0 else out_pe[node_name("channel", depth - lvl, u)], u)
        for lvl, chans in enumerate(levels)
        for u in chans.tolist()
    ]  # fmt: skip
    nodes.append(CircuitNode("logits", "logits", depth + 1))
    arcs |= {(node_name("channel", depth, u), "logits"): float(node_effects[u]) for u in levels[0].tolist()}
    meta = {
        "method": "causal_paths",
        "class": c,
        "layer_names": list(layer_names),
        "title": f"causal graph of class {c}",
    }
    return Circuit(nodes, [CircuitEdge(s, d, w) for (s, d), w in arcs.items()], meta)


def top_edges(pe: torch.Tensor, heads: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` strongest incoming edges of each head: ``(edges [E, 2] as (j, i), effects [E])``.

    ``pe`` ``[len(heads), C_in]`` are the path effects; edges are ranked by effect (largest first,
    ties by channel index), so a head keeps the inputs whose removal hurts the class most.
    """
    pe = check_tensor(pe, "pe", ndim=2, dtype="float", layout="[n_heads, C_in]")
    k = check_int(k, "k", low=1, high=pe.shape[1])
    if pe.shape[0] != len(heads):
        raise InputError(f"`pe` has {pe.shape[0]} rows but there are {len(heads)} heads")
    order = torch.argsort(-pe, dim=1, stable=True)[:, :k]
    j = order.flatten()
    i = heads.repeat_interleave(k)
    return torch.stack([j, i], 1), pe.gather(1, order).flatten()


def build_graph(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    *,
    layout: Layout | None = None,
    top_k_nodes: int = 5,
    top_k_edges: int = 3,
    depth: int | None = None,
    how: str = "mean",
    output: str = "prob",
    classes: Sequence[int] | None = None,
    n_path_images: int | None = None,
    fan_out: bool = True,
    show_progress: bool = False,
) -> CausalPaths:
    """Build the causal graph of each class top-down from the intervention set ``(x, y)``.

    1. ``CE_c`` of every channel of ``layout.layer`` (:func:`node_effects`); keep the top
       ``top_k_nodes`` per class.
    2. For ``depth`` path steps (default: every conv of ``layout.path_convs``): the ``PE_c`` of
       every edge into each kept node (:func:`path_effects`, on the first ``n_path_images`` images
       of class ``c``; default all); keep each node's ``top_k_edges`` strongest edges; their tails
       are the next level's nodes.

    ``layout`` defaults to :func:`tinycnn_layout`. ``how`` is the reference (``"mean"`` or
    ``"zero"``). The intervention set must be disjoint from the images you explain. Each class's graph
    comes back as a :class:`~xattr_nb.interventions.Circuit` (``result.circuits[c]``).
    """
    model = check_model(model)
    x = _check_images(x).to(device_of(model))
    layout = tinycnn_layout(model) if layout is None else layout
    if not isinstance(layout, Layout):
        raise InputError(f"`layout` must be a Layout (see tinycnn_layout); got {type(layout).__name__}")
    top_k_nodes = check_int(top_k_nodes, "top_k_nodes", low=1)
    top_k_edges = check_int(top_k_edges, "top_k_edges", low=1)
    depth = len(layout.path_convs) if depth is None else check_int(depth, "depth", low=0, high=len(layout.path_convs))
    check_choice(how, ("mean", "zero"), "how")
    check_choice(output, _OUTPUTS, "output")
    if n_path_images is not None:
        n_path_images = check_int(n_path_images, "n_path_images", low=1)
    n_cls = _n_classes(model, x)
    y = check_target(y, n_cls, x.shape[0], "y").to(x.device)
    classes = (
        list(range(n_cls)) if classes is None else [check_int(c, "classes[i]", low=0, high=n_cls - 1) for c in classes]
    )
    rows = _class_rows(y, classes)

    with timer() as t:
        refs = {layout.layer: reference(model, layout.layer, x, how=how)}
        for conv in layout.path_convs[:depth]:
            refs[conv] = reference(model, conv, x, how=how, at="input")
        ce = node_effects(
            model, layout.layer, x, y, refs[layout.layer], classes=classes, output=output, fan_out=fan_out
        )
        c_l = ce.shape[1]
        if top_k_nodes > c_l:
            raise InputError(f"`top_k_nodes` ({top_k_nodes}) exceeds the {c_l} channels of {layout.layer!r}")
        nodes: dict[int, list[torch.Tensor]] = {}
        edges: dict[int, list[torch.Tensor]] = {}
        effects: dict[int, list[torch.Tensor]] = {}
        mats: dict[int, list[torch.Tensor]] = {}
        n_fwd = x.shape[0] * (1 + c_l)
        bar = progress(total=len(classes) * depth, disable=not show_progress or depth == 0, desc="path effects")
        for k, c in enumerate(classes):
            nodes[c] = [torch.argsort(-ce[k], stable=True)[:top_k_nodes]]
            edges[c], effects[c], mats[c] = [], [], []
            xc = x[rows[c]][:n_path_images]
            for conv in layout.path_convs[:depth]:
                heads = nodes[c][-1]
                pe = path_effects(model, conv, xc, c, heads, refs[conv], output=output, fan_out=fan_out)
                e, w = top_edges(pe, heads, min(top_k_edges, pe.shape[1]))
                mats[c].append(pe)
                edges[c].append(e)
                effects[c].append(w)
                nodes[c].append(torch.unique(e[:, 0]))
                n_fwd += xc.shape[0] * (1 + pe.numel())
                bar.update(1)
        bar.close()
    names = [layout.levels[depth - layer] for layer in range(depth + 1)]
    circuits = {c: class_circuit(c, ce[k], nodes[c], edges[c], effects[c], names) for k, c in enumerate(classes)}
    return CausalPaths(
        layout=layout,
        classes=classes,
        node_effects=ce,
        circuits=circuits,
        path_matrices=mats,
        refs=refs,
        top_k_nodes=top_k_nodes,
        top_k_edges=top_k_edges,
        depth=depth,
        output=output,
        cost=Cost(forward=n_fwd, wall_s=t["s"]),
    )


# --------------------------------------------------------------------------------------------
# 5. Maps: causal CAM and its instance-level counterpart
# --------------------------------------------------------------------------------------------


def _cam(acts: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``ReLU(Σ_u w_u A_u)`` per image, upsampled bilinearly to ``size``: ``[B, H, W]``."""
    from captum.attr import LayerAttribution

    cam = torch.relu(torch.einsum("bc,bchw->bhw", weights.to(acts), acts))
    return LayerAttribution.interpolate(cam[:, None], size, interpolate_mode="bilinear")[:, 0]


def causal_cam(model: nn.Module, x: torch.Tensor, target: Any, graph: CausalPaths) -> torch.Tensor:
    """Causal CAM ``M_c(x) = ReLU(Σ_{u ∈ G_c} CE_c(u) · A_u(x))``, upsampled to the image: ``[B, H, W]``.

    ``A`` is the output of ``graph.layout.layer``; ``G_c`` the class's kept top nodes. The weights
    are class-level effects, the same for every image: only the activations depend on ``x``.
    One forward per image, no gradient. Not normalised (``Attribution.normalized`` does that).
    """
    model = check_model(model)
    if not isinstance(graph, CausalPaths):
        raise InputError(f"`graph` must be CausalPaths (see build_graph); got {type(graph).__name__}")
    x = _check_images(x).to(device_of(model))
    with torch.no_grad():
        _, cache = run_with_cache(model, x, names=[graph.layout.layer])
    acts = cache[graph.layout.layer]
    n_cls = _n_classes(model, x)
    target = check_target(target, n_cls, x.shape[0])
    missing = sorted(set(target.tolist()) - set(graph.classes))
    if missing:
        raise InputError(f"`target` holds class(es) {missing} that the graph does not cover ({graph.classes})")
    rows = torch.tensor([graph.classes.index(int(t)) for t in target])
    return _cam(acts, graph.weights()[rows].to(acts.device), tuple(x.shape[-2:]))


def ablation_cam(
    model: nn.Module, x: torch.Tensor, target: Any, layer: str, ref: torch.Tensor, *, fan_out: bool = True
) -> torch.Tensor:
    """Instance-level counterpart: ``ReLU(Σ_u e_u(x) · A_u(x))`` with ``e_u(x)`` the image's own
    single-channel effects (:func:`channel_effects`, every channel of ``layer``), in the spirit of
    Ablation-CAM. The same interventions as :func:`causal_cam`, without the class average."""
    model = check_model(model)
    x = _check_images(x).to(device_of(model))
    eff = channel_effects(model, layer, x, target, ref, fan_out=fan_out)
    with torch.no_grad():
        _, cache = run_with_cache(model, x, names=[layer])
    return _cam(cache[layer], eff.to(x.device), tuple(x.shape[-2:]))


# --------------------------------------------------------------------------------------------
# 6. Evaluation: graph faithfulness and map stability
# --------------------------------------------------------------------------------------------


def graph_faithfulness(
    model: nn.Module, x: torch.Tensor, y: Any, graph: CausalPaths, *, n_random: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Does the graph hold the class's mechanism? Recall drops on held-out ``(x, y)``.

    Per class ``c``: ``graph_drop`` = recall − recall with the graph's top nodes set to their
    reference; ``random_drop`` = the mean drop over ``n_random`` draws of as many channels taken
    at random among the *non-graph* channels (seeded). Returns per-class tensors and their means
    (``"graph_drop"``, ``"random_drop"``), plus ``"recall"``.
    """
    if not isinstance(graph, CausalPaths):
        raise InputError(f"`graph` must be CausalPaths (see build_graph); got {type(graph).__name__}")
    n_random = check_int(n_random, "n_random", low=1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    layer, ref = graph.layout.layer, graph.refs[graph.layout.layer]
    rng = np.random.default_rng(seed)
    n_ch = graph.node_effects.shape[1]
    rec, g_drop, r_drop = [], [], []
    for c in graph.classes:
        top = graph.channels(c, 0)
        base = class_recall(model, x, y, c)
        rec.append(base)
        g_drop.append(base - class_recall(model, x, y, c, ablate=top, layer=layer, ref=ref))
        pool = np.setdiff1d(np.arange(n_ch), top.numpy())
        draws = [rng.choice(pool, size=len(top), replace=False) for _ in range(n_random)]
        r_drop.append(
            float(np.mean([base - class_recall(model, x, y, c, ablate=d, layer=layer, ref=ref) for d in draws]))
        )
    out = {
        "recall": torch.tensor(rec),
        "graph_drop_per_class": torch.tensor(g_drop),
        "random_drop_per_class": torch.tensor(r_drop),
    }
    out["graph_drop"] = float(out["graph_drop_per_class"].mean())
    out["random_drop"] = float(out["random_drop_per_class"].mean())
    return out


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    graph: CausalPaths | None = None,
    x_int: torch.Tensor | None = None,
    y_int: Any = None,
    layout: Layout | None = None,
    top_k_nodes: int = 5,
    top_k_edges: int = 3,
    how: str = "mean",
) -> Attribution:
    """Causal CAM of ``x`` for ``target``, as a pixel :class:`Attribution` (method ``"causal_cam"``).

    Pass a ``graph`` from :func:`build_graph`, or the intervention set ``(x_int, y_int)`` to build
    one (then ``meta["graph"]`` holds it). ``cost`` counts the graph's forwards (if built here)
    plus one forward per explained image.
    """
    model = check_model(model)
    x = _check_images(x)
    if graph is None:
        if x_int is None or y_int is None:
            raise InputError("pass `graph`, or the intervention set `x_int`, `y_int` to build one")
        graph = build_graph(
            model, x_int, y_int, layout=layout, top_k_nodes=top_k_nodes, top_k_edges=top_k_edges, how=how
        )
        built = graph.cost
    else:
        built = Cost()
    with timer() as t:
        maps = causal_cam(model, x, target, graph)
    tgt = check_target(target, _n_classes(model, x.to(device_of(model))), x.shape[0])
    return Attribution(
        scores=maps.float().cpu(),
        kind="pixels",
        method="causal_cam",
        target=tgt,
        cost=built + Cost(forward=x.shape[0], wall_s=t["s"]),
        meta={"graph": graph, "layer": graph.layout.layer, "reconstruction": True},
    )


# --------------------------------------------------------------------------------------------
# Figures (paper-specific; built on xattr_nb.plots.figure, displayed by xattr_nb.plots.show)
# --------------------------------------------------------------------------------------------


def plot_effects(effects: torch.Tensor, ce: torch.Tensor, y: Any, classes: Sequence[str]) -> Any:
    """Left: per-image effects ``[B, C]`` with rows grouped by class; right: class means ``[K, C]``."""
    effects = check_tensor(effects, "effects", ndim=2, dtype="float", layout="[B, C]").cpu()
    ce = check_tensor(ce, "ce", ndim=2, dtype="float", layout="[K, C]").cpu()
    order = torch.argsort(torch.as_tensor(y).cpu(), stable=True)
    fig = figure(9, 2.8)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    lim = float(effects.abs().max()) or 1.0
    ax1.imshow(effects[order].numpy(), aspect="auto", cmap=DIVERGING, vmin=-lim, vmax=lim)
    ax1.set(xlabel="channel u", ylabel="image (grouped by class)", title="per-image effect")
    lim = float(ce.abs().max()) or 1.0
    im = ax2.imshow(ce.numpy(), aspect="auto", cmap=DIVERGING, vmin=-lim, vmax=lim)
    ax2.set(xlabel="channel u", yticks=range(len(classes)), yticklabels=list(classes), title="CE_c(u): class mean")
    fig.colorbar(im, ax=ax2)
    return show(fig)


def plot_path_effects(pe: torch.Tensor, heads: torch.Tensor, edges: torch.Tensor, title: str = "") -> Any:
    """Path effects ``[n_heads, C_in]`` as a heatmap, the kept ``edges`` ``[E, 2]`` circled."""
    pe = check_tensor(pe, "pe", ndim=2, dtype="float", layout="[n_heads, C_in]").cpu()
    fig = figure(9, 0.3 * pe.shape[0] + 1.2)
    ax = fig.add_subplot()
    lim = float(pe.abs().max()) or 1.0
    ax.imshow(pe.numpy(), aspect="auto", cmap=DIVERGING, vmin=-lim, vmax=lim)
    rows = {int(i): r for r, i in enumerate(heads.tolist())}
    ax.scatter(edges[:, 0].tolist(), [rows[int(i)] for i in edges[:, 1]], s=60, facecolors="none", edgecolors="k")
    ax.set(xlabel="input channel j", yticks=range(len(rows)), yticklabels=[f"node {i}" for i in rows], title=title)
    return show(fig)
