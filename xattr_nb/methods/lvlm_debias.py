"""Paper 22: debiasing a vision-language model's language prior (Post-Hoc Debias and Visual Debias
Decoding), on the zoo TinyVLM (:mod:`xattr_nb.models.vlm`) and the VQA world (:mod:`xattr_nb.worlds.vqa`).

Shared helpers (also usable in the other multimodal notebooks):

- :func:`affine_calibrate`: the paper's affine calibration of a closed answer distribution ``p``
  with a counterfactual (image-free) distribution ``p_cf``: ``"diagonal"`` (the code's default,
  ``q ∝ p / p_cf``) or ``"identity"`` (``W = I, b = −p_cf``). Written by hand: no library offers it
  (it is contextual calibration, Zhao et al. 2021, a few lines).
- :func:`contrastive_logits`: the plausibility-masked contrast ``(1 + α)ℓ − αℓ_cf`` on the tokens
  with ``p(w) ≥ β·max p`` (VCD / VDD step; the mask reads the *original* logits). Written by hand
  (Hugging Face has no contrastive-decoding processor of this form); it plugs into
  :meth:`xattr_nb.models.vlm.TinyVLM.generate` as ``contrast=``.

The method: :func:`closed_scores` reads the answer-set distributions of a closed question set
under the real image and under counterfactual inputs (image-free modes, a noised copy of the
image, or a random other image), :func:`decide` turns them into predictions for each decoding arm,
:func:`arm_table` scores the arms (accuracy, yes-ratio) on a split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.vlm import TinyVLM, answer_token_ids, encode_questions
from xattr_nb.worlds.vqa import QAData

__all__ = [
    "ARMS",
    "affine_calibrate",
    "arm_table",
    "caption_hallucination",
    "closed_scores",
    "contrastive_logits",
    "decide",
    "image_free_spread",
    "noised_images",
]

#: Decoding arms of :func:`decide`.
ARMS: tuple[str, ...] = ("plain", "posthoc", "posthoc_identity", "vdd", "vcd", "random_image_cf")


def _as_probs(x: Any, name: str) -> torch.Tensor:
    t = check_tensor(x, name, layout="[..., K] probabilities")
    if t.ndim == 0 or t.shape[-1] < 2:
        raise InputError(f"`{name}` must have a last dimension of K >= 2 answers; got shape {tuple(t.shape)}")
    t = t.double()
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise InputError(f"`{name}` must hold finite non-negative probabilities")
    s = t.sum(-1, keepdim=True)
    if bool((s <= 0).any()):
        raise InputError(f"`{name}`: every row must have positive mass")
    return t / s


def affine_calibrate(p: Any, p_cf: Any, mode: str = "diagonal", *, eps: float = 1e-4) -> torch.Tensor:
    """Calibrate answer distributions ``p`` ``[..., K]`` with counterfactual ones ``p_cf`` (same
    shape, or ``[K]`` for one dataset-mean estimate: the "all" mode). Both are renormalised.

    - ``"diagonal"``: ``q ∝ (p + ε) / (p_cf + ε)`` (W = diag(p_cf)⁻¹, b = 0). ε goes to both so
      that ``p = p_cf`` maps *exactly* to uniform (the paper's criterion; the code adds it to
      ``p_cf`` only, which leaves ``|q − 1/K|`` of order ε).
    - ``"identity"``: ``q = p − p_cf + 1/K`` (W = I, b = −p_cf, shifted so rows sum to 1; entries
      may leave [0, 1]: use for the argmax).

    A uniform ``p_cf`` returns ``p`` (the identity counterfactual) in both modes.
    """
    mode = check_choice(mode, ("diagonal", "identity"), "mode")
    eps = check_float(eps, "eps", low=0.0)
    p = _as_probs(p, "p")
    pc = _as_probs(p_cf, "p_cf")
    if pc.shape[-1] != p.shape[-1]:
        raise InputError(f"`p_cf` must have K = {p.shape[-1]} answers like `p`; got shape {tuple(pc.shape)}")
    try:
        torch.broadcast_shapes(p.shape, pc.shape)
    except RuntimeError:
        raise InputError(f"`p_cf` shape {tuple(pc.shape)} does not broadcast to `p` shape {tuple(p.shape)}") from None
    k = p.shape[-1]
    if mode == "identity":
        return p - pc + 1.0 / k
    q = (p + eps) / (pc + eps)
    return q / q.sum(-1, keepdim=True)


def contrastive_logits(logits: Any, cf_logits: Any, alpha: float = 1.0, beta: float = 0.2) -> torch.Tensor:
    """``(1 + α)·ℓ − α·ℓ_cf`` on the plausible tokens ``{w : softmax(ℓ)_w ≥ β · max softmax(ℓ)}``,
    ``−inf`` elsewhere (the VCD / VDD step; the mask uses the original ``logits``). ``α = 0`` gives
    ``logits`` on the plausible set; ``β = 0`` keeps every token."""
    l = check_tensor(logits, "logits", layout="[..., V]")
    lc = check_tensor(cf_logits, "cf_logits", layout="[..., V]")
    if l.ndim == 0 or l.shape != lc.shape:
        raise InputError(f"`cf_logits` must have the shape of `logits` {tuple(l.shape)}; got {tuple(lc.shape)}")
    alpha = check_float(alpha, "alpha", low=0.0)
    beta = check_float(beta, "beta", low=0.0, high=1.0)
    l, lc = l.float(), lc.to(l.device).float()
    if not bool(torch.isfinite(lc).all()) or bool(torch.isnan(l).any()):
        raise InputError("`logits` and `cf_logits` must be finite")
    logp = l.log_softmax(-1)
    cut = (math.log(beta) if beta > 0 else -math.inf) + logp.max(-1, keepdim=True).values
    keep = logp >= cut
    out = (1 + alpha) * l - alpha * lc
    return torch.where(keep, out, torch.full_like(out, -math.inf))


def noised_images(images: torch.Tensor, *, level: float = 0.5, seed: int = 0) -> torch.Tensor:
    """VCD's contrast input: ``sqrt(1 − level)·x + sqrt(level)·ε`` around mid-grey (a one-step
    stand-in for the diffusion forward process at ``level`` = ᾱ-complement), clipped to [0, 1]."""
    x = check_tensor(images, "images", ndim=4, layout="[B, 3, H, W] in [0, 1]")
    level = check_float(level, "level", low=0.0, high=1.0)
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    eps = 0.25 * torch.randn(x.shape, generator=g)
    return (math.sqrt(1 - level) * (x - 0.5) + math.sqrt(level) * eps + 0.5).clamp(0, 1)


@torch.no_grad()
def closed_scores(
    model: TinyVLM,
    qa: QAData,
    answers: Sequence[str],
    *,
    cf_modes: Sequence[str] = ("none", "unk"),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Answer-set distributions and answer-token logits of every question in ``qa``.

    Returns ``p`` (real image), ``p_<mode>`` per image-free mode in ``cf_modes`` and ``"noise"``,
    ``p_cf`` (the spec's ``normalise(Σ_mode p_mode)``), ``p_vcd`` (noised copy of the image),
    ``p_rand`` (a random *other* image of the set: the control counterfactual), and the matching
    full-vocabulary logits ``l``, ``l_cf`` (mean over ``cf_modes``), ``l_vcd``, ``l_rand``.
    """
    if not isinstance(model, TinyVLM):
        raise InputError(f"`model` must be a TinyVLM (load_tiny_vlm()); got {type(model).__name__}")
    if not isinstance(qa, QAData):
        raise InputError(f"`qa` must be a vqa.QAData (vqa.pope / vqa.qa_set); got {type(qa).__name__}")
    if isinstance(cf_modes, str) or not cf_modes:
        raise InputError("`cf_modes` must be a non-empty list of image-free modes ('none', 'unk', 'noise')")
    cf_modes = [check_choice(m, ("none", "unk", "noise"), "cf_modes") for m in cf_modes]
    batch_size = check_int(batch_size, "batch_size", low=1)
    groups = answer_token_ids(model.tokenizer, answers)
    ids, mask = encode_questions(model.tokenizer, qa.questions)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    n = len(qa.questions)
    # a random other image (different image index) for every question
    other = rng.integers(0, n, size=n)
    same = qa.image_index.numpy()[other] == qa.image_index.numpy()
    while same.any():
        other[same] = rng.integers(0, n, size=int(same.sum()))
        same = qa.image_index.numpy()[other] == qa.image_index.numpy()
    vcd_imgs = noised_images(qa.images, seed=int(rng.integers(2**31)))
    out: dict[str, list[torch.Tensor]] = {}

    def put(key: str, logits: torch.Tensor) -> None:
        pr = logits.float().softmax(-1)
        pa = torch.stack([pr[:, g].sum(-1) for g in groups], 1)
        out.setdefault("p" + key, []).append(pa / pa.sum(1, keepdim=True).clamp_min(1e-30))
        out.setdefault("l" + key, []).append(logits.float().cpu())

    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        i, m = ids[sl], mask[sl]
        put("", model.logits(qa.images[sl], i, "image", attention_mask=m))
        cf = []
        for mode in dict.fromkeys([*cf_modes, "noise"]):
            lg = model.logits(None, i, mode, attention_mask=m)
            put("_" + mode, lg)
            if mode in cf_modes:
                cf.append(lg.float())
        out.setdefault("l_cf", []).append(torch.stack(cf).mean(0).cpu())
        put("_vcd", model.logits(vcd_imgs[sl], i, "image", attention_mask=m))
        put("_rand", model.logits(qa.images[torch.as_tensor(other[sl])], i, "image", attention_mask=m))
    res = {k: torch.cat(v).cpu() for k, v in out.items()}
    pc = sum(res["p_" + mode] for mode in cf_modes)
    res["p_cf"] = pc / pc.sum(1, keepdim=True)
    res["answer_ids"] = torch.as_tensor([g[0] for g in groups])
    return res


def decide(scores: dict[str, torch.Tensor], *, alpha: float = 1.0, beta: float = 0.2) -> dict[str, torch.Tensor]:
    """Predicted answer index ``[M]`` per arm of :data:`ARMS` from :func:`closed_scores`' output.

    ``plain``: argmax p; ``posthoc`` / ``posthoc_identity``: argmax of :func:`affine_calibrate`
    (diagonal / identity) with ``p_cf``; ``vdd``: first-token contrastive decoding against the
    image-free logits; ``vcd``: the same against a noised copy of the image; ``random_image_cf``:
    post-hoc diagonal calibration with a random other image as the counterfactual (control).
    Contrastive arms take the best answer token among the plausible ones (argmax p when none is).
    """
    if not isinstance(scores, dict) or not {"p", "p_cf", "l", "l_cf", "answer_ids"} <= set(scores):
        raise InputError("`scores` must be the dict returned by closed_scores()")
    ans = scores["answer_ids"]
    plain = scores["p"].argmax(1)

    def contrast(cf_key: str) -> torch.Tensor:
        c = contrastive_logits(scores["l"], scores[cf_key], alpha, beta)[:, ans]
        none = torch.isinf(c).all(1)
        return torch.where(none, plain, c.argmax(1))

    return {
        "plain": plain,
        "posthoc": affine_calibrate(scores["p"], scores["p_cf"], "diagonal").argmax(1),
        "posthoc_identity": affine_calibrate(scores["p"], scores["p_cf"], "identity").argmax(1),
        "vdd": contrast("l_cf"),
        "vcd": contrast("l_vcd"),
        "random_image_cf": affine_calibrate(scores["p"], scores["p_rand"], "diagonal").argmax(1),
    }


def arm_table(preds: dict[str, torch.Tensor], truth: torch.Tensor, *, yes_index: int | None = None) -> pd.DataFrame:
    """Per arm: accuracy (and, with ``yes_index``, the yes-ratio and ``|yes-ratio − 0.5|``)."""
    if not isinstance(preds, dict) or not preds:
        raise InputError("`preds` must be a non-empty dict arm -> predicted indices")
    truth = check_tensor(truth, "truth", ndim=1, dtype="int", layout="[M] answer indices")
    rows = {}
    for arm, pr in preds.items():
        pr = check_tensor(pr, f"preds[{arm!r}]", ndim=1, dtype="int", layout="[M]")
        if pr.shape != truth.shape:
            raise InputError(f"`preds[{arm!r}]` must have the shape of `truth` {tuple(truth.shape)}")
        row = {"accuracy": float((pr == truth).float().mean())}
        if yes_index is not None:
            yr = float((pr == yes_index).float().mean())
            row.update({"yes_ratio": yr, "yes_bias": abs(yr - 0.5)})
        rows[arm] = row
    return pd.DataFrame(rows).T


def image_free_spread(scores: dict[str, torch.Tensor], questions: Sequence[str], modes: Sequence[str]) -> float:
    """Largest difference between the image-free answer distributions (``p_<mode>``) of two questions
    with the same text: 0 when the counterfactual carries no information about the image."""
    if not isinstance(scores, dict):
        raise InputError("`scores` must be the dict returned by closed_scores()")
    if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
        raise InputError("`questions` must be the non-empty list of question texts the scores were read on")
    worst = 0.0
    for m in modes:
        p = scores.get("p_" + str(m))
        if p is None or len(p) != len(questions):
            raise InputError(f"`modes`: {m!r} has no scores for the {len(questions)} questions")
        first: dict[str, int] = {}
        ref = torch.as_tensor([first.setdefault(q, i) for i, q in enumerate(questions)])
        worst = max(worst, float((p - p[ref]).abs().max()))
    return worst


def caption_hallucination(captions: Sequence[str], attrs: Sequence[dict[str, str]]) -> pd.DataFrame:
    """Per caption: the colour word it names (first word in the world's colours, ``None`` if none),
    ``wrong_color`` (it contradicts the image; a missing colour counts as wrong) and
    ``prior_consistent`` (wrong *and* equal to the shape's prior colour: the CHAIR-like rates of spec §1.5)."""
    from xattr_nb.worlds import captions as world

    if isinstance(captions, str) or not isinstance(captions, Sequence) or not captions:
        raise InputError("`captions` must be a non-empty list of strings")
    if not isinstance(attrs, Sequence) or len(attrs) != len(captions):
        raise InputError(f"`attrs` must hold one attribute dict per caption ({len(captions)})")
    rows = []
    for c, a in zip(captions, attrs, strict=True):
        if not isinstance(c, str) or not isinstance(a, dict) or not {"color", "shape"} <= set(a):
            raise InputError("`captions` must be strings and `attrs` dicts with 'color' and 'shape'")
        col = next((w for w in c.split() if w in world.COLORS), None)
        wrong = col != a["color"]
        rows.append(
            {"color": col, "wrong_color": wrong, "prior_consistent": wrong and col == world.PRIOR_COLOR[a["shape"]]}
        )
    return pd.DataFrame(rows)
