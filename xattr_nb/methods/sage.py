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

``scale="full"`` (spec §6.7): :func:`load_generator` gives Stable Diffusion (:data:`TDM`) behind
TinyT2I's interface (:class:`xattr_nb.models.sd.SDGenerator`, DDIM, flat latents ``[B, 4·64·64]``),
:func:`load_surrogates` the ImageNet-classifier ensemble :data:`ENSEMBLE` and a held-out classifier
judge :data:`JUDGE` (:class:`xattr_nb.models.surrogates.ImageNetEnsemble`, head ``"class"``), and
:func:`explain` then searches prompts ``FULL_TEMPLATE`` of ImageNet class names, verified by
:func:`classifier_judge_failures`. Deviations from the spec, said here: the adversarially robust
ResNet-50 and the CLIP ViT-L/14 zero-shot member have no transformers ImageNet-classifier checkpoint
(a standard ResNet-50 stands in, CLIP is left out), and the judge is a larger held-out ImageNet
classifier, not a human study. :func:`setup` gives notebook 23 all of these at either scale (``-p scale full``
runs the notebook on them); :func:`failure_modes` and :func:`failure_captions` read either judge's verdicts.
Wired and tested on tiny local stand-ins; not run at paper scale here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor, check_texts
from xattr_nb.models.sd import SD_MODEL, latent_dim_of
from xattr_nb.models.sd import load_t2i as load_generator
from xattr_nb.runtime import progress

__all__ = [
    "CLASSES",
    "CPU_TEMPLATE",
    "ENSEMBLE",
    "FULL_TEMPLATE",
    "JUDGE",
    "TDM",
    "SearchResult",
    "classifier_judge_failures",
    "explain",
    "failure_captions",
    "failure_modes",
    "judge_failures",
    "latent_search",
    "load_generator",
    "load_surrogates",
    "random_search",
    "setup",
    "typicality",
    "typicality_penalty",
]

#: The paper-scale generator (spec §6.7), loaded by :func:`load_generator` (diffusers, safetensors).
TDM = SD_MODEL  # SD 1.5 (the paper's runwayml/stable-diffusion-v1-5 is gone from the hub; its maintained copy)
#: The paper-scale surrogate ensemble (spec §6.7: ViT-B/16, ConvNeXt-T, a ResNet-50), transformers checkpoints.
ENSEMBLE = ("google/vit-base-patch16-224", "facebook/convnext-tiny-224", "microsoft/resnet-50")
#: The held-out judge at full scale (never searched against; the human study's stand-in).
JUDGE = ("facebook/convnext-large-224",)
#: Target ImageNet classes at full scale (an ImageNet subset, spec §6.7; label names as in ``id2label``).
CLASSES = ("goldfish", "tabby", "golden retriever", "tench", "school bus", "teapot", "volcano", "strawberry")
#: The prompt of a target ImageNet class at full scale.
FULL_TEMPLATE = "a photo of a {name}"
#: The prompt of a (shape, colour) pair at ``scale="cpu"``.
CPU_TEMPLATE = "an image showing a {color} {shape}"


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


def _heads(ensemble: Any) -> dict[str, int]:
    """The ensemble's heads and their class counts: the captions world's (:data:`~xattr_nb.models.surrogates.HEADS`)
    for the small surrogates, ``{"class": len(classes)}`` for an ImageNet ensemble."""
    from xattr_nb.models.surrogates import HEADS

    return getattr(ensemble, "head_sizes", HEADS)


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
    heads = _heads(ensemble)
    check_choice(head, tuple(heads), "head")
    z = check_tensor(z0, "z0", ndim=2, dtype="float", layout="[B, d] starting latents").detach().clone()
    c = check_tensor(cond, "cond", ndim=(2, 3), dtype="float", layout="[B, 64] (or [B, L, D]) from G.cond")
    if len(c) != len(z):
        raise InputError(f"`cond` and `z0` must have the same batch; got {len(c)} and {len(z)}")
    t = _targets(target, len(z), heads[head])
    iters = check_int(iters, "iters", low=1)
    lr = check_float(lr, "lr", low=0.0)
    lam = check_float(lam, "lam", low=0.0)
    if project:
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-12)
    b = len(z)
    done = torch.zeros(b, dtype=torch.bool)
    kept = SearchResult(z.clone(), None, torch.zeros(b), done.clone(), torch.zeros(b, dtype=torch.long))  # type: ignore[arg-type]
    rows = torch.arange(b)
    for i in progress(range(iters), desc="latent search", disable=not show_progress):
        zv = z.clone().requires_grad_(True)
        x = _gen(G, c, zv, steps, cfg, True, residual)
        lp = ensemble.logprob(x, head)[rows, t]
        fooled = ensemble.all_wrong(x.detach(), t, head).cpu()
        new = (fooled | (i == iters - 1)) & ~done
        if kept.images is None:
            kept.images = torch.zeros(b, *x.shape[1:])
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
    heads = _heads(ensemble)
    check_choice(head, tuple(heads), "head")
    c = check_tensor(cond, "cond", ndim=(2, 3), dtype="float", layout="[B, 64] (or [B, L, D]) from G.cond")
    b = len(c)
    t = _targets(target, b, heads[head])
    budget = check_int(budget, "budget", low=1)
    seed = check_int(seed, "seed", low=0)
    rows = torch.arange(b)
    best = SearchResult(torch.zeros(b, latent_dim_of(G)), None, torch.full((b,), float("inf")),  # type: ignore[arg-type]
                        torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.long))  # fmt: skip
    for i in progress(range(budget), desc="random search", disable=not show_progress):
        z = G.noise(b, seed=seed * 100003 + i)
        with torch.no_grad():
            x = _gen(G, c, z, steps, cfg, False, False)
            lp = ensemble.logprob(x, head)[rows, t].cpu()
            fooled = ensemble.all_wrong(x, t, head).cpu()
        if best.images is None:
            best.images = torch.zeros(b, *x.shape[1:])
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


def classifier_judge_failures(images: torch.Tensor, target: torch.Tensor, judge: Any):
    """The full-scale verdict: ``(failed [B] bool, none [B] bool (all False), judged label names)``, an image
    failing when every member of the held-out ``judge`` (an
    :class:`~xattr_nb.models.surrogates.ImageNetEnsemble`, not searched against) predicts a label other than
    ``judge.classes[target]``."""
    from xattr_nb.models.surrogates import ImageNetEnsemble

    if not isinstance(judge, ImageNetEnsemble):
        raise InputError(f"`judge` must be an ImageNetEnsemble (load_surrogates); got {type(judge).__name__}")
    with torch.no_grad():
        failed = judge.all_wrong(images, target, judge.HEAD).cpu()
        names = judge.label_names(judge.predictions(images)[0])
    return failed, torch.zeros_like(failed), names


def load_surrogates(classes: Sequence[str], *, ensemble: Sequence[str] = ENSEMBLE, judge: Sequence[str] = JUDGE,
                    device: str = "cpu") -> tuple[Any, Any]:  # fmt: skip
    """``(surrogate ensemble, judge)`` at ``scale="full"``: two
    :class:`~xattr_nb.models.surrogates.ImageNetEnsemble` over the target ImageNet ``classes``, from the
    image-classifier checkpoints ``ensemble`` and ``judge`` (hub names or ``save_pretrained`` folders,
    safetensors only). A judge that names one of the searched classifiers is refused."""
    from xattr_nb.models.surrogates import load_imagenet_ensemble

    if isinstance(ensemble, str) or isinstance(judge, str):
        raise InputError("`ensemble` and `judge` must be lists of classifier names or folders, not one string")
    shared = {str(n) for n in ensemble} & {str(n) for n in judge}
    if shared:
        raise InputError(f"`judge` must not contain a searched classifier (it would verify its own adversarial "
                         f"examples); shared: {sorted(shared)}")  # fmt: skip
    ens = load_imagenet_ensemble(ensemble, classes, device=device, arg="ensemble")
    return ens, load_imagenet_ensemble(judge, classes, device=device, arg="judge")


def _explain_full(
    G, ensemble, classes, *, judge, single, starts, budget, lr, lam, steps, cfg, seed, template, show_progress
):
    from xattr_nb.models.sd import SDGenerator
    from xattr_nb.models.surrogates import ImageNetEnsemble

    if not isinstance(G, SDGenerator):
        raise InputError(f"`G` must be an SDGenerator at scale='full' (load_generator('full')); got {type(G).__name__}")
    if not isinstance(ensemble, ImageNetEnsemble):
        raise InputError("`ensemble` must be an ImageNetEnsemble at scale='full' (load_surrogates); "
                         f"got {type(ensemble).__name__}")  # fmt: skip
    if not isinstance(judge, ImageNetEnsemble):
        raise InputError(
            "`judge` must be an ImageNetEnsemble held out from the search at scale='full' (load_surrogates)"
        )
    if any(j is m for j in judge.members for m in ensemble.members):
        raise InputError(
            "`judge` must not share a member with `ensemble` (it would verify its own adversarial examples)"
        )
    if not isinstance(classes, (list, tuple)) or not classes:
        raise InputError("`combos` must be a non-empty list of ImageNet class names at scale='full'")
    for n in classes:
        if n not in ensemble.classes or n not in judge.classes:
            raise InputError(f"`combos` must hold class names of both the ensemble and the judge; got {n!r}")
    template = FULL_TEMPLATE if template is None else template
    if "{name}" not in template:
        raise InputError(f"`template` must contain '{{name}}' at scale='full'; got {template!r}")
    names = list(classes) * starts
    cond = G.cond([template.format(name=n) for n in names])
    target = torch.tensor([ensemble.classes.index(n) for n in names])
    jt = torch.tensor([judge.classes.index(n) for n in names])
    z0 = G.noise(len(names), seed=seed)
    out: dict[str, Any] = {"classes": names, "target": target}
    with torch.no_grad():
        x0 = G.sample(cond, z0, steps=steps, cfg=cfg)
        lp0 = ensemble.logprob(x0, "class")[torch.arange(len(z0)), target].cpu()
        fooled0 = ensemble.all_wrong(x0, target, "class").cpu()
    out["start"] = SearchResult(z0.cpu(), x0.cpu(), lp0, fooled0, torch.ones(len(z0), dtype=torch.long))
    out["sage"] = latent_search(G, ensemble, cond, target, z0, head="class", iters=budget, lr=lr, lam=lam, steps=steps,
                                cfg=cfg, show_progress=show_progress)  # fmt: skip
    out["random"] = random_search(G, ensemble, cond, target, budget=budget, head="class", steps=steps, cfg=cfg,
                                  seed=seed + 1, show_progress=show_progress)  # fmt: skip
    if single is not None:
        out["single"] = latent_search(G, single, cond, target, z0, head="class", iters=budget, lr=lr, lam=lam,
                                      steps=steps, cfg=cfg)  # fmt: skip
    for k in ("start", "sage", "random", "single")[: 3 + (single is not None)]:
        failed, none, judged = classifier_judge_failures(out[k].images, jt, judge)
        out[f"{k}_failed"], out[f"{k}_none"], out[f"{k}_judged"] = failed, none, judged
    out["wanted"] = names
    return out


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
    template: str | None = None,
    judge: Any = None,
    single: Any = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Both searches on the same pairs (each of ``combos`` × ``starts`` starting latents), at ``budget``
    sampler calls each, targeting the prompted colour; returns ``{"sage", "random", "start"}`` results
    with judge verdicts, plus the pair labels (``template`` default :data:`CPU_TEMPLATE`).

    ``scale="full"``: ``G`` from :func:`load_generator`, ``ensemble`` and ``judge`` from
    :func:`load_surrogates`, ``combos`` a list of ImageNet class names (prompts ``template``, default
    :data:`FULL_TEMPLATE`), the target the prompted class, the verdict :func:`classifier_judge_failures`;
    the pair labels are ``"classes"``.

    ``single`` (optional, both scales): a one-member ensemble; SAGE is then also run against it alone from the
    same starts (the spec's ablation), as ``"single"`` with its verdicts. ``"wanted"``: the prompted label
    the verdict is about (the colour at ``"cpu"``, the class at ``"full"``). The paper's sampler is ``steps=50, cfg=7.5``
    (:data:`xattr_nb.models.sd.STEPS`, :data:`~xattr_nb.models.sd.CFG`)."""
    check_choice(scale, ("cpu", "full"), "scale")
    starts = check_int(starts, "starts", low=1)
    seed = check_int(seed, "seed", low=0)
    if scale == "full":
        return _explain_full(G, ensemble, combos, judge=judge, single=single, starts=starts, budget=budget, lr=lr, lam=lam,
                             steps=steps, cfg=cfg, seed=seed, template=template, show_progress=show_progress)  # fmt: skip
    template = CPU_TEMPLATE if template is None else template
    from xattr_nb.worlds import captions as W

    if not isinstance(combos, (list, tuple)) or not combos:
        raise InputError("`combos` must be a non-empty list of (shape, colour) pairs")
    for pair in combos:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InputError(f"`combos` must hold (shape, colour) pairs; got {pair!r}")
        s, c = pair
        if s not in W.SHAPES or c not in W.COLORS:
            raise InputError(f"`combos` must hold (shape, colour) names of the captions world; got {(s, c)}")
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
    if single is not None:
        out["single"] = latent_search(G, single, cond, target, z0, iters=budget, lr=lr, lam=lam, steps=steps, cfg=cfg)
        out["single_failed"], out["single_none"], out["single_judged"] = judge_failures(out["single"].images, shapes,
                                                                                         colors)  # fmt: skip
    out["wanted"] = colors
    return out


def _seen(out: dict[str, Any], key: str) -> tuple[list[str], list[str]]:
    """What the judge saw per pair: (the label compared with ``out["wanted"]``, a caption of the whole verdict)."""
    judged = out[f"{key}_judged"]
    if "shapes" in out:  # the captions world: (shapes, colours) from template_judge
        js, jc = judged
        return list(jc), [f"{c} {s}" for s, c in zip(js, jc, strict=True)]
    return list(judged), list(judged)


def failure_modes(out: dict[str, Any], key: str = "sage") -> Counter:
    """The judge-verified failures of search ``key`` of :func:`explain`'s ``out`` grouped by
    ``"prompted → judged"`` label (colours at ``scale="cpu"``, ImageNet classes at ``"full"``)."""
    if f"{key}_failed" not in out:
        raise InputError(
            f"`key` must name a search of `out` ({', '.join(k[:-7] for k in out if k.endswith('_failed'))}); got {key!r}"
        )
    seen, _ = _seen(out, key)
    return Counter(f"{out['wanted'][i]} → {seen[i]}" for i in out[f"{key}_failed"].nonzero().flatten().tolist())


def failure_captions(out: dict[str, Any], idx: Sequence[int], key: str = "sage") -> list[str]:
    """Captions ``"prompt\n→ what the judge saw"`` of pairs ``idx`` of search ``key`` (for an image row)."""
    _, cap = _seen(out, key)
    if "shapes" in out:
        return [f"{out['colors'][i]} {out['shapes'][i]}\n→ {cap[i]}" for i in idx]
    return [f"{out['classes'][i]}\n→ {cap[i]}" for i in idx]


@dataclasses.dataclass
class Setup:
    """What notebook 23 searches with, at either scale (:func:`setup`)."""

    G: Any  # the generator (TinyT2I, or an SDGenerator)
    ensemble: Any  # the surrogates searched against
    single: Any  # the ensemble's first member alone (the ablation)
    judge: Any  # the verdict: template_judge at "cpu", a held-out ImageNetEnsemble at "full"
    targets: list  # explain's ``combos``: (shape, colour) pairs, or ImageNet class names
    accuracy: dict | None  # surrogates' and judge's accuracy on held-out renders ("cpu" only)
    renders: Any  # the held-out renders (a captions corpus, "cpu" only), the FID proxy's reference
    judge_held_out: bool  # the judge is not among the classifiers searched against
    judge_name: str  # what the judge is, in words
    label: str  # what the search targets: "colour" or "class"
    members: list  # the surrogates' names, the first being ``single``'s


def setup(scale: str = "cpu", *, seed: int = 0, device: str = "cpu", n_train: int = 1500, epochs: int = 3,
          full_model: str = TDM, full_classifiers: Sequence[str] = ENSEMBLE, full_judge: Sequence[str] = JUDGE,
          full_classes: Sequence[str] = CLASSES, gradient_checkpointing: bool = True) -> Setup:  # fmt: skip
    """The generator, surrogates and judge of notebook 23.

    ``scale="cpu"``: TinyT2I from the zoo, surrogates C1 (:class:`~xattr_nb.models.surrogates.SmallCNN`) and C2
    (:class:`~xattr_nb.models.surrogates.ClipMLP`) trained for ``epochs`` on ``n_train`` renders of the captions
    world (seeded by ``seed``), the template judge, targets the frequent (shape, colour) combos. ``scale="full"``:
    ``full_model`` through :func:`load_generator` (``gradient_checkpointing`` for the backward through the
    sampler), ``full_classifiers`` and the held-out ``full_judge`` through :func:`load_surrogates` over
    ``full_classes``, which are the targets; the ``full_*`` arguments are ignored at ``"cpu"``."""
    check_choice(scale, ("cpu", "full"), "scale")
    seed = check_int(seed, "seed", low=0)
    if scale == "full":
        from xattr_nb.models.surrogates import ImageNetEnsemble

        classes = check_texts(full_classes, "full_classes")
        G = load_generator("full", full=full_model, device=device, gradient_checkpointing=gradient_checkpointing)
        ens, judge = load_surrogates(classes, ensemble=full_classifiers, judge=full_judge, device=device)
        held = not any(j is m for j in judge.members for m in ens.members)
        return Setup(G, ens, ImageNetEnsemble(list(ens.members)[:1], classes), judge, list(classes), None, None, held,
                     "held-out ImageNet classifiers", "class", [str(n) for n in full_classifiers])  # fmt: skip
    from xattr_nb.metrics.generation import template_judge
    from xattr_nb.models.surrogates import ClipMLP, Ensemble, SmallCNN, train_surrogate
    from xattr_nb.models.t2i_recipes import combo_prompts
    from xattr_nb.worlds import captions as W

    n_train = check_int(n_train, "n_train", low=1)
    epochs = check_int(epochs, "epochs", low=1)
    G = load_generator("cpu", device=device)
    train = W.corpus(n_train, seed=1000 + seed)
    test = W.corpus(400, seed=2000 + seed)
    tr = (train.images.to(device), train.shape_ids.to(device), train.color_ids.to(device))
    C1 = train_surrogate(SmallCNN().to(device), *tr, epochs=epochs, seed=seed)
    C2 = train_surrogate(ClipMLP(G.clip).to(device), *tr, epochs=epochs, seed=seed)
    for m in (C1, C2):
        m.requires_grad_(False)
    ens = Ensemble([C1, C2])
    with torch.no_grad():
        acc = {name: {h: float((m(test.images.to(device))[h].argmax(1).cpu() == ids).float().mean())
                      for h, ids in (("shape", test.shape_ids), ("color", test.color_ids))}
               for name, m in (("C1", C1), ("C2", C2))}  # fmt: skip
    jshape, jcolor = template_judge(test.images)
    acc["judge"] = {"shape": sum(j == W.SHAPES[i] for j, i in zip(jshape, test.shape_ids, strict=True)) / len(test),
                    "color": sum(j == W.COLORS[i] for j, i in zip(jcolor, test.color_ids, strict=True)) / len(test)}  # fmt: skip
    held = not isinstance(template_judge, torch.nn.Module) and all(
        isinstance(m, (SmallCNN, ClipMLP)) for m in ens.members
    )
    return Setup(G, ens, Ensemble([C1]), template_judge, list(combo_prompts()["frequent"]), acc, test, held,
                 "non-neural template matching", "colour", ["C1", "C2"])  # fmt: skip
