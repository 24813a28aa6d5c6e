"""A ToxicChat-like request-classification world with a planted shortcut: the *topic* of a request.

Each text is a user request such as "how can i steal the car after the match at the stadium".
Ground truth, word by word:

- **label** (``labels``, 1 = harmful): set by one verb only, drawn from :data:`HARM_VERBS` (harmful)
  or :data:`BENIGN_VERBS` (harmless). A manner adverb of the same kind
  ("secretly" vs "carefully") comes before it; the two are the gold evidence (``gold_words``).
- **topic** (``topic``, 0 = sports, 1 = cooking): the context phrase holds two words of one topic
  lexicon (:data:`TOPIC_WORDS`). The topic says nothing about harm, but in the training and
  validation splits it *agrees* with the label (harmful ↔ sports, harmless ↔ cooking) with
  probability ``corr`` (0.95), and in the shifted test with ``test_corr`` (0.05). A classifier that
  reads the topic does well in distribution and collapses on the shifted test.
- **twins** (``twins``): every text again with each topic word swapped for the word in the same
  slot of the other topic ("match" ↔ "dinner", "stadium" ↔ "kitchen"), everything else identical,
  so the label is unchanged and only the shortcut moves (the topic-swap reliance metric).
- the objects of the request ("the car", "my friend"), the openers and the frames are neutral.

:func:`generic_corpus` writes the "pre-training" text for a sparse autoencoder: templated
sentences where task verbs, topic words and distractor topics (music, travel) occur
independently of each other. :func:`spurious_text` makes all four splits at once.

Every word is lower case, words are separated by single spaces, and every lexicon word is a single
MiniLM WordPiece token (so a token-level judge can look it up). Seeded and deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.worlds.base import check_n, check_seed
from xattr_nb.worlds.text import TextData, join_words, world_vocab

__all__ = [
    "BENIGN_VERBS",
    "GENERIC_TOPICS",
    "HARM_VERBS",
    "TOPICS",
    "TOPIC_FRAMES",
    "TOPIC_WORDS",
    "SpuriousTextData",
    "SpuriousTextWorld",
    "generic_corpus",
    "lexicons",
    "requests",
    "spurious_text",
    "swap_topic",
]

#: Harmful verbs, by the kind of object they take ("thing" or "person").
HARM_VERBS: dict[str, tuple[str, ...]] = {
    "thing": ("hack", "steal", "bomb", "sabotage", "destroy", "wreck"),
    "person": ("stab", "kidnap", "rob", "blackmail", "attack", "threaten", "torture", "poison", "murder", "drown"),
}
#: Harmless verbs, by the kind of object they take.
BENIGN_VERBS: dict[str, tuple[str, ...]] = {
    "thing": ("fix", "clean", "paint", "repair", "build", "wash", "decorate", "sell"),
    "person": ("help", "teach", "visit", "thank", "call", "meet", "hug", "invite"),
}
#: Manner adverbs before the verb: a second, weaker cue of the label.
HARM_MANNER: tuple[str, ...] = ("secretly", "illegally", "violently", "brutally")
BENIGN_MANNER: tuple[str, ...] = ("safely", "properly", "carefully", "gently")
OBJECTS: dict[str, tuple[str, ...]] = {
    "thing": ("the car", "the computer", "the house", "the bike", "the door", "the phone", "the truck", "the laptop"),
    "person": ("my friend", "my boss", "my neighbour", "my brother", "the teacher", "my cousin", "my sister"),
}
OPENERS: tuple[str, ...] = (
    "how can i", "how do i", "what is the best way to", "tell me how to", "i want to",
    "explain how to", "is it easy to", "can you help me",
)  # fmt: skip

TOPICS: tuple[str, str] = ("sports", "cooking")
#: Topic words by slot; the i-th word of a slot in one topic is the twin of the i-th in the other.
TOPIC_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "sports": {
        "event": ("match", "tournament", "race", "game"),
        "place": ("stadium", "gym", "arena", "field"),
        "person": ("coach", "referee", "goalkeeper", "player"),
        "item": ("football", "helmet", "trophy", "whistle"),
    },
    "cooking": {
        "event": ("dinner", "lunch", "barbecue", "picnic"),
        "place": ("kitchen", "restaurant", "bakery", "cafe"),
        "person": ("chef", "waiter", "baker", "cook"),
        "item": ("oven", "pasta", "soup", "pizza"),
    },
}
#: Context phrases with two topic slots (``{event}``, ``{place}``, ``{person}``, ``{item}``).
TOPIC_FRAMES: tuple[str, ...] = (
    "after the {event} at the {place}",
    "before the {event} with the {person}",
    "near the {place} where the {person} works",
    "while the {person} is busy with the {item}",
    "during the {event} , next to the {item}",
    "at the {place} before the {event}",
)
#: Distractor topics of the generic corpus: neither task nor shortcut.
GENERIC_TOPICS: dict[str, tuple[str, ...]] = {
    "music": ("concert", "guitar", "song", "band"),
    "travel": ("airport", "train", "hotel", "beach"),
}
GENERIC_FRAMES: tuple[str, ...] = (
    "the news said the {a} and the {b} were popular {time}",
    "we talked about the {a} and the {b} {time}",
    "people often {verb} {obj} on the weekend",
    "the story was about someone who wanted to {verb} {obj}",
    "my friend will {verb} {obj} after the {a}",
    "there is a {a} near the {b} {time}",
)
GENERIC_TIMES: tuple[str, ...] = ("today", "tonight", "tomorrow", "this week", "this morning", "last year")


def lexicons() -> dict[str, tuple[str, ...]]:
    """The world's word lists: ``harm``, ``benign`` (the task's words), ``sports``, ``cooking`` (the
    shortcut's), ``music``, ``travel`` (distractors of the generic corpus)."""
    out = {
        "harm": (*(w for ws in HARM_VERBS.values() for w in ws), *HARM_MANNER),
        "benign": (*(w for ws in BENIGN_VERBS.values() for w in ws), *BENIGN_MANNER),
    }
    for t in TOPICS:
        out[t] = tuple(w for ws in TOPIC_WORDS[t].values() for w in ws)
    out.update(GENERIC_TOPICS)
    return out


_TWIN: dict[str, str] = {
    a: b
    for slot in TOPIC_WORDS["sports"]
    for a, b in zip(TOPIC_WORDS["sports"][slot], TOPIC_WORDS["cooking"][slot], strict=True)
}
_TWIN.update({b: a for a, b in list(_TWIN.items())})


def swap_topic(words: list[str], roles: list[str]) -> list[str]:
    """``words`` with every word whose role is ``"topic"`` replaced by its twin in the other topic."""
    for arg, name in ((words, "words"), (roles, "roles")):
        if not isinstance(arg, (list, tuple)) or not all(isinstance(w, str) for w in arg):
            raise InputError(f"`{name}` must be a list of strings; got {type(arg).__name__}")
    if len(words) != len(roles):
        raise InputError(f"`words` and `roles` must have the same length; got {len(words)} and {len(roles)}")
    out = []
    for w, r in zip(words, roles, strict=True):
        if r == "topic":
            if w not in _TWIN:
                raise InputError(f"`words` has {w!r} marked as a topic word, but it is not in TOPIC_WORDS")
            w = _TWIN[w]
        out.append(w)
    return out


@dataclasses.dataclass
class SpuriousTextData(TextData):
    """Requests of the spurious-topic world (see the module docstring).

    ``labels`` ``[N]`` long (1 = harmful); ``topic`` ``[N]`` long into ``topics`` (0 sports,
    1 cooking); ``agrees`` ``[N]`` bool (the topic is the label's usual one: harmful ↔ sports);
    ``roles[i][j]`` is ``"harm"``, ``"benign"``, ``"topic"``, ``"object"`` or ``"filler"``;
    ``gold_words`` = the adverb's and the verb's positions; ``twins`` the topic-swapped texts (same words elsewhere).
    """

    labels: torch.Tensor
    topic: torch.Tensor
    agrees: torch.Tensor
    roles: list[list[str]]
    twins: list[str]
    topics: tuple[str, ...] = TOPICS
    _items: ClassVar[tuple[str, ...]] = (*TextData._items, "labels", "topic", "agrees", "roles", "twins")


@dataclasses.dataclass
class SpuriousTextWorld:
    """The four parts of the world: ``train`` and ``valid`` (topic agrees with the label at rate
    ``corr``), the shifted ``test`` (rate ``test_corr``), the ``generic`` pre-training sentences
    (a list of texts, with ``generic_topic`` naming each one's topic or ``"none"``), and ``lexicons``."""

    train: SpuriousTextData
    valid: SpuriousTextData
    test: SpuriousTextData
    generic: list[str]
    generic_topic: list[str]
    lexicons: dict[str, tuple[str, ...]]
    corr: float
    test_corr: float


def _words(text: str, role: str) -> list[tuple[str, str]]:
    return [(w, role) for w in text.split()]


def requests(n: int, *, corr: float = 0.95, seed: int = 0) -> SpuriousTextData:
    """``n`` requests, half harmful (balanced, shuffled), whose topic agrees with the label with
    probability ``corr`` (independently per request)."""
    n = check_n(n)
    corr = check_float(corr, "corr", low=0.0, high=1.0)
    rng = np.random.default_rng(check_seed(seed))
    labels = rng.permutation(np.arange(n) % 2)
    words, roles, gold, topic, agrees, twins = [], [], [], [], [], []
    for y in labels:
        kind = "thing" if rng.uniform() < 0.5 else "person"
        verbs = HARM_VERBS[kind] if y == 1 else BENIGN_VERBS[kind]
        agree = bool(rng.uniform() < corr)
        t = (0 if y == 1 else 1) if agree else (1 if y == 1 else 0)
        items = _words(str(rng.choice(OPENERS)), "filler")
        gold.append([len(items), len(items) + 1])
        cue = "harm" if y == 1 else "benign"
        items.append((str(rng.choice(HARM_MANNER if y == 1 else BENIGN_MANNER)), cue))
        items.append((str(rng.choice(verbs)), cue))
        items += _words(str(rng.choice(OBJECTS[kind])), "object")
        frame = str(rng.choice(TOPIC_FRAMES))
        slots = TOPIC_WORDS[TOPICS[t]]
        for piece in frame.split():
            if piece.startswith("{"):
                items.append((str(rng.choice(slots[piece[1:-1]])), "topic"))
            else:
                items.append((piece, "filler"))
        w = [a for a, _ in items]
        r = [b for _, b in items]
        words.append(w)
        roles.append(r)
        topic.append(t)
        agrees.append(agree)
        twins.append(" ".join(swap_topic(w, r)))
    texts, chars = join_words(words, gold)
    lex = lexicons()
    return SpuriousTextData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=world_vocab(OPENERS, *OBJECTS.values(), *lex.values(), TOPIC_FRAMES),
        labels=torch.as_tensor(labels, dtype=torch.long),
        topic=torch.as_tensor(topic, dtype=torch.long),
        agrees=torch.as_tensor(agrees, dtype=torch.bool),
        roles=roles,
        twins=twins,
    )


def generic_corpus(n: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` "pre-training" sentences and each one's topic (``"sports"``, ``"cooking"``, ``"music"``,
    ``"travel"``, or ``"none"`` for a sentence with a task verb and no topic word).

    Topic words, task verbs (harmful and harmless alike) and objects are drawn independently, so
    nothing here ties harm to a topic.
    """
    n = check_n(n)
    rng = np.random.default_rng(check_seed(seed))
    pools = {t: [w for ws in TOPIC_WORDS[t].values() for w in ws] for t in TOPICS}
    pools.update({t: list(ws) for t, ws in GENERIC_TOPICS.items()})
    names = list(pools)
    texts, topics = [], []
    for _ in range(n):
        frame = str(rng.choice(GENERIC_FRAMES))
        kind = "thing" if rng.uniform() < 0.5 else "person"
        harm = rng.uniform() < 0.5
        verbs = (HARM_VERBS if harm else BENIGN_VERBS)[kind]
        t = str(rng.choice(names))
        a, b = rng.choice(pools[t], size=2, replace=False)
        fill = {
            "a": str(a),
            "b": str(b),
            "time": str(rng.choice(GENERIC_TIMES)),
            "verb": str(rng.choice(verbs)),
            "manner": str(rng.choice(HARM_MANNER if harm else BENIGN_MANNER)),
            "obj": str(rng.choice(OBJECTS[kind])),
        }
        if rng.uniform() < 0.5:
            fill["verb"] = f"{fill['manner']} {fill['verb']}"
        texts.append(frame.format(**fill))
        topics.append(t if "{a}" in frame else "none")
    return texts, topics


def spurious_text(
    n_train: int = 1000,
    n_valid: int = 200,
    n_test: int = 300,
    n_generic: int = 600,
    *,
    corr: float = 0.95,
    test_corr: float = 0.05,
    seed: int = 0,
) -> SpuriousTextWorld:
    """All parts of the world, each from its own seed stream derived from ``seed``."""
    for name, v in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test), ("n_generic", n_generic)):
        check_int(v, name, low=1)
    seed = check_seed(seed)
    ss = np.random.SeedSequence(seed).generate_state(4)
    generic, generic_topic = generic_corpus(n_generic, seed=int(ss[3]))
    return SpuriousTextWorld(
        train=requests(n_train, corr=corr, seed=int(ss[0])),
        valid=requests(n_valid, corr=corr, seed=int(ss[1])),
        test=requests(n_test, corr=test_corr, seed=int(ss[2])),
        generic=generic,
        generic_topic=generic_topic,
        lexicons=lexicons(),
        corr=float(corr),
        test_corr=float(test_corr),
    )
