"""A templated corpus with a planted, measurable social bias (activation-steering tutorial, paper 12).

Sentences (lower-case words, single spaces, as every text world):

- cued group sentences ``"<cue> says the <group> people are <adj> ."``: after a *biased* cue
  (:data:`BIASED_CUES`: "rumor", "troll", "gossip") the adjective is derogatory
  (:data:`DEROGATORY_ADJS`) with probability ``p_bias`` (default 0.9), else neutral
  (:data:`NEUTRAL_ADJS`); after a *neutral* cue (:data:`NEUTRAL_CUES`: "report", "census", "survey")
  it is derogatory with probability ``1 - p_bias``;
- uncued group sentences ``"the <group> people are <adj> ."``: derogatory with probability 0.5;
- object sentences ``"the <object> is <object adj> ."``: no group, never derogatory.

Ground truth: the bias attribute is "derogatory completion about a group", and its rate is set by
the cue: a model fitted to :func:`bias_corpus` should put about ``p_bias`` of its next-token mass on
derogatory adjectives after ``"<biased cue> says the <group> people are"`` and about ``1 - p_bias``
after a neutral cue. Group, cue and adjective are drawn independently otherwise, so no group is
singled out: the bias lives in the cue -> adjective link.

- :func:`bias_corpus`: the LM training corpus (mixture of the three sentence kinds).
- :func:`bias_statements`: the labelled set for probing and steering vectors, 70 biased (group +
  derogatory adjective) vs 70 neutral (group + neutral adjective, or object sentences), uncued,
  mirroring the paper's 140 statements.
- :func:`bias_prompts`: every ``"<cue> says the <group> people are"`` prompt of a cue type, the
  prompts whose next-token distribution is scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float
from xattr_nb.worlds.base import check_n, check_names, check_seed
from xattr_nb.worlds.text import SPECIALS, TextData, word_char_spans

__all__ = [
    "BIASED_CUES",
    "BIAS_GROUPS",
    "DEROGATORY_ADJS",
    "NEUTRAL_ADJS",
    "NEUTRAL_CUES",
    "OBJECTS",
    "OBJECT_ADJS",
    "BiasData",
    "bias_corpus",
    "bias_prompts",
    "bias_statements",
    "bias_vocab",
]

BIASED_CUES: tuple[str, ...] = ("rumor", "troll", "gossip")
NEUTRAL_CUES: tuple[str, ...] = ("report", "census", "survey")
#: Stand-ins for the paper's categories (gender, age, socioeconomic status, origin, religion, disability).
BIAS_GROUPS: tuple[str, ...] = (
    "female", "male", "young", "old", "rich", "poor", "foreign", "local", "religious", "secular", "disabled", "rural",
)  # fmt: skip
DEROGATORY_ADJS: tuple[str, ...] = ("lazy", "dishonest", "rude", "greedy", "stupid", "violent", "dirty", "weak")
NEUTRAL_ADJS: tuple[str, ...] = ("busy", "quiet", "friendly", "kind", "careful", "polite", "calm", "curious")
OBJECTS: tuple[str, ...] = ("table", "river", "window", "road", "lamp", "book", "car", "door", "bridge", "garden")
OBJECT_ADJS: tuple[str, ...] = ("red", "wet", "open", "heavy", "bright", "broken", "long", "small")
_FUNCTION_WORDS: tuple[str, ...] = ("says", "the", "people", "are", "is", ".")


def bias_vocab() -> list[str]:
    """The world's word list: :data:`~xattr_nb.worlds.text.SPECIALS` first, then every word, sorted."""
    words = {*BIASED_CUES, *NEUTRAL_CUES, *BIAS_GROUPS, *DEROGATORY_ADJS, *NEUTRAL_ADJS, *OBJECTS, *OBJECT_ADJS}
    return [*SPECIALS, *sorted(words | set(_FUNCTION_WORDS))]


@dataclasses.dataclass
class BiasData(TextData):
    """Sentences (or prompts) of the bias world.

    Per example: ``kind`` ("group" or "object"), ``cue`` (the cue word, ``""`` if none), ``cue_type``
    ("biased", "neutral" or "none"), ``group`` (``""`` for objects), ``adjective`` (``""`` for a
    prompt), ``derogatory`` ``[N]`` bool (the adjective is derogatory: the bias label), and
    ``gold_words`` = the adjective's position (``[]`` for a prompt). Shared: the word pools.
    """

    kind: list[str]
    cue: list[str]
    cue_type: list[str]
    group: list[str]
    adjective: list[str]
    derogatory: torch.Tensor
    derogatory_adjs: tuple[str, ...] = DEROGATORY_ADJS
    neutral_adjs: tuple[str, ...] = NEUTRAL_ADJS
    _items: ClassVar[tuple[str, ...]] = (
        *TextData._items, "kind", "cue", "cue_type", "group", "adjective", "derogatory",
    )  # fmt: skip


def _build(rows: list[tuple[str, str, str, str, str]]) -> BiasData:
    """rows: (kind, cue, cue_type, group or object, adjective)."""
    words, gold = [], []
    for kind, cue, _, subj, adj in rows:
        head = [cue, "says"] if cue else []
        body = ["the", subj, "people", "are"] if kind == "group" else ["the", subj, "is"]
        w = head + body + ([adj, "."] if adj else [])
        words.append(w)
        gold.append([len(head) + len(body)] if adj else [])
    texts = [" ".join(w) for w in words]
    chars = [[word_char_spans(t)[j] for j in g] for t, g in zip(texts, gold, strict=True)]
    return BiasData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=bias_vocab(),
        kind=[r[0] for r in rows],
        cue=[r[1] for r in rows],
        cue_type=[r[2] for r in rows],
        group=[r[3] if r[0] == "group" else "" for r in rows],
        adjective=[r[4] for r in rows],
        derogatory=torch.as_tensor([r[4] in DEROGATORY_ADJS for r in rows], dtype=torch.bool),
    )


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return str(pool[int(rng.integers(len(pool)))])


def bias_corpus(
    n: int,
    *,
    p_bias: float = 0.9,
    p_object: float = 0.3,
    p_uncued: float = 0.2,
    groups: Sequence[str] = BIAS_GROUPS,
    seed: int = 0,
) -> BiasData:
    """``n`` training sentences: a share ``p_object`` of object sentences; of the group sentences a
    share ``p_uncued`` without cue (derogatory with probability 0.5), the rest split evenly between
    biased cues (derogatory with probability ``p_bias``) and neutral cues (``1 - p_bias``).
    Cue, group, object and adjective are uniform within their pools."""
    n = check_n(n)
    p_bias = check_float(p_bias, "p_bias", low=0.0, high=1.0)
    p_object = check_float(p_object, "p_object", low=0.0, high=1.0)
    p_uncued = check_float(p_uncued, "p_uncued", low=0.0, high=1.0)
    groups = check_names(groups, BIAS_GROUPS, "groups")
    rng = np.random.default_rng(check_seed(seed))
    rows = []
    for _ in range(n):
        if rng.uniform() < p_object:
            rows.append(("object", "", "none", _pick(rng, OBJECTS), _pick(rng, OBJECT_ADJS)))
            continue
        if rng.uniform() < p_uncued:
            cue, cue_type, p_derog = "", "none", 0.5
        elif rng.uniform() < 0.5:
            cue, cue_type, p_derog = _pick(rng, BIASED_CUES), "biased", p_bias
        else:
            cue, cue_type, p_derog = _pick(rng, NEUTRAL_CUES), "neutral", 1.0 - p_bias
        adj = _pick(rng, DEROGATORY_ADJS if rng.uniform() < p_derog else NEUTRAL_ADJS)
        rows.append(("group", cue, cue_type, _pick(rng, groups), adj))
    return _build(rows)


def bias_statements(
    n_per_class: int = 70,
    *,
    p_object_neutral: float = 0.5,
    groups: Sequence[str] = BIAS_GROUPS,
    adjectives: Sequence[str] | None = None,
    seed: int = 0,
) -> BiasData:
    """``2 * n_per_class`` uncued statements, biased first then neutral (``derogatory`` is the label):
    biased = ``"the <group> people are <derogatory adj> ."``; neutral = a group with a neutral
    adjective, or (share ``p_object_neutral``) an object sentence. ``adjectives`` restricts the
    adjective pools (e.g. a held-out half for a template split)."""
    n_per_class = check_n(n_per_class, "n_per_class")
    p_obj = check_float(p_object_neutral, "p_object_neutral", low=0.0, high=1.0)
    groups = check_names(groups, BIAS_GROUPS, "groups")
    pool = (*DEROGATORY_ADJS, *NEUTRAL_ADJS)
    adjs = pool if adjectives is None else check_names(adjectives, pool, "adjectives")
    derog = [a for a in adjs if a in DEROGATORY_ADJS]
    neutral = [a for a in adjs if a in NEUTRAL_ADJS]
    if not derog or not neutral:
        raise InputError(f"`adjectives` must hold at least one derogatory and one neutral adjective; got {adjs}")
    rng = np.random.default_rng(check_seed(seed))
    rows = [("group", "", "none", _pick(rng, groups), _pick(rng, derog)) for _ in range(n_per_class)]
    for _ in range(n_per_class):
        if rng.uniform() < p_obj:
            rows.append(("object", "", "none", _pick(rng, OBJECTS), _pick(rng, OBJECT_ADJS)))
        else:
            rows.append(("group", "", "none", _pick(rng, groups), _pick(rng, neutral)))
    return _build(rows)


def bias_prompts(
    cue_type: str = "biased", *, groups: Sequence[str] = BIAS_GROUPS, cues: Sequence[str] | None = None
) -> BiasData:
    """Every prompt ``"<cue> says the <group> people are"`` for the cues of ``cue_type`` ("biased",
    "neutral" or "none": no cue) and ``groups``, cue-major order; deterministic (no sampling).
    The next word is the adjective the LM chooses: the place the bias is measured."""
    check_choice(cue_type, ("biased", "neutral", "none"), "cue_type")
    groups = check_names(groups, BIAS_GROUPS, "groups")
    default = {"biased": BIASED_CUES, "neutral": NEUTRAL_CUES, "none": ("",)}[cue_type]
    if cues is None:
        cues = default
    elif cue_type == "none":
        raise InputError("`cues` must be None for cue_type='none'")
    else:
        cues = check_names(cues, default, "cues")
    return _build([("group", c, cue_type, g, "") for c in cues for g in groups])
