"""SAGE (Liu et al., ICLR 2024): adversarial search over a text-to-image model's latents for
generations that fail their prompt, found with a surrogate classifier ensemble and verified by a
judge that is not among the classifiers searched against (spec ``23_sage.md``).

**Reconstructed** (the paper has no official code; spec §6.2 [recon]): the latent objective
``mean_k log softmax(D_k(G(z, p)))_c + λ · R_typ(z)`` with ``R_typ(z) = mean(z)² + (std(z) − 1)²``
(the "non-outlier" constraint), the residual gradient path (``TinyT2I.sample(residual_grad=True)``),
normalised gradient steps, and the stop rule "every member predicts ≠ c".

Steps:

- :func:`typicality` / :func:`typicality_penalty`: the non-outlier test and its penalty;
- :func:`latent_search`: batched gradient-guided search, one sampler call (forward + backward) per
  iteration, keeping per pair the first latent at which every member is fooled (else the last);
- :func:`random_search`: the baseline over the same space: ``budget`` fresh standard-normal latents
  per pair, keeping the one whose ensemble log-prob of the target is lowest (the same surrogate
  selection, no gradient), deterministic given ``seed``;
- :func:`judge_failures`: the verdict of the non-neural
  :func:`xattr_nb.metrics.generation.template_judge` on the found images;
- :func:`explain`: the entry point, both searches on the same (prompt, start) pairs.

``scale="full"`` (Stable Diffusion, ``TDM``) is not loadable offline; :func:`explain` refuses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor, check_texts
from xattr_nb.runtime import progress

__all__ = [
    "TDM",
    "SearchResult",
    "explain",
    "judge_failures",
    "latent_search",
    "random_search",
    "typicality",
    "typicality_penalty",
]

#: The paper-scale generator (spec §6.7); not loadable offline.
TDM = "runwayml/stable-diffusion-v1-5"


@dataclasses.dataclass
class SearchResult:
    """What a search found per (prompt, start) pair."""

    z: torch.Tensor  # [B, d] the latent kept
    images: torch.Tensor  # [B, 3, 32, 32] its generation
    target_logprob: torch.Tensor  # [B] ensemble mean log-prob of the target at the kept latent
    fooled: torch.Tensor  # [B] bool: every member predicts ≠ target there
    calls: torch.Tensor  # [B] sampler calls used until the latent was kept


def typicality_penalty(z: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``mean(z)² + (std(z) − 1)²`` per row (spec §6.2, reconstructed form of "non-outlier")."""
    z = check_tensor(z, "z", ndim=2, dtype="float", layout="[B, d] latents")
    return z.mean(1) ** 2 + (z.std(1) - 1) ** 2


def typicality(z: torch.Tensor, tol: float = 0.1) -> torch.Tensor:
    """``[B]`` bool: ``|mean z| < tol`` and ``|std z − 1| < tol`` (the spec's typicality test)."""
    z = check_tensor(z, "z", ndim=2, dtype="float", layout="[B, d] latents")
    tol = check_float(tol, "tol", low=0.0)
    return (z.mean(1).abs() < tol) & ((z.std(1) - 1).abs() < tol)


def _targets(target: Any, batch: int, n_classes: int) -> torch.Tensor:
    t = check_tensor(target, "target", ndim=1, dtype="int", layout="[B] class indices")
    if len(t) != batch or int(t.min()) < 0 or int(t.max()) >= n_classes:
        raise InputError(f"`target` must be [{batch}] class indices in [0, {n_classes}); got {tuple(t.shape)}")
    return t


def _gen(G: Any, cond: torch.Tensor, z: torch.Tensor, steps: int, cfg: float, grad: bool, residual: bool):
    return G.sample(cond, z, steps=steps, cfg=cfg, grad=grad, residual_grad=residual)


def latent_search(
    G: Any,
    ensemble: Any,
    cond: torch.Tensor,
    target: torch.Tensor,
    z0: torch.Tensor,
    *,
    head: str = "color",
    iters: int = 20,
    lr: float = 0.5,
    lam: float = 1.0,
    residual: bool = True,
    project: bool = True,
    steps: int = 20,
    cfg: float = 2.0,
    show_progress: bool = False,
) -> SearchResult:
    """Gradient-guided latent search (SAGE): minimise ``ensemble.logprob(G(z, cond))[target] + lam · R_typ(z)``
    by normalised gradient steps of size ``lr`` (per row, ``z ← z − lr · g / ||g||``), ``iters`` sampler
    calls at most; a pair stops at the first latent where every member predicts ≠ ``target``.
    ``project``: after each step, standardise each row to mean 0 and std 1 (the spec's alternative
    "project onto the typical shell"; the found latents then pass :func:`typicality` by construction)."""
    from xattr_nb.models.surrogates import HEADS

    check_choice(head, tuple(HEADS), "head")
    z = check_tensor(z0, "z0", ndim=2, dtype="float", layout="[B, d] starting latents").detach().clone()
    c = check_tensor(cond, "cond", ndim=2, dtype="float", layout="[B, 64] from G.cond")
    if len(c) != len(z):
        raise InputError(f"`cond` and `z0` must have the same batch; got {len(c)} and {len(z)}")
    t = _targets(target, len(z), HEADS[head])
    iters = check_int(iters, "iters", low=1)
    lr = check_float(lr, "lr", low=0.0)
    lam = check_float(lam, "lam", low=0.0)
    if project:
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-12)
    b = len(z)
    done = torch.zeros(b, dtype=torch.bool)
    kept = SearchResult(
        z.clone(), torch.zeros(b, 3, 32, 32), torch.zeros(b), done.clone(), torch.zeros(b, dtype=torch.long)
    )
    rows = torch.arange(b)
    for i in progress(range(iters), desc="latent search", disable=not show_progress):
        zv = z.clone().requires_grad_(True)
        x = _gen(G, c, zv, steps, cfg, True, residual)
        lp = ensemble.logprob(x, head)[rows, t]
        fooled = ensemble.all_wrong(x.detach(), t, head).cpu()
        new = (fooled | (i == iters - 1)) & ~done
        if new.any():
            kept.z[new] = zv.detach()[new].cpu()
            kept.images[new] = x.detach()[new].cpu()
            kept.target_logprob[new] = lp.detach()[new].cpu()
            kept.fooled[new] = fooled[new]
            kept.calls[new] = i + 1
        done |= new
        if bool(done.all()):
            break
        loss = (lp + lam * typicality_penalty(zv)).sum()
        (g,) = torch.autograd.grad(loss, zv)
        z = z - lr * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if project:
            z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-12)
    return kept


def random_search(
    G: Any,
    ensemble: Any,
    cond: torch.Tensor,
    target: torch.Tensor,
    *,
    budget: int = 20,
    head: str = "color",
    steps: int = 20,
    cfg: float = 2.0,
    seed: int = 0,
    show_progress: bool = False,
) -> SearchResult:
    """Random search at the same budget: ``budget`` fresh ``N(0, I)`` latents per pair (seeded), keeping per
    pair the one of lowest ensemble log-prob of ``target`` (``calls``: its index + 1)."""
    from xattr_nb.models.surrogates import HEADS

    check_choice(head, tuple(HEADS), "head")
    c = check_tensor(cond, "cond", ndim=2, dtype="float", layout="[B, 64] from G.cond")
    b = len(c)
    t = _targets(target, b, HEADS[head])
    budget = check_int(budget, "budget", low=1)
    seed = check_int(seed, "seed", low=0)
    rows = torch.arange(b)
    best = SearchResult(torch.zeros(b, G.net.z_mean.numel()), torch.zeros(b, 3, 32, 32), torch.full((b,), float("inf")),
                        torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.long))  # fmt: skip
    for i in progress(range(budget), desc="random search", disable=not show_progress):
        z = G.noise(b, seed=seed * 100003 + i)
        with torch.no_grad():
            x = _gen(G, c, z, steps, cfg, False, False)
            lp = ensemble.logprob(x, head)[rows, t].cpu()
            fooled = ensemble.all_wrong(x, t, head).cpu()
        better = lp < best.target_logprob
        best.z[better] = z.cpu()[better]
        best.images[better] = x.cpu()[better]
        best.target_logprob[better] = lp[better]
        best.fooled[better] = fooled[better]
        best.calls[better] = i + 1
    return best


def judge_failures(images: torch.Tensor, shapes: Sequence[str], colors: Sequence[str], head: str = "color"):
    """Judge-verified failures: ``(failed [B] bool, none [B] bool, judged names)``. For ``head="color"`` an
    image fails when :func:`~xattr_nb.metrics.generation.template_judge` sees a palette colour other than
    the prompted one; ``none`` marks images where it sees no object (excluded from failures: an empty
    or smeared image is off the data manifold, not a semantic failure)."""
    from xattr_nb.metrics.generation import JUDGE_NONE, template_judge

    check_choice(head, ("shape", "color"), "head")
    shapes = check_texts(shapes, "shapes")
    colors = check_texts(colors, "colors")
    js, jc = template_judge(images)
    if len(shapes) != len(js) or len(colors) != len(js):
        raise InputError(f"`shapes` and `colors` must name one prompt per image ({len(js)})")
    want, got = (colors, jc) if head == "color" else (shapes, js)
    none = torch.tensor([g == JUDGE_NONE for g in got])
    failed = torch.tensor([g != w and g != JUDGE_NONE for g, w in zip(got, want, strict=True)])
    return failed, none, (js, jc)


def explain(
    G: Any,
    ensemble: Any,
    combos: Sequence[tuple[str, str]],
    *,
    starts: int = 2,
    budget: int = 20,
    lr: float = 0.5,
    lam: float = 1.0,
    steps: int = 20,
    cfg: float = 2.0,
    seed: int = 0,
    scale: str = "cpu",
    template: str = "an image showing a {color} {shape}",
    show_progress: bool = False,
) -> dict[str, Any]:
    """Both searches on the same pairs (each of ``combos`` × ``starts`` starting latents), at ``budget``
    sampler calls each, targeting the prompted colour; returns ``{"sage", "random", "start"}`` results
    with judge verdicts, plus the pair labels."""
    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "full":
        raise InputError(f"`scale='full'` needs {TDM} (Stable Diffusion), which is not loadable offline")
    from xattr_nb.worlds import captions as W

    if not isinstance(combos, (list, tuple)) or not combos:
        raise InputError("`combos` must be a non-empty list of (shape, colour) pairs")
    for pair in combos:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InputError(f"`combos` must hold (shape, colour) pairs; got {pair!r}")
        s, c = pair
        if s not in W.SHAPES or c not in W.COLORS:
            raise InputError(f"`combos` must hold (shape, colour) names of the captions world; got {(s, c)}")
    starts = check_int(starts, "starts", low=1)
    seed = check_int(seed, "seed", low=0)
    shapes = [s for s, _ in combos] * starts
    colors = [c for _, c in combos] * starts
    cond = G.cond([template.format(shape=s, color=c) for s, c in zip(shapes, colors, strict=True)])
    target = torch.tensor([W.COLORS.index(c) for c in colors])
    z0 = G.noise(len(shapes), seed=seed)
    out: dict[str, Any] = {"shapes": shapes, "colors": colors, "target": target}
    with torch.no_grad():
        x0 = G.sample(cond, z0, steps=steps, cfg=cfg)
    out["start"] = SearchResult(z0.cpu(), x0.cpu(), ensemble.logprob(x0, "color")[torch.arange(len(z0)), target].detach().cpu(),
                                ensemble.all_wrong(x0, target, "color").cpu(), torch.ones(len(z0), dtype=torch.long))  # fmt: skip
    out["sage"] = latent_search(G, ensemble, cond, target, z0, iters=budget, lr=lr, lam=lam, steps=steps, cfg=cfg,
                                show_progress=show_progress)  # fmt: skip
    out["random"] = random_search(G, ensemble, cond, target, budget=budget, steps=steps, cfg=cfg, seed=seed + 1,
                                  show_progress=show_progress)  # fmt: skip
    for k in ("start", "sage", "random"):
        failed, none, judged = judge_failures(out[k].images, shapes, colors)
        out[f"{k}_failed"], out[f"{k}_none"], out[f"{k}_judged"] = failed, none, judged
    return out
