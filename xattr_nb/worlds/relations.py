"""A few-shot relation-extraction corpus with a domain shift (BayesPrompt, paper 26).

Each example is one sentence that mentions a subject and an object entity, and the relation that
holds between them. Ground truth, per example: ``labels`` (index into :data:`RELATIONS`), the
entity strings ``subjects`` / ``objects``, the ``templates`` id that wrote the sentence and its
``domains`` (0 = source, 1 = target).

- Relations (:data:`RELATIONS`): six typed relations plus ``no_relation`` (two entities mentioned
  together, nothing said between them).
- Entities: invented names from syllable grammars (people, cities, countries, companies, books),
  so the encoder's memorised facts cannot help: only the wording tells the relation.
- The **domain shift**: every relation has five *source* templates (newswire wording) and five
  *target* templates (chatty, biographical wording) that share no template; the lexicon overlaps
  across relations on purpose ("of", "based in", "from", "home of"). The few-shot labelled
  examples come from the source domain; the unlabelled pool and the test set from the target
  domain (the setting where a prompt "mis-locates" the target domain).
- Entity names of the target domain are drawn from a second syllable set, so the names shift too.

:func:`relation_world` makes the splits at once; :meth:`RelationWorld.few_shot` draws a K-shot
labelled set (K per class, seeded) from the source pool. Seeded and deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_int
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = [
    "ENTITY_TYPES",
    "LABEL_WORDS",
    "RELATIONS",
    "RELATION_TYPES",
    "TEMPLATES",
    "RelationData",
    "RelationWorld",
    "entity_name",
    "relation_world",
]

RELATIONS: tuple[str, ...] = (
    "born_in", "works_for", "founded_by", "located_in", "author_of", "capital_of", "no_relation",
)  # fmt: skip
#: (subject type, object type) of each relation; ``None`` = any type (``no_relation``).
RELATION_TYPES: dict[str, tuple[str, str] | None] = {
    "born_in": ("person", "city"),
    "works_for": ("person", "company"),
    "founded_by": ("company", "person"),
    "located_in": ("company", "city"),
    "author_of": ("person", "book"),
    "capital_of": ("city", "country"),
    "no_relation": None,
}
ENTITY_TYPES: tuple[str, ...] = ("person", "city", "country", "company", "book")
#: Words that name each relation (KnowPrompt initialises the answer words from them).
LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "born_in": ("born", "birthplace"),
    "works_for": ("employee", "works"),
    "founded_by": ("founder", "founded"),
    "located_in": ("located", "headquarters"),
    "author_of": ("author", "wrote"),
    "capital_of": ("capital",),
    "no_relation": ("none", "unrelated"),
}
#: Words that name each entity type (KnowPrompt initialises the virtual type tokens from them).
TYPE_WORDS: dict[str, str] = {"person": "person", "city": "city", "country": "country", "company": "company",
                              "book": "book"}  # fmt: skip

#: Templates by relation and domain; ``{s}`` is the subject, ``{o}`` the object.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "born_in": {
        "source": (
            "{s} was born in {o} , officials said .",
            "{s} , a native of {o} , spoke on monday .",
            "born in {o} , {s} later moved abroad .",
            "records show {s} was born in {o} in 1961 .",
            "{s} , born in the city of {o} , said on friday .",
        ),
        "target": (
            "honestly {s} grew up in {o} from day one lol",
            "{o} is the hometown of {s} , you know",
            "did you know {s} comes from {o} originally ?",
            "my friend {s} first saw the light of day in {o}",
            "so {s} , yeah , from {o} , birth and all",
        ),
    },
    "works_for": {
        "source": (
            "{s} , an employee of {o} , declined to comment .",
            "{s} works for {o} , the statement said .",
            "{o} spokesman {s} said on tuesday .",
            "{s} , a senior analyst at {o} , said sales rose .",
            "{s} joined {o} as an engineer in 2004 .",
        ),
        "target": (
            "my buddy {s} has a job over at {o} now",
            "so {s} gets paid by {o} , pretty good gig",
            "{s} clocks in at {o} every morning , ugh",
            "lol {s} is on the staff of {o} these days",
            "guess who {o} hired , yeah {s}",
        ),
    },
    "founded_by": {
        "source": (
            "{o} founded {s} in 1998 , the company said .",
            "{s} , founded by {o} , reported a loss .",
            "{s} was started by {o} in a garage .",
            "{o} , the founder of {s} , stepped down .",
            "{s} , which {o} set up in 2001 , said profits rose .",
        ),
        "target": (
            "wild that {o} is the one who built {s} from scratch",
            "{s} only exists because {o} dreamed it up",
            "you know {s} ? {o} started it , no joke",
            "{o} kicked off {s} out of a tiny flat",
            "fun fact : {s} was the baby of {o} from the start",
        ),
    },
    "located_in": {
        "source": (
            "{s} , based in {o} , said on wednesday .",
            "{s} is headquartered in {o} , a filing showed .",
            "{o} - based {s} reported higher sales .",
            "{s} has its head office in {o} .",
            "{s} , of {o} , announced a merger .",
        ),
        "target": (
            "the {s} offices are over in {o} , right by the river",
            "{o} is home of {s} , big shiny building",
            "if you visit {o} you will see {s} everywhere , its base is there",
            "{s} runs everything out of {o} apparently",
            "so {s} is from {o} , they never moved",
        ),
    },
    "author_of": {
        "source": (
            "{s} , the author of {o} , died on sunday .",
            "{s} wrote {o} in 1987 , the publisher said .",
            "{o} , written by {s} , topped the list .",
            "{s} , who penned {o} , will speak at the fair .",
            "the novel {o} by {s} sold well .",
        ),
        "target": (
            "just finished {o} , {s} really nailed that book",
            "{s} spent years typing up {o} , so good",
            "{o} ? yeah that is a {s} book , read it",
            "{s} is the brain behind {o} , my favourite read",
            "ok so {s} came up with every page of {o}",
        ),
    },
    "capital_of": {
        "source": (
            "{s} , the capital of {o} , was quiet on monday .",
            "officials in {s} , capital of {o} , said .",
            "{o} moved its capital to {s} in 1950 .",
            "{s} is the capital city of {o} , a report said .",
            "the government of {o} sits in {s} .",
        ),
        "target": (
            "{s} is where the whole {o} government hangs out",
            "the parliament of {o} ? that is in {s}",
            "{s} runs {o} , it is the seat of power there",
            "if you are in {o} the main city is {s} , the seat of power",
            "so {s} is basically the heart of {o} politically",
        ),
    },
    "no_relation": {
        "source": (
            "{s} and {o} were both mentioned in the report .",
            "the list named {s} and , separately , {o} .",
            "{s} said nothing about {o} on thursday .",
            "reporters asked about {s} ; {o} was not discussed .",
            "{s} appeared in the same index as {o} .",
        ),
        "target": (
            "random thought : {s} . also {o} , unrelated",
            "saw {s} on tv and then an ad about {o}",
            "{s} and {o} , two words on my quiz today",
            "no idea how {s} and {o} connect , probably they don't",
            "{o} trended right after {s} , total coincidence",
        ),
    },
}

_SYLLABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # domain -> (onsets, codas)
    "source": (("kor", "val", "bren", "dax", "mil", "tor", "sev", "lun", "gar", "pel"),
               ("an", "is", "ek", "or", "um", "ane", "ix", "ot")),
    "target": (("zin", "quo", "fab", "yel", "hup", "wra", "nim", "jor", "ske", "obb"),
               ("ly", "oo", "ez", "ap", "ib", "ust", "aya", "en")),
}  # fmt: skip
_TYPE_SUFFIX: dict[str, tuple[str, ...]] = {
    "city": ("burg", "ville", "ford", "mouth"),
    "country": ("ia", "land", "istan", "ora"),
    "company": ("corp", "labs", "systems", "works"),
    "book": ("chronicles", "tales", "garden", "letters"),
}


def entity_name(kind: str, domain: str, rng: np.random.Generator) -> str:
    """One invented entity name of type ``kind`` in ``domain``'s syllable set (lower case)."""
    if kind not in ENTITY_TYPES:
        raise InputError(f"`kind` must be one of {list(ENTITY_TYPES)}; got {kind!r}")
    if domain not in _SYLLABLES:
        raise InputError(f"`domain` must be 'source' or 'target'; got {domain!r}")
    onsets, codas = _SYLLABLES[domain]

    def word() -> str:
        return str(rng.choice(onsets)) + str(rng.choice(codas))

    if kind == "person":
        return f"{word()} {word()}"
    suffix = str(rng.choice(_TYPE_SUFFIX[kind]))
    if kind == "book":
        return f"the {word()} {suffix}"
    return f"{word()}{suffix}" if kind in ("city", "country") else f"{word()} {suffix}"


@dataclasses.dataclass
class RelationData(WorldData):
    """Sentences with their relation (``labels`` indexes :data:`RELATIONS`) and everything that wrote them."""

    _items: ClassVar[tuple[str, ...]] = ("texts", "labels", "subjects", "objects", "templates", "domains")
    texts: list[str]
    labels: torch.Tensor  # [N] long
    subjects: list[str]
    objects: list[str]
    templates: torch.Tensor  # [N] long, template index within its relation and domain
    domains: torch.Tensor  # [N] long, 0 = source, 1 = target
    relations: tuple[str, ...] = RELATIONS


@dataclasses.dataclass
class RelationWorld:
    """All splits: ``pool`` (source, labelled: K-shot sets are drawn from it), ``unlabeled`` (target,
    the label-free "full training split" BayesPrompt fits its mixture to; labels kept as ground truth
    only), ``test`` (target) and ``source_test`` (source, to measure the shift)."""

    pool: RelationData
    unlabeled: RelationData
    test: RelationData
    source_test: RelationData
    seed: int

    def few_shot(self, k: int, seed: int = 0) -> RelationData:
        """``k`` examples per relation from ``pool``, drawn without replacement (seeded; classes in order)."""
        k = check_int(k, "k", low=1)
        seed = check_seed(seed)
        rng = np.random.default_rng([self.seed, seed, 26])
        labels = self.pool.labels.numpy()
        idx = []
        for c in range(len(RELATIONS)):
            members = np.flatnonzero(labels == c)
            if len(members) < k:
                raise InputError(f"`k` ({k}) exceeds the {len(members)} pool examples of {RELATIONS[c]!r}")
            idx.extend(sorted(rng.choice(members, size=k, replace=False).tolist()))
        return self.pool.subset(torch.tensor(idx))


def _sample(n: int, domain: str, rng: np.random.Generator) -> RelationData:
    texts, labels, subs, objs, tpls = [], [], [], [], []
    for i in range(n):
        c = i % len(RELATIONS)  # balanced classes, then shuffled
        rel = RELATIONS[c]
        types = RELATION_TYPES[rel]
        if types is None:
            a, b = rng.choice(len(ENTITY_TYPES), size=2, replace=True)
            types = (ENTITY_TYPES[a], ENTITY_TYPES[b])
        s = entity_name(types[0], domain, rng)
        o = entity_name(types[1], domain, rng)
        while o == s:
            o = entity_name(types[1], domain, rng)
        t = int(rng.integers(len(TEMPLATES[rel][domain])))
        texts.append(TEMPLATES[rel][domain][t].format(s=s, o=o))
        labels.append(c)
        subs.append(s)
        objs.append(o)
        tpls.append(t)
    order = rng.permutation(n)
    dom = 0 if domain == "source" else 1
    return RelationData(
        texts=[texts[j] for j in order],
        labels=torch.tensor(labels, dtype=torch.long)[order],
        subjects=[subs[j] for j in order],
        objects=[objs[j] for j in order],
        templates=torch.tensor(tpls, dtype=torch.long)[order],
        domains=torch.full((n,), dom, dtype=torch.long),
    )


def relation_world(
    *, n_pool: int = 700, n_unlabeled: int = 2000, n_test: int = 210, n_source_test: int = 0, seed: int = 0
) -> RelationWorld:
    """The four splits of the relation world (see the module docstring); classes balanced in each.

    ``n_source_test = 0`` leaves the source test empty of examples (a list of length 0 is allowed there
    only); every other split needs at least one example per relation.
    """
    n_r = len(RELATIONS)
    for name, value in (("n_pool", n_pool), ("n_unlabeled", n_unlabeled), ("n_test", n_test)):
        check_n(value, name)
        if value < n_r:
            raise InputError(f"`{name}` must be at least {n_r} (one example per relation); got {value}")
    n_source_test = check_int(n_source_test, "n_source_test", low=0)
    seed = check_seed(seed)
    rngs = [np.random.default_rng([seed, part, 26]) for part in range(4)]
    return RelationWorld(
        pool=_sample(n_pool, "source", rngs[0]),
        unlabeled=_sample(n_unlabeled, "target", rngs[1]),
        test=_sample(n_test, "target", rngs[2]),
        source_test=_sample(n_source_test, "source", rngs[3]),
        seed=seed,
    )
