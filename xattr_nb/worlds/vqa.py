"""Questions and answers about captions-world images: the VQA world of TinyVLM (paper 22, spec §1.5).

Images come from :func:`xattr_nb.worlds.captions.corpus` (one object, its shape, colour, size,
style, background and position known exactly). Every question has one ground-truth answer read off
the image's attributes:

=============== ======================================== ============================================
type            question                                 answer
=============== ======================================== ============================================
``shape``       ``what shape is this ?``                 the shape word (16-way)
``color``       ``what color is the shape ?``            the colour word (8-way)
``color_named`` ``what color is the {shape} ?``          the colour word; the question names the
                                                         (true) shape, so a language model can answer
                                                         from its shape → colour prior
``yesno``       ``is there a {color} {shape} ?``         ``yes`` iff (colour, shape) is the image's
``describe``    ``describe the image .``                 ``a {color} {shape} on a {bg} background``
=============== ======================================== ============================================

Yes/no questions in the Tiny-POPE style (:func:`pope`): every image gets one positive question (its
own composite) and one negative, so a POPE set is exactly balanced. Negatives come in three kinds
(:data:`NEGATIVE_KINDS`):

- ``random``: a composite drawn uniformly among all (colour, shape) pairs other than the image's;
- ``popular``: the most frequent composites of the biased training corpora, i.e. a prior pair
  ``(PRIOR_COLOR[s'], s')`` of another shape ``s'`` (under ``spurious_color = rho`` each prior pair
  is ``rho + (1 - rho) / 8`` of its shape's images; any other pair at most ``(1 - rho) / 7``);
- ``adversarial``: the image's own shape in its *prior* colour (:data:`xattr_nb.worlds.captions.PRIOR_COLOR`),
  ``is there a yellow star ?`` when the star is blue. Only defined on counter-prior images (an image
  in its prior colour has no adversarial negative), so :func:`pope` with ``kind="adversarial"``
  keeps the counter-prior images only.

:func:`training_qa` draws the biased question mix TinyVLM is trained on: yes/no questions answered
``yes`` with probability ``yes_rate`` (0.7 for the shipped model), negatives of the ``random`` and
``popular`` kinds only (an adversarial negative, a prior pair answered ``no``, never occurs in
training), so a model that does not read the colour answers ``yes`` to the prior pair.

:func:`images` draws the pictures (:class:`VQAImages`): biased (``spurious_color``) or decorrelated,
with a fraction ``hard`` blended with pixel noise (spec §1.5 (iii): weak visual evidence).

:func:`vocabulary` is the captions world's vocabulary plus the question words (:data:`QA_WORDS`);
:func:`world_version` hashes the captions world's version with the question and answer formats and
the prior. Every sampler takes ``seed`` and is deterministic given it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float
from xattr_nb.worlds import captions as world
from xattr_nb.worlds.base import WorldData, check_seed, config_hash

__all__ = [
    "ANSWERS",
    "DESCRIBE",
    "NEGATIVE_KINDS",
    "QA_WORDS",
    "QUESTIONS",
    "QUESTION_TYPES",
    "TRAIN_MIX",
    "QAData",
    "VQAImages",
    "answer",
    "images",
    "negative",
    "pope",
    "qa_set",
    "question",
    "training_qa",
    "vocabulary",
    "world_version",
]

#: Question templates by type (words separated by single spaces; ``?`` and ``.`` are tokens).
QUESTIONS: dict[str, str] = {
    "shape": "what shape is this ?",
    "color": "what color is the shape ?",
    "color_named": "what color is the {shape} ?",
    "yesno": "is there a {color} {shape} ?",
    "describe": "describe the image .",
}
QUESTION_TYPES: tuple[str, ...] = tuple(QUESTIONS)
#: The answer of a ``describe`` question (the captions world's template 5).
DESCRIBE: str = "a {color} {shape} on a {bg} background"
NEGATIVE_KINDS: tuple[str, ...] = ("random", "popular", "adversarial")
#: The closed answer sets of the one-word question types.
ANSWERS: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "color": world.COLORS,
    "color_named": world.COLORS,
    "yesno": ("yes", "no"),
}
#: Question mix of :func:`training_qa` (fractions of the questions per type).
TRAIN_MIX: dict[str, float] = {"shape": 0.2, "color": 0.1, "color_named": 0.15, "yesno": 0.4, "describe": 0.15}


def _qa_words() -> tuple[str, ...]:
    have = set(world.vocabulary())
    words: list[str] = []
    for text in (*QUESTIONS.values(), DESCRIBE, "yes no"):
        for w in text.split():
            if not w.startswith("{") and w not in have and w not in words:
                words.append(w)
    return tuple(words)


#: Words of the questions and answers that the captions vocabulary lacks.
QA_WORDS: tuple[str, ...] = _qa_words()


def vocabulary() -> list[str]:
    """The captions world's :func:`~xattr_nb.worlds.captions.vocabulary`, then :data:`QA_WORDS`."""
    return [*world.vocabulary(), *QA_WORDS]


def world_version() -> str:
    """Hash of the captions world's version, the question/answer formats, negative kinds and the prior."""
    return config_hash(
        {
            "captions": world.world_version(),
            "questions": QUESTIONS,
            "describe": DESCRIBE,
            "answers": ANSWERS,
            "kinds": NEGATIVE_KINDS,
            "prior": world.PRIOR_COLOR,
            "vocab": vocabulary(),
        }
    )


def _check_attr(attr: Mapping[str, str]) -> None:
    if not isinstance(attr, Mapping) or not {"shape", "color", "bg"} <= set(attr):
        raise InputError(f"`attr` must be a dict with at least 'shape', 'color' and 'bg'; got {attr!r}")


def question(qtype: str, attr: Mapping[str, str] | None = None, *, ask: tuple[str, str] | None = None) -> str:
    """The text of a ``qtype`` question. ``color_named`` reads the shape from ``attr``; ``yesno``
    asks about the composite ``ask = (color, shape)`` (default: the image's own, a positive)."""
    qtype = check_choice(qtype, QUESTION_TYPES, "qtype")
    if qtype == "color_named":
        _check_attr(attr)
        return QUESTIONS[qtype].format(shape=attr["shape"])
    if qtype == "yesno":
        if ask is None:
            _check_attr(attr)
            ask = (attr["color"], attr["shape"])
        color, shape = ask
        check_choice(color, world.COLORS, "ask[0]")
        check_choice(shape, world.SHAPES, "ask[1]")
        return QUESTIONS[qtype].format(color=color, shape=shape)
    return QUESTIONS[qtype]


def answer(qtype: str, attr: Mapping[str, str], *, ask: tuple[str, str] | None = None) -> str:
    """The ground-truth answer of a ``qtype`` question about an image with attributes ``attr``."""
    qtype = check_choice(qtype, QUESTION_TYPES, "qtype")
    _check_attr(attr)
    if qtype == "shape":
        return attr["shape"]
    if qtype in ("color", "color_named"):
        return attr["color"]
    if qtype == "describe":
        return DESCRIBE.format(color=attr["color"], shape=attr["shape"], bg=attr["bg"])
    ask = (attr["color"], attr["shape"]) if ask is None else tuple(ask)
    return "yes" if ask == (attr["color"], attr["shape"]) else "no"


def negative(attr: Mapping[str, str], kind: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """A (colour, shape) composite absent from the image, of negative ``kind``; ``None`` for
    ``adversarial`` on an image already in its shape's prior colour (no such negative exists)."""
    _check_attr(attr)
    kind = check_choice(kind, NEGATIVE_KINDS, "kind")
    own = (attr["color"], attr["shape"])
    if kind == "adversarial":
        prior = world.PRIOR_COLOR[attr["shape"]]
        return None if prior == attr["color"] else (prior, attr["shape"])
    if kind == "popular":
        others = [s for s in world.SHAPES if s != attr["shape"]]
        s = others[int(rng.integers(len(others)))]
        return (world.PRIOR_COLOR[s], s)
    while True:
        pick = (world.COLORS[int(rng.integers(len(world.COLORS)))], world.SHAPES[int(rng.integers(len(world.SHAPES)))])
        if pick != own:
            return pick


@dataclasses.dataclass
class VQAImages(world.CaptionData):
    """Captions-world images (:class:`~xattr_nb.worlds.captions.CaptionData`) with ``hard[i]``: image
    ``i`` was degraded (its evidence weak: see :func:`images`); its attributes are unchanged."""

    hard: torch.Tensor | None = None  # [N] bool
    _items: ClassVar[tuple[str, ...]] = (*world.CaptionData._items, "hard")


def images(
    n: int,
    *,
    seed: int = 0,
    spurious_color: float = 0.0,
    hard: float = 0.0,
    visibility: float = 0.2,
    size: int = 32,
) -> VQAImages:
    """``n`` images of :func:`xattr_nb.worlds.captions.corpus` (held-out pairs excluded).

    ``spurious_color = rho``: a fraction ``rho`` show their shape in its prior colour (the biased
    training images); ``0`` gives decorrelated evaluation images. ``hard``: the fraction of "hard"
    images (spec §1.5 (iii): visual evidence weak, so a model's prior wins), each blended with
    uniform pixel noise, ``visibility * image + (1 - visibility) * U(0, 1)``; ``data.hard`` says which.
    """
    hard = check_float(hard, "hard", low=0.0, high=1.0)
    visibility = check_float(visibility, "visibility", low=0.0, high=1.0)
    data = world.corpus(n, seed=seed, spurious_color=spurious_color, size=size)
    rng = np.random.default_rng([check_seed(seed), 7])
    mask = rng.random(len(data)) < hard
    imgs = data.images.clone()
    if mask.any():
        noise = torch.from_numpy(rng.random((int(mask.sum()), *imgs.shape[1:]), dtype=np.float32))
        imgs[torch.from_numpy(mask)] = visibility * imgs[torch.from_numpy(mask)] + (1 - visibility) * noise
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    return VQAImages(**{**fields, "images": imgs, "hard": torch.from_numpy(mask)})


@dataclasses.dataclass
class QAData(WorldData):
    """Questions about images, one row per question.

    ``images[i]`` is the image question ``i`` asks about (``image_index[i]`` its row in the source
    draw, ``hard[i]`` whether that image was degraded, :func:`images`); ``qtypes[i]`` in
    :data:`QUESTION_TYPES`; ``kinds[i]`` is ``"positive"`` or the negative kind of a yes/no question,
    ``""`` for other types; ``asked[i]`` the (colour, shape) a yes/no question asks about (``None``
    otherwise); ``prior[i]`` whether the image shows its shape in its prior colour; ``shape_ids`` /
    ``color_ids`` index :data:`~xattr_nb.worlds.captions.SHAPES` / :data:`~xattr_nb.worlds.captions.COLORS`
    (the image's truth).
    """

    images: torch.Tensor  # [M, 3, H, W]
    questions: list[str]
    answers: list[str]
    qtypes: list[str]
    kinds: list[str]
    asked: list[tuple[str, str] | None]
    image_index: torch.Tensor  # [M] long
    shape_ids: torch.Tensor  # [M] long
    color_ids: torch.Tensor  # [M] long
    prior: torch.Tensor  # [M] bool
    hard: torch.Tensor  # [M] bool
    attrs: list[dict[str, str]]
    seed: int = 0
    _items: ClassVar[tuple[str, ...]] = (
        "images", "questions", "answers", "qtypes", "kinds", "asked", "image_index", "shape_ids",
        "color_ids", "prior", "hard", "attrs",
    )  # fmt: skip

    @property
    def yes(self) -> torch.Tensor:
        """``[M]`` bool: the answer is ``yes``."""
        return torch.as_tensor([a == "yes" for a in self.answers], dtype=torch.bool)


def _build(data: world.CaptionData, rows: list[tuple[int, str, str, tuple[str, str] | None]], seed: int) -> QAData:
    """``rows`` = (image index, qtype, kind, asked composite)."""
    idx = torch.as_tensor([r[0] for r in rows], dtype=torch.long)
    attrs = [data.attrs[i] for i, *_ in rows]
    prior = world.prior_mask(data)
    return QAData(
        images=data.images[idx],
        questions=[question(q, a, ask=ask) for a, (_, q, _, ask) in zip(attrs, rows, strict=True)],
        answers=[answer(q, a, ask=ask) for a, (_, q, _, ask) in zip(attrs, rows, strict=True)],
        qtypes=[r[1] for r in rows],
        kinds=[r[2] for r in rows],
        asked=[r[3] for r in rows],
        image_index=idx,
        shape_ids=data.shape_ids[idx],
        color_ids=data.color_ids[idx],
        prior=prior[idx],
        hard=_hard(data)[idx],
        attrs=attrs,
        seed=seed,
    )


def _hard(data: world.CaptionData) -> torch.Tensor:
    h = getattr(data, "hard", None)
    return torch.zeros(len(data), dtype=torch.bool) if h is None else h


def qa_set(data: world.CaptionData, qtype: str) -> QAData:
    """One ``qtype`` question per image of ``data`` (``yesno``: use :func:`pope`)."""
    qtype = check_choice(qtype, tuple(q for q in QUESTION_TYPES if q != "yesno"), "qtype")
    _check_data(data)
    return _build(data, [(i, qtype, "", None) for i in range(len(data))], data.seed)


def _check_data(data: object) -> None:
    if not isinstance(data, world.CaptionData):
        raise InputError(f"`data` must be a captions-world CaptionData (vqa.images(...)); got {type(data).__name__}")


def pope(data: world.CaptionData, kind: str, *, seed: int = 0) -> QAData:
    """Tiny-POPE: for each image one positive (``is there a {its colour} {its shape} ?`` → yes) and
    one negative of ``kind`` (→ no), positive first; exactly balanced. ``kind="adversarial"`` keeps the
    counter-prior images only (the others have no adversarial negative)."""
    _check_data(data)
    kind = check_choice(kind, NEGATIVE_KINDS, "kind")
    rng = np.random.default_rng(check_seed(seed))
    rows: list[tuple[int, str, str, tuple[str, str] | None]] = []
    for i, a in enumerate(data.attrs):
        neg = negative(a, kind, rng)
        if neg is None:
            continue
        rows += [(i, "yesno", "positive", (a["color"], a["shape"])), (i, "yesno", kind, neg)]
    if not rows:
        raise InputError(f"`data` has no image with a {kind!r} negative (all images are in their prior colour)")
    return _build(data, rows, seed)


def training_qa(
    data: world.CaptionData,
    *,
    seed: int = 0,
    yes_rate: float = 0.7,
    mix: Mapping[str, float] | None = None,
    negative_kinds: Sequence[str] = ("random", "popular"),
) -> QAData:
    """One question per image of ``data``, its type drawn from ``mix`` (default :data:`TRAIN_MIX`);
    a yes/no question is positive with probability ``yes_rate``, else a negative of a kind drawn
    uniformly from ``negative_kinds`` (an ``adversarial`` draw on a prior image falls back to ``random``)."""
    _check_data(data)
    rng = np.random.default_rng(check_seed(seed))
    yes_rate = check_float(yes_rate, "yes_rate", low=0.0, high=1.0)
    mix = dict(TRAIN_MIX if mix is None else mix)
    for q, p in mix.items():
        check_choice(q, QUESTION_TYPES, "mix key")
        check_float(p, f"mix[{q!r}]", low=0.0)
    total = sum(mix.values())
    if total <= 0:
        raise InputError("`mix` must give a positive weight to at least one question type")
    if isinstance(negative_kinds, str) or not negative_kinds:
        raise InputError(f"`negative_kinds` must be a non-empty list from {NEGATIVE_KINDS}")
    kinds = [check_choice(k, NEGATIVE_KINDS, "negative_kinds") for k in negative_kinds]
    types = list(mix)
    draw = rng.choice(len(types), size=len(data), p=np.asarray([mix[t] for t in types]) / total)
    rows: list[tuple[int, str, str, tuple[str, str] | None]] = []
    for i, (a, t) in enumerate(zip(data.attrs, draw, strict=True)):
        q = types[t]
        if q != "yesno":
            rows.append((i, q, "", None))
        elif rng.random() < yes_rate:
            rows.append((i, q, "positive", (a["color"], a["shape"])))
        else:
            kind = kinds[int(rng.integers(len(kinds)))]
            neg = negative(a, kind, rng)
            if neg is None:
                kind, neg = "random", negative(a, "random", rng)
            rows.append((i, q, kind, neg))
    return _build(data, rows, seed)
