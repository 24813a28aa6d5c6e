"""CAP and CAP_Hybrid: class-aware attribution priors for explanation-guided training.

Zhang et al., "Hybrid Attribution Priors for Explainable and Robust Model Training"
(arXiv:2512.14719, 2025; no public code). **Reconstructed from the abstract [recon]**: the
paper's prompt, its exact linear system and its alignment distance could not be read; what
follows is the toolkit's reading (spec ``09_cap.md`` §1.2), kept behind parameters.

Explanation-guided learning trains a student with cross-entropy plus a loss pulling the
student's own attribution towards a *prior* (:mod:`xattr_nb.training`). Priors from IG or LIME
on a warmed-up student highlight whatever the student already uses, often words two confusable
classes share, or a spurious shortcut. CAP asks a teacher that sees the whole label space which
words separate the gold class from its *confusable* neighbours:

1. :func:`make_teacher` / :func:`label_embeddings`: an encoder (MiniLM from
   :func:`xattr_nb.models.load_encoder`) embeds one short description per class;
   :func:`confusable_sets` takes each class's ``m`` nearest labels.
2. :func:`teacher_word_states`: one MiniLM forward per text; a word's state is the mean of its
   sub-token states.
3. :func:`keep_masks` and :func:`class_aware_scores`: for word-keep masks ``z``, the
   class-aware margin ``g(z) = log p(y | x⊙z) − log Σ_{y'∈C(y)} p(y' | x⊙z)`` with
   ``p(·|x) = softmax(cos(e(x), e(desc)) / τ)``. ``variant="pooled"`` (default) approximates
   ``e(x⊙z)`` by the mean of the kept words' states (no extra forward); ``"exact"`` re-encodes
   each masked string.
4. :func:`cholesky_ridge`: the ridge surrogate ``g ≈ φ_0 + zᵀφ`` from its SPD normal equations
   ``(Z̃ᵀΠZ̃ + λI) φ = Z̃ᵀΠ(g − ḡ)``, solved by Cholesky in float64; ``a^CAP = ReLU(φ)``.
5. :func:`ig_prior`, :func:`lime_prior`: the baseline priors from a CE-warmed student (captum's
   ``LayerIntegratedGradients`` and ``Lime``); :func:`hybrid_prior` fuses normalised priors by
   mean (CAP_Hybrid) or max.
6. :func:`train_student`: CE + λ · MSE(N(grad×input), N(prior)) with
   :class:`xattr_nb.training.PriorAlignment`; :func:`evaluate` scores clean and adversarial
   accuracy, within-pair confusion, how often a prediction follows the shortcut tag (worlds
   with one, :mod:`xattr_nb.worlds.shortcut_text`) and, on request, the AUPRC of the student's
   own grad×input on the gold words (the quantity the alignment loss trains: a check that
   training did what it was told, never evidence for a prior).
7. Controls (:data:`CONTROLS`): :func:`oracle_prior`, uniform on the ground-truth disc words
   (the upper bound a prior can reach), and :func:`random_prior`, uniform on as many randomly
   chosen words (what aligning to *some* sparse prior does by itself).

:func:`cap_prior` chains 2–4; :func:`explain` (the one entry point) chains everything for several
variants and seeds and returns what it measured (:class:`CAPRun`). :func:`ridge_figure` draws one
text's margins and ridge coefficients.
Priors live at word level ``[N, W]``; :func:`word_to_token` spreads them onto a student's
tokens (each sub-token gets its word's share), the same way for every prior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.attribution import attribute
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models import embed, fit, word_tokenizer
from xattr_nb.models.io import device_of, eval_mode, logits_of
from xattr_nb.runtime import progress
from xattr_nb.training import PriorAlignment, normalize_scores, token_grad_x_input
from xattr_nb.worlds.shortcut_text import shortcut_splits
from xattr_nb.worlds.text import TOPIC_PAIRS, TextData, TopicData, topics

__all__ = [
    "CONTROLS",
    "DESCRIPTIONS",
    "VARIANTS",
    "CAPRun",
    "Teacher",
    "all_priors",
    "cap_prior",
    "cholesky_ridge",
    "class_aware_scores",
    "confusable_sets",
    "encode_student",
    "evaluate",
    "explain",
    "hybrid_prior",
    "ig_prior",
    "keep_masks",
    "label_embeddings",
    "lime_prior",
    "make_teacher",
    "oracle_prior",
    "prior_mass",
    "random_prior",
    "ridge_figure",
    "shortcut_splits",
    "student_tokenizer",
    "teacher_word_states",
    "tiny_student",
    "topic_splits",
    "train_student",
    "train_variants",
    "word_to_token",
]

#: One label description per class: the "label space" the teacher sees. They name the topic
#: only, never a discriminative word of the world (that would hand the teacher the answer).
DESCRIPTIONS: dict[str, str] = {
    "sport": "a news story about sport",
    "fitness": "a news story about fitness",
    "finance": "a news story about finance",
    "economy": "a news story about the economy",
    "cooking": "a news story about cooking",
    "nutrition": "a news story about nutrition",
}
#: The training variants compared: no prior, single-method priors, CAP, CAP_Hybrid.
VARIANTS: tuple[str, ...] = ("CE", "CE+IG", "CE+LIME", "CE+CAP", "CE+CAP_Hybrid")
#: The controls: a prior on random words (as many as the text's disc words) and the oracle
#: prior on the ground-truth disc words (the upper bound on what a prior can give).
CONTROLS: tuple[str, ...] = ("CE+Random", "CE+Oracle")
CLS = "[BOS]"


# ----------------------------------------------------------------------------------------------
# Step 1-2: the teacher.


@dataclass
class Teacher:
    """A sentence encoder and the label space: ``labels`` ``[C, d]`` unit embeddings of ``classes``."""

    tokenizer: Any
    model: Any
    classes: tuple[str, ...]
    labels: torch.Tensor


def label_embeddings(tokenizer: Any, model: Any, descriptions: Sequence[str]) -> torch.Tensor:
    """Unit sentence embeddings ``[C, d]`` of the class descriptions (MiniLM mean pooling)."""
    return embed(list(descriptions), tokenizer, model, show_progress=False)


def make_teacher(
    tokenizer: Any, model: Any, classes: Sequence[str], descriptions: Mapping[str, str] | None = None
) -> Teacher:
    """The teacher: a sentence encoder (``tokenizer, model`` from :func:`xattr_nb.models.load_encoder`,
    the offline MiniLM by default) plus the embedded label space of ``classes``."""
    descriptions = DESCRIPTIONS if descriptions is None else descriptions
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
        raise InputError(f"`classes` must list at least 2 class names; got {classes!r}")
    missing = [c for c in classes if c not in descriptions]
    if missing:
        raise InputError(f"`descriptions` has no description for classes {missing}")
    return Teacher(
        tokenizer, model, tuple(classes), label_embeddings(tokenizer, model, [descriptions[c] for c in classes])
    )


def confusable_sets(labels: torch.Tensor, m: int = 2) -> torch.Tensor:
    """``[C, m]`` long: for each class, the ``m`` other classes whose label embeddings are most
    cosine-similar (most similar first); the set C(y) a class-aware score contrasts against."""
    lab = check_tensor(labels, "labels", ndim=2, dtype="float", layout="[C, d]")
    m = check_int(m, "m", low=1, high=lab.shape[0] - 1)
    u = torch.nn.functional.normalize(lab.double(), dim=-1)
    sim = (u @ u.T).fill_diagonal_(-math.inf)
    return sim.topk(m, dim=1).indices


def teacher_word_states(
    teacher: Teacher, words: Sequence[Sequence[str]], *, batch_size: int = 64
) -> list[torch.Tensor]:
    """One teacher forward per text: each word's contextual state ``[n_words, d]`` (mean of its
    sub-token states from the last layer; [CLS]/[SEP] are dropped)."""
    if isinstance(words, str) or not isinstance(words, Sequence) or len(words) == 0:
        raise InputError("`words` must be a non-empty list of word lists")
    for i, ws in enumerate(words):
        if isinstance(ws, str) or not isinstance(ws, Sequence) or len(ws) == 0:
            raise InputError(f"`words[{i}]` must be a non-empty list of words")
    batch_size = check_int(batch_size, "batch_size", low=1)
    out: list[torch.Tensor] = []
    dev = device_of(teacher.model)
    with torch.inference_mode():
        for s in range(0, len(words), batch_size):
            chunk = [list(w) for w in words[s : s + batch_size]]
            enc = teacher.tokenizer(chunk, is_split_into_words=True, padding=True, return_tensors="pt")
            hid = (
                teacher.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
                .last_hidden_state.float()
                .cpu()
            )
            for b, ws in enumerate(chunk):
                wid = torch.as_tensor([-1 if w is None else w for w in enc.word_ids(b)])
                assign = (wid[None, :] == torch.arange(len(ws))[:, None]).float()  # [n, T]
                out.append((assign @ hid[b]) / assign.sum(1, keepdim=True).clamp_min(1.0))
    return out


# ----------------------------------------------------------------------------------------------
# Step 3-4: class-aware scores on masks, ridge by Cholesky.


def keep_masks(n_words: int, n_masks: int = 64, keep: float = 0.7, *, seed: int = 0) -> torch.Tensor:
    """``[n_masks, n_words]`` float 0/1 word-keep masks, each word kept with probability ``keep``;
    a mask that drops every word keeps one word at random (an empty text has no embedding)."""
    n_words = check_int(n_words, "n_words", low=1)
    n_masks = check_int(n_masks, "n_masks", low=2)
    keep = check_float(keep, "keep", low=0.0, high=1.0)
    if not 0.0 < keep < 1.0:
        raise InputError(f"`keep` must lie strictly between 0 and 1 (masks must vary); got {keep}")
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0, high=2**63 - 1))
    z = (torch.rand(n_masks, n_words, generator=g) < keep).float()
    empty = z.sum(1) == 0
    if bool(empty.any()):
        z[empty, torch.randint(n_words, (int(empty.sum()),), generator=g)] = 1.0
    return z


def _margin(logits: torch.Tensor, y: int, conf: torch.Tensor) -> torch.Tensor:
    # log p(y) − log Σ_{C(y)} p(y'): the softmax normaliser cancels, so it is a logit margin.
    return logits[:, y] - torch.logsumexp(logits[:, conf], dim=1)


def class_aware_scores(
    states: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    y: int,
    conf: torch.Tensor,
    *,
    tau: float = 0.05,
) -> torch.Tensor:
    """``g_s = log p(y | x⊙z_s) − log Σ_{y'∈C(y)} p(y' | x⊙z_s)`` for each mask: ``[S]``.

    ``states`` ``[n, d]`` word states of one text, ``masks`` ``[S, n]``, ``labels`` ``[C, d]``,
    ``conf`` the confusable classes of ``y``. The masked text's embedding is the normalised mean
    of its kept words' states ("pooled" reading: no extra teacher forward);
    ``p(c|·) = softmax_c(cos(e, label_c) / tau)``.
    """
    h = check_tensor(states, "states", ndim=2, dtype="float", layout="[n, d]")
    z = check_tensor(masks, "masks", ndim=2, dtype="float", layout="[S, n]")
    lab = check_tensor(labels, "labels", ndim=2, dtype="float", layout="[C, d]")
    if z.shape[1] != h.shape[0] or lab.shape[1] != h.shape[1]:
        raise InputError(
            f"`masks` [S, n], `states` [n, d] and `labels` [C, d] disagree: {tuple(z.shape)}, {tuple(h.shape)}, "
            f"{tuple(lab.shape)}"
        )
    if bool((z.sum(1) == 0).any()):
        raise InputError("`masks` has a row that keeps no word")
    y = check_int(y, "y", low=0, high=lab.shape[0] - 1)
    tau = check_float(tau, "tau", low=0.0)
    if tau == 0.0:
        raise InputError("`tau` must be > 0")
    pooled = torch.nn.functional.normalize((z @ h) / z.sum(1, keepdim=True), dim=-1)
    logits = pooled @ torch.nn.functional.normalize(lab, dim=-1).T / tau
    return _margin(logits, y, _conf(conf, y, lab.shape[0]))


def _conf(conf: Any, y: int, n_classes: int) -> torch.Tensor:
    c = check_tensor(torch.as_tensor(conf), "conf", ndim=1, dtype="int", layout="[m]")
    if len(c) == 0 or int(c.min()) < 0 or int(c.max()) >= n_classes or bool((c == y).any()):
        raise InputError(f"`conf` must hold other classes than y={y} in [0, {n_classes}); got {c.tolist()}")
    return c


def exact_class_aware_scores(
    teacher: Teacher, words: Sequence[str], masks: torch.Tensor, y: int, conf: torch.Tensor, *, tau: float = 0.05
) -> torch.Tensor:
    """As :func:`class_aware_scores`, but re-encoding every masked string with the teacher
    (``S`` forwards per text: the spec's FULL "exact" variant)."""
    z = check_tensor(masks, "masks", ndim=2, dtype="float", layout="[S, n]")
    if z.shape[1] != len(words):
        raise InputError(f"`masks` has {z.shape[1]} columns but the text has {len(words)} words")
    texts = [" ".join(w for w, k in zip(words, row, strict=True) if k > 0) for row in z.tolist()]
    if any(not t for t in texts):
        raise InputError("`masks` has a row that keeps no word")
    e = embed(texts, teacher.tokenizer, teacher.model, show_progress=False)
    logits = e @ teacher.labels.T / check_float(tau, "tau", low=1e-9)
    y = check_int(y, "y", low=0, high=teacher.labels.shape[0] - 1)
    return _margin(logits, y, _conf(conf, y, teacher.labels.shape[0]))


def cholesky_ridge(
    Z: torch.Tensor, t: torch.Tensor, lam: float = 1.0, weights: torch.Tensor | None = None, *, intercept: bool = True
) -> torch.Tensor:
    """Weighted ridge regression ``min_φ Σ_s π_s (t_s − φ_0 − z_sᵀφ)² + λ‖φ‖²``, returns ``φ`` ``[n]``.

    With ``intercept`` the columns and targets are centred by their ``π``-weighted means (the
    unpenalised ``φ_0`` drops out); then ``A = Z̃ᵀΠZ̃ + λI`` is symmetric positive definite for
    ``λ > 0``, and ``A φ = Z̃ᵀΠ t̃`` is solved by ``torch.linalg.cholesky`` and
    ``torch.cholesky_solve`` in float64. Written by hand: no library exposes this exact solver.
    """
    z = check_tensor(Z, "Z", ndim=2, dtype="float", layout="[S, n]").double()
    tt = check_tensor(t, "t", shape=(z.shape[0],), dtype="float", layout="[S]").double()
    lam = check_float(lam, "lam", low=0.0)
    if lam == 0.0:
        raise InputError("`lam` must be > 0 so the system is positive definite")
    if weights is None:
        w = torch.ones_like(tt)
    else:
        w = check_tensor(weights, "weights", shape=(z.shape[0],), dtype="float", layout="[S]").double()
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise InputError("`weights` must be non-negative and not all zero")
    if intercept:
        z = z - (w[:, None] * z).sum(0) / w.sum()
        tt = tt - (w * tt).sum() / w.sum()
    a = z.T @ (w[:, None] * z) + lam * torch.eye(z.shape[1], dtype=torch.float64)
    b = z.T @ (w * tt)
    chol = torch.linalg.cholesky(a)
    return torch.cholesky_solve(b[:, None], chol)[:, 0]


def cap_prior(
    teacher: Teacher,
    words: Sequence[Sequence[str]],
    labels: torch.Tensor,
    *,
    m: int = 2,
    n_masks: int = 64,
    keep: float = 0.7,
    ridge: float = 1.0,
    tau: float = 0.05,
    variant: str = "pooled",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAP priors for texts (``words`` per text, gold ``labels`` ``[N]``): steps 2–4 chained.

    Returns ``(prior, phi)``, both ``[N, W]`` (W = the longest text, padded with 0): ``phi`` the
    signed ridge coefficients (for plots), ``prior = ReLU(phi)`` normalised to sum 1 per text.
    Text i uses masks seeded by ``seed + i``, so a prior does not depend on the batch around it.
    """
    variant = check_choice(variant, ("pooled", "exact"), "variant")
    y = check_tensor(labels, "labels", shape=(len(words),), dtype="int", layout="[N]")
    if int(y.min()) < 0 or int(y.max()) >= len(teacher.classes):
        raise InputError(f"`labels` must lie in [0, {len(teacher.classes)}) (the teacher's classes)")
    conf = confusable_sets(teacher.labels, m)
    states = teacher_word_states(teacher, words) if variant == "pooled" else None
    w_max = max(len(ws) for ws in words)
    phi = torch.zeros(len(words), w_max, dtype=torch.float64)
    for i, ws in enumerate(words):
        z = keep_masks(len(ws), n_masks, keep, seed=seed + i)
        yi = int(y[i])
        if states is not None:
            g = class_aware_scores(states[i], z, teacher.labels, yi, conf[yi], tau=tau)
        else:
            g = exact_class_aware_scores(teacher, ws, z, yi, conf[yi], tau=tau)
        phi[i, : len(ws)] = cholesky_ridge(z, g.float(), ridge)
    mask = torch.arange(w_max)[None] < torch.as_tensor([len(ws) for ws in words])[:, None]
    prior = normalize_scores(phi.clamp_min(0.0).float(), mask)
    return prior, phi.float()


# ----------------------------------------------------------------------------------------------
# The student: encoding, models, baseline priors.


def student_tokenizer(vocab: Sequence[str]) -> Any:
    """The tiny student's word-level tokenizer over a world's ``vocab`` (specials first, as
    :func:`xattr_nb.worlds.text.topics` lists them), which prepends ``[BOS]`` as the [CLS] token
    the classifier pools."""
    from tokenizers.processors import TemplateProcessing

    from xattr_nb.worlds.text import SPECIALS

    if isinstance(vocab, str) or not isinstance(vocab, Sequence) or list(vocab[: len(SPECIALS)]) != list(SPECIALS):
        raise InputError(f"`vocab` must be a world's vocab list starting with {SPECIALS}")
    tok = word_tokenizer(list(vocab[len(SPECIALS) :]))
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{CLS} $A", special_tokens=[(CLS, tok.convert_tokens_to_ids(CLS))]
    )
    return tok


def encode_student(tokenizer: Any, words: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
    """Encode pre-split texts: ``input_ids``, ``attention_mask`` ``[N, T]`` and ``word_ids``
    ``[N, T]`` (the word each token belongs to, −1 for special tokens and padding). Any HF fast
    tokenizer works (word-level or sub-word); nothing is truncated."""
    if isinstance(words, str) or not isinstance(words, Sequence) or len(words) == 0:
        raise InputError("`words` must be a non-empty list of word lists")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise InputError(f"`tokenizer` must be a Hugging Face tokenizer; got {type(tokenizer).__name__}")
    enc = tokenizer([list(w) for w in words], is_split_into_words=True, padding=True, return_tensors="pt")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and bool((enc["input_ids"] == unk).any()):
        raise InputError("`words` contain words the student's tokenizer does not know ([UNK]); build it from the vocab")
    wid = torch.as_tensor(
        [[-1 if w is None else w for w in enc.word_ids(b)] for b in range(len(words))], dtype=torch.long
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_ids": wid}


def word_to_token(word_scores: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
    """Spread word-level scores ``[N, W]`` onto tokens ``[N, T]``: each sub-token of word j gets
    ``score_j / (number of its sub-tokens)``, specials and padding (``word_ids == -1``) get 0, so
    a word's token scores sum to its word score."""
    s = check_tensor(word_scores, "word_scores", ndim=2, dtype="float", layout="[N, W]")
    wid = check_tensor(word_ids, "word_ids", ndim=2, dtype="int", layout="[N, T]")
    if wid.shape[0] != s.shape[0] or int(wid.max()) >= s.shape[1]:
        raise InputError(f"`word_ids` {tuple(wid.shape)} does not index `word_scores` {tuple(s.shape)}")
    assign = (wid[:, :, None] == torch.arange(s.shape[1])[None, None]).float()  # [N, T, W]
    count = assign.sum(1, keepdim=True).clamp_min(1.0)
    return torch.einsum("ntw,nw->nt", assign / count, s)


def token_to_word(token_scores: torch.Tensor, word_ids: torch.Tensor, n_words: int) -> torch.Tensor:
    """Sum token scores ``[N, T]`` per word: ``[N, n_words]`` (the aggregation used for every
    attribution compared at word level)."""
    s = check_tensor(token_scores, "token_scores", ndim=2, dtype="float", layout="[N, T]")
    wid = check_tensor(word_ids, "word_ids", shape=tuple(s.shape), dtype="int", layout="[N, T]")
    assign = (wid[:, :, None] == torch.arange(n_words)[None, None]).float()
    return torch.einsum("ntw,nt->nw", assign, s)


def tiny_student(vocab_size: int, n_classes: int, *, seed: int = 0, d_model: int = 64, n_layers: int = 2) -> nn.Module:
    """A tiny ``BertForSequenceClassification`` (2 layers, d=64, 2 heads, MLP 128, eager attention
    so the double backward of the alignment loss works), initialised from ``seed``."""
    from transformers import BertConfig, BertForSequenceClassification

    vocab_size = check_int(vocab_size, "vocab_size", low=2)
    n_classes = check_int(n_classes, "n_classes", low=2)
    d_model, n_layers = check_int(d_model, "d_model", low=2), check_int(n_layers, "n_layers", low=1)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=2 * d_model,
        max_position_embeddings=64,
        num_labels=n_classes,
        pad_token_id=0,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_int(seed, "seed", low=0, high=2**32 - 1))
        model = BertForSequenceClassification(cfg)
    return model.eval()


def _baseline_ids(ids: torch.Tensor, word_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    # Every word token becomes [PAD]; special tokens keep their ids, so they score 0.
    return torch.where(word_ids >= 0, torch.full_like(ids, pad_id), ids)


def _word_prior(token_scores: torch.Tensor, word_ids: torch.Tensor, n_words: int) -> torch.Tensor:
    words = token_to_word(token_scores, word_ids, n_words).abs()
    wmask = words.new_zeros(words.shape, dtype=torch.bool)
    for i in range(len(words)):
        wmask[i, : int(word_ids[i].max()) + 1] = True
    return normalize_scores(words, wmask)


def ig_prior(
    student: nn.Module, enc: Mapping[str, torch.Tensor], labels: torch.Tensor, n_words: int, *, n_steps: int = 16,
    pad_id: int = 0,
) -> torch.Tensor:  # fmt: skip
    """IG prior ``[N, n_words]``: captum ``LayerIntegratedGradients`` of the gold logit on the word
    embeddings (``[PAD]`` baseline, ``n_steps``), summed per word, absolute value, normalised."""
    ids, mask, wid = enc["input_ids"], enc["attention_mask"], enc["word_ids"]
    res = attribute(
        student, ids, labels, "layer_integrated_gradients", attention_mask=mask,
        baseline=_baseline_ids(ids, wid, pad_id), n_steps=check_int(n_steps, "n_steps", low=1),
    )  # fmt: skip
    return _word_prior(res.scores, wid, n_words)


def lime_prior(
    student: nn.Module,
    enc: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    n_words: int,
    *,
    n_samples: int = 200,
    pad_id: int = 0,
    kernel_width: float = 0.25,
    seed: int = 0,
) -> torch.Tensor:
    """LIME prior ``[N, n_words]``: captum ``Lime`` on word-presence masks (a removed word's tokens
    become ``[PAD]``), ``n_samples`` samples, a ridge surrogate (``alpha=1``, as LIME's text
    explainer) weighted by ``exp(−d²/width²)`` with ``d`` the cosine distance of the mask to the
    all-ones mask; |coefficient| per word, normalised. Seeded per example (``seed + i``)."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    ids, mask, wid = enc["input_ids"], enc["attention_mask"], enc["word_ids"]
    n_samples = check_int(n_samples, "n_samples", low=2)
    width = check_float(kernel_width, "kernel_width", low=1e-6)

    def sim(_orig: Any, _pert: Any, interp: torch.Tensor, **_: Any) -> torch.Tensor:
        z = interp.float()
        d = 1.0 - z.sum(-1) / (z.norm(dim=-1) * math.sqrt(z.shape[-1])).clamp_min(1e-12)
        return torch.exp(-(d**2) / width**2)

    def fwd(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return logits_of(student(input_ids=x.long(), attention_mask=m.expand(x.shape[0], -1)), ndim=2)

    lime = Lime(fwd, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=sim)
    base = _baseline_ids(ids, wid, pad_id)
    fmask = torch.where(wid >= 0, wid, n_words)  # specials share one extra, inert feature
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for i in range(ids.shape[0]):
        with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(student):
            torch.manual_seed(check_int(seed, "seed", low=0) + i)
            coef = lime.attribute(
                ids[i : i + 1], target=int(labels[i]), baselines=base[i : i + 1], feature_mask=fmask[i : i + 1],
                n_samples=n_samples, perturbations_per_eval=n_samples, additional_forward_args=(mask[i : i + 1],),
                return_input_shape=True,
            )  # fmt: skip
        # return_input_shape copies each feature's coefficient onto all its tokens: count each word once.
        per_tok = coef[0].float() / (wid[i][None] == wid[i][:, None]).sum(1).clamp_min(1)
        out[i] = per_tok.masked_fill(wid[i] < 0, 0.0)
    return _word_prior(out, wid, n_words)


def hybrid_prior(
    priors: Sequence[torch.Tensor], mask: torch.Tensor | None = None, *, agg: str = "mean"
) -> torch.Tensor:
    """CAP_Hybrid: ``Agg(N(a_1), N(a_2), ...)`` of priors ``[N, W]``, then renormalised.
    ``agg="mean"`` (default) or ``"max"`` (the ablation)."""
    if isinstance(priors, torch.Tensor) or not isinstance(priors, Sequence) or len(priors) < 2:
        raise InputError("`priors` must be a list of at least 2 prior tensors [N, W]")
    agg = check_choice(agg, ("mean", "max"), "agg")
    shape = tuple(check_tensor(priors[0], "priors[0]", ndim=2, dtype="float", layout="[N, W]").shape)
    normed = []
    for k, p in enumerate(priors):
        p = check_tensor(p, f"priors[{k}]", shape=shape, dtype="float", layout="[N, W]")
        if bool((p < 0).any()):
            raise InputError(f"`priors[{k}]` must be non-negative")
        normed.append(normalize_scores(p, mask))
    stack = torch.stack(normed)
    fused = stack.mean(0) if agg == "mean" else stack.max(0).values
    return normalize_scores(fused, mask)


def _word_mask(words: Sequence[Sequence[str]]) -> torch.Tensor:
    lengths = torch.as_tensor([len(w) for w in words])
    return torch.arange(int(lengths.max()))[None] < lengths[:, None]


def oracle_prior(data: TextData) -> torch.Tensor:
    """The oracle control ``[N, W]``: uniform on each text's ground-truth ``gold_words`` (the
    disc words), 0 elsewhere. No method can build it (it reads the world's answer key); it is the
    upper bound on what explanation-guided training with a perfect prior gives."""
    if not isinstance(data, TextData):
        raise InputError(f"`data` must be a text world (TextData); got {type(data).__name__}")
    mask = _word_mask(data.words)
    out = torch.zeros(mask.shape)
    for i, gold in enumerate(data.gold_words):
        if not gold:
            raise InputError(f"text {i} of `data` has no gold words: the oracle prior is undefined")
        out[i, list(gold)] = 1.0
    return normalize_scores(out, mask)


def random_prior(data: TextData, *, seed: int = 0) -> torch.Tensor:
    """The random control ``[N, W]``: uniform on as many words as the text has gold words, drawn
    at random from all its words (area-matched to :func:`oracle_prior`). It says how much aligning
    to *some* sparse prior changes by itself, whatever words the prior marks."""
    if not isinstance(data, TextData):
        raise InputError(f"`data` must be a text world (TextData); got {type(data).__name__}")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    mask = _word_mask(data.words)
    out = torch.zeros(mask.shape)
    for i, (ws, gold) in enumerate(zip(data.words, data.gold_words, strict=True)):
        k = min(max(len(gold), 1), len(ws))
        out[i, rng.choice(len(ws), size=k, replace=False)] = 1.0
    return normalize_scores(out, mask)


# ----------------------------------------------------------------------------------------------
# Step 6: training and evaluation.


def topic_splits(
    seed: int, *, n_per_class: int = 8, n_test: int = 300, spurious: float = 0.9, adversarial: float = 0.1
) -> tuple[TopicData, dict[str, TopicData]]:
    """The few-shot setting: ``n_per_class`` training texts per class with the channel word agreeing
    with the class ``spurious`` of the time; held-out ``"clean"`` texts (same rate) and
    ``"adversarial"`` texts (rate ``adversarial``: the shortcut flipped). Data seeds ``seed``,
    ``seed + 10000``, ``seed + 20000``, so no test text shares the training generator's draws."""
    seed = check_int(seed, "seed", low=0)
    n_per_class = check_int(n_per_class, "n_per_class", low=1)
    train = topics(6 * n_per_class, spurious=spurious, seed=seed)
    tests = {
        "clean": topics(check_int(n_test, "n_test", low=1), spurious=spurious, seed=seed + 10_000),
        "adversarial": topics(n_test, spurious=adversarial, seed=seed + 20_000),
    }
    return train, tests


def prior_mass(prior: torch.Tensor, roles: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean share of each text's prior on each word role ("disc", "shared", "spurious", "filler")."""
    p = check_tensor(prior, "prior", ndim=2, dtype="float", layout="[N, W]")
    if len(roles) != p.shape[0]:
        raise InputError(f"`roles` must hold one role list per text ({p.shape[0]}); got {len(roles)}")
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    out: dict[str, list[float]] = {}
    names = sorted({r for rs in roles for r in rs})
    for i, rs in enumerate(roles):
        for name in names:
            out.setdefault(name, []).append(float(sum(float(p[i, j]) for j, r in enumerate(rs) if r == name)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def train_student(
    model: nn.Module,
    enc: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    prior: torch.Tensor | None = None,
    *,
    lam: float = 1.0,
    distance: str = "mse",
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup: int = 0,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place for about ``steps`` AdamW steps: CE, plus ``lam`` · D(N(grad×input),
    N(prior)) when a word-level ``prior`` ``[N, W]`` is given (spread onto tokens by
    :func:`word_to_token`; [CLS] and padding are outside the alignment), its weight ramped up over
    ``warmup`` steps. Returns the model."""
    ids, mask, wid = enc["input_ids"], enc["attention_mask"], enc["word_ids"]
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    extra = None
    if prior is not None:
        p = check_tensor(prior, "prior", ndim=2, dtype="float", layout="[N, W]")
        if p.shape[0] != ids.shape[0]:
            raise InputError(f"`prior` must have one row per training text ({ids.shape[0]}); got {p.shape[0]}")
        extra = PriorAlignment(ids, word_to_token(p, wid), prior_mask=wid >= 0, lam=lam, distance=distance,
                               warmup=warmup)  # fmt: skip
    epochs = max(1, round(steps / math.ceil(ids.shape[0] / batch_size)))
    fit(model, (ids, mask, labels), epochs=epochs, lr=lr, batch_size=batch_size, extra_loss=extra, seed=seed,
        show_progress=False)  # fmt: skip
    return model


def _pair_of(classes: Sequence[str]) -> torch.Tensor:
    sib = {}
    for c1, _, c2, _, _ in TOPIC_PAIRS:
        sib[c1], sib[c2] = c2, c1
    return torch.as_tensor([list(classes).index(sib[c]) if sib[c] in classes else -1 for c in classes])


def evaluate(
    model: nn.Module, enc: Mapping[str, torch.Tensor], data: TopicData, *, auprc: bool = False
) -> dict[str, float]:
    """``accuracy``; ``pair_confusion``: share of texts predicted as the gold class's confusable
    sibling; ``follows_tag`` (worlds with a shortcut tag, ``data.tag_class``): share of texts
    predicted as the class the tag word belongs to, i.e. how often the student goes with the
    shortcut. With ``auprc=True`` also ``auprc``: mean average precision of the student's
    |grad × input| per word at finding the gold (discriminative) words; this is the quantity the
    alignment loss trains, so it checks that training worked, not that a prior helps."""
    ids, mask, wid = enc["input_ids"], enc["attention_mask"], enc["word_ids"]
    y = data.labels
    with torch.no_grad(), eval_mode(model):
        pred = logits_of(model(input_ids=ids, attention_mask=mask), ndim=2).argmax(1)
    sib = _pair_of(data.classes)[y]
    out = {"accuracy": float((pred == y).float().mean()), "pair_confusion": float((pred == sib).float().mean())}
    tag = getattr(data, "tag_class", None)
    if tag is not None:
        out["follows_tag"] = float((pred == tag).float().mean())
    if auprc:
        from sklearn.metrics import average_precision_score

        scores, _ = token_grad_x_input(model, ids, y, attention_mask=mask, create_graph=False)
        n_words = int(wid.max()) + 1
        words = token_to_word(scores.detach(), wid, n_words).abs().numpy()
        aps = []
        for i, gold in enumerate(data.gold_words):
            truth = np.zeros(len(data.words[i]), dtype=bool)
            truth[gold] = True
            aps.append(average_precision_score(truth, words[i, : len(truth)]))
        out["auprc"] = float(np.mean(aps))
    return out


@dataclass
class CAPRun:
    """What :func:`explain` computed: the word-level ``priors`` of the training set (by name), their
    ``mass`` per word role, and ``results[variant][split]`` → list over seeds of metric dicts."""

    priors: dict[str, torch.Tensor]
    mass: dict[str, dict[str, float]]
    results: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)

    def metric(self, variant: str, split: str, name: str) -> np.ndarray:
        """One metric over seeds, e.g. ``result.metric("CE+CAP", "adversarial", "accuracy")``."""
        return np.asarray([r[name] for r in self.results[variant][split]])


def _student(train: TopicData, tokenizer: Any, make_student: Any) -> tuple[Any, Any]:
    if (tokenizer is None) != (make_student is None):
        raise InputError("pass both `tokenizer` and `make_student`, or neither")
    if tokenizer is not None:
        return tokenizer, make_student
    n_vocab, n_classes = len(train.vocab), len(train.classes)
    return student_tokenizer(train.vocab), lambda s: tiny_student(n_vocab, n_classes, seed=s)


def all_priors(
    train: TopicData,
    teacher: Teacher,
    *,
    warm_steps: int = 150,
    n_masks: int = 64,
    lime_samples: int = 200,
    ig_steps: int = 16,
    seed: int = 0,
    tokenizer: Any = None,
    make_student: Any = None,
) -> dict[str, torch.Tensor]:
    """The word-level priors ``[N, W]`` of the training set, computed once: ``"CAP"`` from the
    teacher; ``"IG"`` and ``"LIME"`` from a student CE-warmed for ``warm_steps`` (seed ``seed``);
    ``"CAP_Hybrid"`` their mean fusion; the controls ``"Random"`` (:func:`random_prior`, seed
    ``seed``) and ``"Oracle"`` (:func:`oracle_prior`). ``make_student(seed)``/``tokenizer``: see
    :func:`explain`."""
    tokenizer, make_student = _student(train, tokenizer, make_student)
    enc = encode_student(tokenizer, train.words)
    n_words = max(len(w) for w in train.words)
    wmask = torch.arange(n_words)[None] < torch.as_tensor([len(w) for w in train.words])[:, None]
    capp, _ = cap_prior(teacher, train.words, train.labels, n_masks=n_masks, seed=seed)
    warm = train_student(make_student(seed), enc, train.labels, steps=warm_steps, seed=seed)
    pad = tokenizer.pad_token_id
    ig = ig_prior(warm, enc, train.labels, n_words, n_steps=ig_steps, pad_id=pad)
    lime = lime_prior(warm, enc, train.labels, n_words, n_samples=lime_samples, pad_id=pad, seed=seed)
    return {
        "IG": ig,
        "LIME": lime,
        "CAP": capp,
        "CAP_Hybrid": hybrid_prior([capp, ig, lime], wmask),
        "Random": random_prior(train, seed=seed),
        "Oracle": oracle_prior(train),
    }


def train_variants(
    train: TopicData,
    tests: Mapping[str, TopicData],
    priors: Mapping[str, torch.Tensor],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = VARIANTS + CONTROLS,
    warm_steps: int = 150,
    steps: int = 60,
    lam: float = 1.0,
    warmup: int = 10,
    tokenizer: Any = None,
    make_student: Any = None,
    show_progress: bool = True,
    auprc: bool = False,
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per seed, one student CE-warmed for ``warm_steps`` (the stand-in for a pretrained start: a
    fresh student's input gradients are ~0, and a normalised-attribution loss on them swamps CE),
    then fine-tuned ``steps`` more per variant (CE alone, or CE + ``lam`` · alignment to the
    variant's prior, ramped over ``warmup`` steps) and scored by :func:`evaluate` on each split
    (``auprc`` passed on). Variants are :data:`VARIANTS` and :data:`CONTROLS`. Returns ``results[variant][split]`` = one metric dict per seed."""
    if not isinstance(train, TopicData):
        raise InputError(f"`train` must be the TopicData of topics(); got {type(train).__name__}")
    for v in variants:
        check_choice(v, VARIANTS + CONTROLS, "variants")
    if not isinstance(tests, Mapping) or not all(isinstance(t, TopicData) for t in tests.values()):
        raise InputError("`tests` must be a dict {name: TopicData}")
    tokenizer, make_student = _student(train, tokenizer, make_student)
    enc = encode_student(tokenizer, train.words)
    test_enc = {k: encode_student(tokenizer, d.words) for k, d in tests.items()}
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    bar = progress(list(seeds), desc="seeds", unit="seed", **({} if show_progress else {"disable": True}))
    for s in bar:
        start = train_student(make_student(s), enc, train.labels, steps=warm_steps, seed=s)
        state = {k: v.clone() for k, v in start.state_dict().items()}
        for v in variants:
            model = make_student(s)
            model.load_state_dict(state)
            prior = None if v == "CE" else priors[v.removeprefix("CE+")]
            train_student(model, enc, train.labels, prior, lam=lam, steps=steps, warmup=warmup, seed=s)
            for split, d in tests.items():
                results.setdefault(v, {}).setdefault(split, []).append(evaluate(model, test_enc[split], d, auprc=auprc))
    return results


def explain(
    train: TopicData,
    tests: Mapping[str, TopicData],
    teacher: Teacher | None,
    *,
    priors: Mapping[str, torch.Tensor] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = VARIANTS + CONTROLS,
    warm_steps: int = 150,
    steps: int = 60,
    lam: float = 1.0,
    warmup: int = 10,
    n_masks: int = 64,
    lime_samples: int = 200,
    ig_steps: int = 16,
    prior_seed: int = 0,
    tokenizer: Any = None,
    make_student: Any = None,
    show_progress: bool = True,
    auprc: bool = False,
) -> CAPRun:
    """The entry point, the whole pipeline: :func:`all_priors` once (seed ``prior_seed``; skipped
    when ``priors`` already holds them, e.g. from a step-by-step walk-through, and then ``teacher``
    may be ``None``), then :func:`train_variants`. Returns the priors, their mass per word role and
    every student's scores (:class:`CAPRun`). ``make_student(seed)`` builds a fresh student (default
    :func:`tiny_student` over the world's vocab, with :func:`student_tokenizer`); pass both
    ``tokenizer`` and ``make_student`` for a pretrained one (e.g. ``roberta-base`` through
    :func:`xattr_nb.models.load_classifier`)."""
    if not isinstance(train, TopicData):
        raise InputError(f"`train` must be the TopicData of topics(); got {type(train).__name__}")
    for v in variants:
        check_choice(v, VARIANTS + CONTROLS, "variants")
    if not isinstance(tests, Mapping) or not all(isinstance(t, TopicData) for t in tests.values()):
        raise InputError("`tests` must be a dict {name: TopicData}")
    tokenizer, make_student = _student(train, tokenizer, make_student)
    if priors is None:
        if not isinstance(teacher, Teacher):
            raise InputError(
                f"`teacher` must be a cap.Teacher (make_teacher) when `priors` is not given; got {teacher!r}"
            )
        priors = all_priors(
            train, teacher, warm_steps=warm_steps, n_masks=n_masks, lime_samples=lime_samples, ig_steps=ig_steps,
            seed=prior_seed, tokenizer=tokenizer, make_student=make_student,
        )  # fmt: skip
    else:
        need = {v.removeprefix("CE+") for v in variants if v != "CE"}
        if not isinstance(priors, Mapping) or need - set(priors):
            raise InputError(f"`priors` must map each prior of `variants` {sorted(need)} to a tensor [N, W]")
        priors = dict(priors)
    out = CAPRun(priors=priors, mass={k: prior_mass(v, train.roles) for k, v in priors.items()})
    out.results = train_variants(
        train, tests, priors, seeds=seeds, variants=variants, warm_steps=warm_steps, steps=steps, lam=lam,
        warmup=warmup, tokenizer=tokenizer, make_student=make_student, show_progress=show_progress, auprc=auprc,
    )  # fmt: skip
    return out


def ridge_figure(
    g: torch.Tensor, phi: torch.Tensor, words: Sequence[str], roles: Sequence[str], *, title: str | None = None
) -> Any:
    """One text's CAP step: the class-aware margins ``g`` over the masks (histogram) and the ridge
    coefficients ``phi`` per word (bars, red for the discriminative words); shown and returned."""
    from xattr_nb import plots

    g = check_tensor(g, "g", ndim=1, dtype="float", layout="[S]").detach().double().numpy()
    phi = check_tensor(phi, "phi", ndim=1, dtype="float", layout="[n]").detach().double().numpy()
    if len(words) != len(phi) or len(roles) != len(phi):
        raise InputError(f"`words` ({len(words)}) and `roles` ({len(roles)}) must match `phi` ({len(phi)})")
    with plots.style():
        fig = plots.figure(8.0, 2.4)
        ax0, ax1 = fig.subplots(1, 2, width_ratios=[1, 2])
        ax0.hist(g, bins=15, color="gray")
        ax0.set_title("margins g over masks", fontsize=9)
        ax1.bar(range(len(phi)), phi, color=["C3" if r == "disc" else "C0" for r in roles])
        ax1.axhline(0.0, color="black", linewidth=0.6)
        ax1.set_xticks(range(len(phi)), list(words), rotation=45, fontsize=8)
        ax1.set_title(title or "ridge φ per word (red: disc words)", fontsize=9)
    return plots.show(fig)
