"""Topic texts with a planted shortcut: a *tag* word per class that agrees with the label in training.

The texts are those of :func:`xattr_nb.worlds.text.topics` (six topics in three confusable pairs;
each text holds one or two **disc** words of its class, the gold evidence, one or two words
**shared** with its sibling class, and fillers), plus one **spurious** tag word. Each class has
its own tag (:data:`SHORTCUT_TAGS`, words that say nothing about any topic). In a split with
``agree=rho`` the tag is the gold class's own with probability ``rho`` and the *sibling* class's
otherwise, so:

- ``agree=1.0`` (the default training split): the tag alone predicts the label perfectly, and it
  is the easiest cue there is (one word, present in every text of its class, while each disc word
  turns up in only a few texts of a few-shot set). A classifier trained by cross-entropy can reach
  zero loss by reading the tag alone;
- ``agree=0.0`` (:func:`flip_tags` of a held-out split, the adversarial split): the tag points to
  the sibling, the class that also shares the text's shared words. Only the disc words still
  point to the gold class.

Ground truth per text: ``gold_words`` (the disc positions), ``roles``, ``tag_pos`` (the tag's
position), ``tag_class`` (the class whose tag it is) and ``channel_agrees`` (tag class == label).
:func:`shortcut_splits` makes the few-shot training set, a held-out clean test and its adversarial
twin (the same texts, only the tag swapped), from disjoint seeds. Seeded and deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int, check_int_range
from xattr_nb.worlds.base import check_n, check_names, check_seed
from xattr_nb.worlds.text import (
    TOPIC_CLASSES,
    TOPIC_FILLERS,
    TOPIC_PAIRS,
    TopicData,
    join_words,
    world_vocab,
)

__all__ = [
    "SHORTCUT_TAGS",
    "ShortcutTopicData",
    "flip_tags",
    "shortcut_splits",
    "shortcut_topics",
    "sibling_of",
]

#: One tag word per class: colours, neutral to every topic (none is a topic, shared or filler word).
SHORTCUT_TAGS: dict[str, str] = {
    "sport": "red",
    "fitness": "blue",
    "finance": "green",
    "economy": "grey",
    "cooking": "black",
    "nutrition": "white",
}


def sibling_of(cls: str) -> str:
    """The confusable sibling of a topic class (``"sport"`` ↔ ``"fitness"`` ...)."""
    for c1, _, c2, _, _ in TOPIC_PAIRS:
        if cls == c1:
            return c2
        if cls == c2:
            return c1
    raise InputError(f"`cls` must be one of {TOPIC_CLASSES}; got {cls!r}")


@dataclasses.dataclass
class ShortcutTopicData(TopicData):
    """:class:`~xattr_nb.worlds.text.TopicData` plus the tag: ``tag_pos`` ``[N]`` its word index,
    ``tag_class`` ``[N]`` the class (index into ``classes``) whose tag it is; ``channel_agrees`` is
    ``tag_class == labels``. ``tags`` maps each class to its tag word."""

    tag_pos: torch.Tensor
    tag_class: torch.Tensor
    tags: dict[str, str]
    _items: ClassVar[tuple[str, ...]] = (*TopicData._items, "tag_pos", "tag_class")


def shortcut_topics(
    n: int,
    *,
    agree: float = 1.0,
    n_words: int = 10,
    n_disc: tuple[int, int] = (1, 2),
    n_shared: tuple[int, int] = (1, 2),
    seed: int = 0,
) -> ShortcutTopicData:
    """``n`` texts of ``n_words`` words over the six topic classes (balanced labels, random word
    order): ``n_disc`` disc words of the class, ``n_shared`` words shared with its sibling, one tag
    word, fillers. The tag is the gold class's own with probability ``agree``, the sibling's
    otherwise (exactly ``round(agree · n)`` agreeing texts, chosen at random, so a split holds the
    correlation it promises and not just in expectation)."""
    n = check_n(n)
    rho = check_float(agree, "agree", low=0.0, high=1.0)
    n_words = check_int(n_words, "n_words", low=4, high=64)
    nd_range, ns_range = (
        check_int_range(n_disc, "n_disc", low=1, high=4),
        check_int_range(n_shared, "n_shared", low=1, high=4),
    )
    if nd_range[1] + ns_range[1] + 1 > n_words:
        raise InputError(f"`n_words`={n_words} is too small for n_disc={n_disc}, n_shared={n_shared} and the tag")
    classes = check_names(TOPIC_CLASSES, TOPIC_CLASSES, "classes")
    disc, shared = {}, {}
    for c1, d1, c2, d2, sh in TOPIC_PAIRS:
        disc[c1], disc[c2] = d1, d2
        shared[c1] = shared[c2] = sh
    rng = np.random.default_rng(check_seed(seed))
    labels = rng.permutation(np.arange(n) % len(classes))
    agrees = np.zeros(n, dtype=bool)
    agrees[rng.permutation(n)[: round(rho * n)]] = True
    words, roles, gold, tag_pos, tag_class = [], [], [], [], []
    for k, ag in zip(labels, agrees, strict=True):
        c = classes[k]
        nd = int(rng.integers(nd_range[0], nd_range[1] + 1))
        ns = int(rng.integers(ns_range[0], ns_range[1] + 1))
        tc = c if ag else sibling_of(c)
        items = [(str(w), "disc") for w in rng.choice(disc[c], size=nd, replace=False)]
        items += [(str(w), "shared") for w in rng.choice(shared[c], size=ns, replace=False)]
        items.append((SHORTCUT_TAGS[tc], "spurious"))
        n_fill = n_words - len(items)
        items += [(str(w), "filler") for w in rng.choice(TOPIC_FILLERS, size=n_fill, replace=False)]
        order = rng.permutation(len(items))
        w = [items[j][0] for j in order]
        r = [items[j][1] for j in order]
        words.append(w)
        roles.append(r)
        gold.append([j for j, role in enumerate(r) if role == "disc"])
        tag_pos.append(r.index("spurious"))
        tag_class.append(classes.index(tc))
    texts, chars = join_words(words, gold)
    return ShortcutTopicData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=world_vocab(*disc.values(), *(p[4] for p in TOPIC_PAIRS), TOPIC_FILLERS, SHORTCUT_TAGS.values()),
        labels=torch.as_tensor(labels, dtype=torch.long),
        classes=classes,
        roles=roles,
        discriminative={c: disc[c] for c in classes},
        shared={c: shared[c] for c in classes},
        channel_agrees=torch.as_tensor(agrees, dtype=torch.bool),
        tag_pos=torch.as_tensor(tag_pos, dtype=torch.long),
        tag_class=torch.as_tensor(tag_class, dtype=torch.long),
        tags=dict(SHORTCUT_TAGS),
    )


def flip_tags(data: ShortcutTopicData) -> ShortcutTopicData:
    """The same texts with every tag swapped for the tag of the gold class's sibling (everything
    else identical, word for word): the adversarial twin, where the tag never agrees."""
    if not isinstance(data, ShortcutTopicData):
        raise InputError(f"`data` must be a ShortcutTopicData (shortcut_topics); got {type(data).__name__}")
    words, tag_class = [], []
    for i, ws in enumerate(data.words):
        sib = sibling_of(data.classes[int(data.labels[i])])
        w = list(ws)
        w[int(data.tag_pos[i])] = data.tags[sib]
        words.append(w)
        tag_class.append(data.classes.index(sib))
    texts, chars = join_words(words, data.gold_words)
    return dataclasses.replace(
        data,
        texts=texts,
        words=words,
        gold_chars=chars,
        roles=[list(r) for r in data.roles],
        gold_words=[list(g) for g in data.gold_words],
        tag_class=torch.as_tensor(tag_class, dtype=torch.long),
        channel_agrees=torch.zeros(len(words), dtype=torch.bool),
    )


def shortcut_splits(
    seed: int, *, n_per_class: int = 8, n_test: int = 300, agree: float = 1.0
) -> tuple[ShortcutTopicData, dict[str, ShortcutTopicData]]:
    """The few-shot setting: ``n_per_class`` training texts per class whose tag agrees with the
    label ``agree`` of the time; a held-out ``"clean"`` test (same rate) and its ``"adversarial"``
    twin (:func:`flip_tags`: the same texts, every tag the sibling's). Data seeds ``seed`` and
    ``seed + 10000``, so no test text shares the training generator's draws."""
    seed = check_int(seed, "seed", low=0)
    n_per_class = check_int(n_per_class, "n_per_class", low=1)
    train = shortcut_topics(len(TOPIC_CLASSES) * n_per_class, agree=agree, seed=seed)
    clean = shortcut_topics(check_int(n_test, "n_test", low=1), agree=agree, seed=seed + 10_000)
    return train, {"clean": clean, "adversarial": flip_tags(clean)}
