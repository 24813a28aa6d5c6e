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

Scale switch: :func:`load_vlm` gives the zoo TinyVLM (``scale="cpu"``) or LLaVA-1.5
(``scale="full"``, :class:`xattr_nb.models.llava.LlavaVLM`); :func:`closed_scores` reads either
through the small :class:`ClosedVLM` protocol (the TinyVLM through a thin wrapper).
:func:`load_pope` reads the paper's POPE questions (jsonl) and a COCO image folder into the same
:class:`~xattr_nb.worlds.vqa.QAData` the notebook uses (:func:`pope_sets`: one per negative-sampling
setting). :func:`generate_answers` and :func:`sampled_answers` decode open-ended answers with either
model's own ``generate`` (answer token ids from the model's tokenizer, never hard-coded).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.llava import LLAVA_MODEL
from xattr_nb.models.vlm import TinyVLM, answer_token_ids, encode_questions
from xattr_nb.worlds.vqa import QAData

__all__ = [
    "ARMS",
    "LLAVA_MODEL",
    "POPE_KINDS",
    "ClosedVLM",
    "affine_calibrate",
    "arm_table",
    "caption_hallucination",
    "closed_scores",
    "contrastive_logits",
    "decide",
    "generate_answers",
    "image_free_spread",
    "load_pope",
    "load_vlm",
    "noised_images",
    "pope_sets",
    "sampled_answers",
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


@runtime_checkable
class ClosedVLM(Protocol):
    """What :func:`closed_scores` needs from a vision-language model (TinyVLM through
    :class:`_TinyClosed`, LLaVA as :class:`xattr_nb.models.llava.LlavaVLM`)."""

    def answer_token_ids(self, answers: Sequence[str]) -> list[list[int]]:
        """Token ids of each answer word (case- and space-insensitive)."""

    def encode(self, questions: Sequence[str]) -> Any:
        """The questions encoded once for the whole set; sliceable by rows."""

    def next_logits(self, images: torch.Tensor | None, prompts: Any, mode: str) -> torch.Tensor:
        """Next-token logits ``[B, V]`` at the answer position; ``images`` read in mode ``"image"`` only."""


class _TinyClosed:
    """:class:`ClosedVLM` over a TinyVLM: the questions left-padded once (:func:`encode_questions`),
    the rows' ``(ids, attention_mask)`` fed to :meth:`TinyVLM.logits`."""

    def __init__(self, model: TinyVLM):
        self.model = model

    def answer_token_ids(self, answers: Sequence[str]) -> list[list[int]]:
        return answer_token_ids(self.model.tokenizer, answers)

    def encode(self, questions: Sequence[str]) -> _Rows:
        return _Rows(*encode_questions(self.model.tokenizer, questions))

    def next_logits(self, images: torch.Tensor | None, prompts: _Rows, mode: str) -> torch.Tensor:
        return self.model.logits(images, prompts.ids, mode, attention_mask=prompts.mask)


class _Rows:
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor):
        self.ids, self.mask = ids, mask

    def __getitem__(self, rows: slice) -> _Rows:
        return _Rows(self.ids[rows], self.mask[rows])


def _closed(model: Any) -> ClosedVLM:
    if isinstance(model, TinyVLM):
        return _TinyClosed(model)
    if isinstance(model, ClosedVLM):
        return model
    raise InputError(
        f"`model` must be a TinyVLM or a LlavaVLM (load_vlm('cpu') / load_vlm('full')); got {type(model).__name__}"
    )


def load_vlm(scale: str = "cpu", *, full: str | os.PathLike = LLAVA_MODEL, device: str = "cpu") -> Any:
    """The model of the notebook: the zoo TinyVLM (``scale="cpu"``, :func:`~xattr_nb.models.vlm.load_tiny_vlm`)
    or LLaVA-1.5 from ``full`` (``scale="full"``: a hub name or a ``save_pretrained`` folder, loaded by
    :func:`~xattr_nb.models.llava.load_llava`, in float16 on a CUDA device)."""
    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "cpu":
        from xattr_nb.models.vlm import load_tiny_vlm

        return load_tiny_vlm(device=device)
    from xattr_nb.models.llava import load_llava
    from xattr_nb.runtime import pick_device

    dev = pick_device(device)
    if not isinstance(full, (str, os.PathLike)) or not str(full):
        raise InputError(f"`full` must name a LLaVA model (e.g. {LLAVA_MODEL!r}) or a local folder")
    try:
        return load_llava(full, device=str(dev), dtype=torch.float16 if dev.type == "cuda" else None)
    except InputError as exc:
        raise InputError(f"`full`: {exc}") from exc


#: POPE's negative-sampling settings, read from the question file's name (``coco_pope_adversarial.json``).
POPE_KINDS: tuple[str, ...] = ("random", "popular", "adversarial")


def load_pope(
    questions_file: str | os.PathLike, image_folder: str | os.PathLike, *, size: int = 336, limit: int | None = None
) -> QAData:
    """POPE's yes/no questions (one JSON object per line: ``image``, ``text``, ``label``; as in POPE and
    the paper's ``data/POPE/coco/coco_pope_{random,popular,adversarial}.json``) over the images of
    ``image_folder`` (COCO val2014), as the :class:`~xattr_nb.worlds.vqa.QAData` the notebook reads.

    Each image is read once (:func:`xattr_nb.worlds.folders.read_image`: shorter side to ``size``,
    centre crop; 336 is LLaVA-1.5's input, so its processor leaves it as is). ``answers`` are
    ``"yes"``/``"no"``, ``qtypes`` ``"yesno"``, ``kinds`` ``"positive"`` or the file's setting
    (:data:`POPE_KINDS`, ``"negative"`` if the name has none), ``image_index`` the row of the distinct
    image; the captions-world fields have no meaning here (``shape_ids``/``color_ids`` −1,
    ``prior``/``hard`` False, ``asked`` None, ``attrs`` ``{"image", "question_id"}``).
    ``limit``: the first ``limit`` questions only. Memory: one float32 image per question (a POPE file's
    3000 questions at 336 px take about 4 GB; :func:`closed_scores` adds a noised copy).
    """
    from xattr_nb.worlds.folders import read_image

    qpath, folder = Path(os.fspath(questions_file)).expanduser(), Path(os.fspath(image_folder)).expanduser()
    if not qpath.is_file():
        raise InputError(
            f"`questions_file` must be a POPE question file (jsonl); {str(questions_file)!r} is not a file"
        )
    if not folder.is_dir():
        raise InputError(
            f"`image_folder` must be the folder of the POPE images (COCO val2014); {str(image_folder)!r} is not one"
        )
    if limit is not None:
        limit = check_int(limit, "limit", low=1)
    rows = []
    with open(qpath, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"`questions_file` line {no} is not JSON: {exc}") from None
            if not isinstance(r, dict) or not {"image", "text", "label"} <= set(r):
                raise InputError(f"`questions_file` line {no} must be an object with 'image', 'text' and 'label'")
            label = str(r["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise InputError(f"`questions_file` line {no}: label must be 'yes' or 'no'; got {r['label']!r}")
            rows.append((str(r["image"]), str(r["text"]).strip(), label, r.get("question_id", no)))
            if limit is not None and len(rows) == limit:
                break
    if not rows:
        raise InputError(f"`questions_file` {str(questions_file)!r} holds no question")
    kind = next((k for k in POPE_KINDS if k in qpath.stem.lower()), "negative")
    files = list(dict.fromkeys(r[0] for r in rows))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(f"`image_folder` {str(folder)!r} lacks {len(missing)} POPE images, e.g. {missing[:3]}")
    pics = torch.stack([read_image(folder / f, size) for f in files])
    where = {f: i for i, f in enumerate(files)}
    idx = torch.as_tensor([where[r[0]] for r in rows], dtype=torch.long)
    m = len(rows)
    return QAData(
        images=pics[idx],
        questions=[r[1] for r in rows],
        answers=[r[2] for r in rows],
        qtypes=["yesno"] * m,
        kinds=["positive" if r[2] == "yes" else kind for r in rows],
        asked=[None] * m,
        image_index=idx,
        shape_ids=torch.full((m,), -1, dtype=torch.long),
        color_ids=torch.full((m,), -1, dtype=torch.long),
        prior=torch.zeros(m, dtype=torch.bool),
        hard=torch.zeros(m, dtype=torch.bool),
        attrs=[{"image": r[0], "question_id": r[3]} for r in rows],
    )


def pope_sets(
    questions: str | os.PathLike | dict[str, str | os.PathLike],
    image_folder: str | os.PathLike,
    *,
    kinds: Sequence[str] = ("adversarial", "random"),
    size: int = 336,
    limit: int | None = None,
) -> dict[str, QAData]:
    """POPE's question sets by negative-sampling setting, each read by :func:`load_pope` over
    ``image_folder``. ``questions``: a path template with ``{kind}`` (the paper's
    ``data/POPE/coco/coco_pope_{kind}.json``), filled with each of ``kinds``, or a dict kind -> file."""
    if isinstance(kinds, str) or not kinds:
        raise InputError(f"`kinds` must be a non-empty list of POPE settings {POPE_KINDS}")
    kinds = [check_choice(k, POPE_KINDS, "kinds") for k in kinds]
    if isinstance(questions, dict):
        missing = [k for k in kinds if k not in questions]
        if missing:
            raise InputError(f"`questions` must name a file for every setting in `kinds`; it lacks {missing}")
        files = {k: questions[k] for k in kinds}
    elif isinstance(questions, (str, os.PathLike)) and "{kind}" in os.fspath(questions):
        files = {k: os.fspath(questions).replace("{kind}", k) for k in kinds}
    else:
        raise InputError(
            "`questions` must be a path template with '{kind}' (e.g. 'data/POPE/coco/coco_pope_{kind}.json') "
            f"or a dict setting -> file; got {questions!r}"
        )
    return {k: load_pope(f, image_folder, size=size, limit=limit) for k, f in files.items()}


def generate_answers(
    model: Any, images: torch.Tensor, questions: Sequence[str], **kwargs: Any
) -> list[str] | list[list[int]]:
    """Open-ended answers from either model with its own ``generate``: the TinyVLM
    (:meth:`~xattr_nb.models.vlm.TinyVLM.generate`, questions left-padded by
    :func:`~xattr_nb.models.vlm.encode_questions`) or a LlavaVLM
    (:meth:`~xattr_nb.models.llava.LlavaVLM.generate`). ``kwargs``: ``contrast``, ``contrast_inputs``,
    ``temperature``, ``top_p``, ``top_k``, ``max_new``, ``seed``, ``return_ids`` (both take them).
    Returns texts, or with ``return_ids`` the new token ids of each row (a list per row)."""
    m = _closed(model)
    if isinstance(m, _TinyClosed):
        ids, mask = encode_questions(model.tokenizer, questions)
        out = model.generate(images, ids, attention_mask=mask, **kwargs)
        return out.tolist() if kwargs.get("return_ids") else out
    return model.generate(images, questions, **kwargs)


def sampled_answers(
    model: Any,
    qa: QAData,
    answers: Sequence[str],
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
) -> torch.Tensor:
    """Decode one answer token per question of ``qa`` (:func:`generate_answers`, ``max_new = 1``)
    and return ``[M]``: the index in ``answers`` whose token ids (the model's own
    ``answer_token_ids``: "Yes", "yes", ... for LLaVA) hold the token, −1 when it is no answer."""
    if not isinstance(qa, QAData):
        raise InputError(f"`qa` must be a vqa.QAData (vqa.pope / load_pope); got {type(qa).__name__}")
    groups = _closed(model).answer_token_ids(answers)
    index = {i: k for k, g in enumerate(groups) for i in g}
    rows = generate_answers(
        model, qa.images, qa.questions, temperature=temperature, top_p=top_p, top_k=top_k, max_new=1, seed=seed,
        return_ids=True,
    )  # fmt: skip
    return torch.as_tensor([index.get(r[0], -1) if r else -1 for r in rows], dtype=torch.long)


@torch.no_grad()
def closed_scores(
    model: Any,
    qa: QAData,
    answers: Sequence[str],
    *,
    cf_modes: Sequence[str] = ("none", "unk"),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Answer-set distributions and answer-token logits of every question in ``qa``.

    ``model``: a TinyVLM or a LlavaVLM (:func:`load_vlm`; any :class:`ClosedVLM`).
    Returns ``p`` (real image), ``p_<mode>`` per image-free mode in ``cf_modes`` and ``"noise"``,
    ``p_cf`` (the spec's ``normalise(Σ_mode p_mode)``), ``p_vcd`` (noised copy of the image),
    ``p_rand`` (a random *other* image of the set: the control counterfactual), and the matching
    full-vocabulary logits ``l``, ``l_cf`` (mean over ``cf_modes``), ``l_vcd``, ``l_rand``;
    ``answer_ids`` ``[K]`` (each answer's first token id) and ``answer_groups`` ``[K, G]`` (all its
    token ids, rows padded with their first id).
    """
    m = _closed(model)
    if not isinstance(qa, QAData):
        raise InputError(f"`qa` must be a vqa.QAData (vqa.pope / vqa.qa_set / load_pope); got {type(qa).__name__}")
    if isinstance(cf_modes, str) or not cf_modes:
        raise InputError("`cf_modes` must be a non-empty list of image-free modes ('none', 'unk', 'noise')")
    cf_modes = [check_choice(c, ("none", "unk", "noise"), "cf_modes") for c in cf_modes]
    batch_size = check_int(batch_size, "batch_size", low=1)
    groups = m.answer_token_ids(answers)
    prompts = m.encode(qa.questions)
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
        rows = prompts[sl]
        put("", m.next_logits(qa.images[sl], rows, "image"))
        cf = []
        for mode in dict.fromkeys([*cf_modes, "noise"]):
            lg = m.next_logits(None, rows, mode)
            put("_" + mode, lg)
            if mode in cf_modes:
                cf.append(lg.float())
        out.setdefault("l_cf", []).append(torch.stack(cf).mean(0).cpu())
        put("_vcd", m.next_logits(vcd_imgs[sl], rows, "image"))
        put("_rand", m.next_logits(qa.images[torch.as_tensor(other[sl])], rows, "image"))
    res = {k: torch.cat(v).cpu() for k, v in out.items()}
    pc = sum(res["p_" + mode] for mode in cf_modes)
    res["p_cf"] = pc / pc.sum(1, keepdim=True)
    res["answer_ids"] = torch.as_tensor([g[0] for g in groups])
    width = max(len(g) for g in groups)
    res["answer_groups"] = torch.as_tensor([g + [g[0]] * (width - len(g)) for g in groups])
    return res


def decide(scores: dict[str, torch.Tensor], *, alpha: float = 1.0, beta: float = 0.2) -> dict[str, torch.Tensor]:
    """Predicted answer index ``[M]`` per arm of :data:`ARMS` from :func:`closed_scores`' output.

    ``plain``: argmax p; ``posthoc`` / ``posthoc_identity``: argmax of :func:`affine_calibrate`
    (diagonal / identity) with ``p_cf``; ``vdd``: first-token contrastive decoding against the
    image-free logits; ``vcd``: the same against a noised copy of the image; ``random_image_cf``:
    post-hoc diagonal calibration with a random other image as the counterfactual (control).
    Contrastive arms take the best answer token among the plausible ones (argmax p when none is);
    an answer with several tokens (``answer_groups``: "Yes", "yes", ...) scores its best one.
    """
    if not isinstance(scores, dict) or not {"p", "p_cf", "l", "l_cf", "answer_ids"} <= set(scores):
        raise InputError("`scores` must be the dict returned by closed_scores()")
    ans = scores.get("answer_groups", scores["answer_ids"][:, None])
    plain = scores["p"].argmax(1)

    def contrast(cf_key: str) -> torch.Tensor:
        c = contrastive_logits(scores["l"], scores[cf_key], alpha, beta)[:, ans].amax(-1)
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
