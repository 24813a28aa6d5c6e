"""Grounded facts: content-grounded "generation" with the gold source clause of every highlighted fact.

Each instance has a few source documents whose sentences state two facts about a person in two
clauses ("alice , who grew up in paris , lives in rome ."), and an "output" sentence that fuses one
fact about the same person from each document with the relation paraphrased ("alice resides in rome
, ..."). For every highlighted fact of the output, the supporting source clause is known exactly:
the ground truth of LAQuer's localized attribution (paper 08).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = [
    "NAMES",
    "RELATIONS",
    "STOPWORDS",
    "SYNONYMS",
    "VALUES",
    "GroundedFactsData",
    "Instance",
    "Span",
    "grounded_facts",
]

#: A localized source span: (document, sentence, first word, end word), words counted in the sentence.
Span = tuple[int, int, int, int]


NAMES: tuple[str, ...] = (
    "alice", "bob", "carol", "david", "emma", "frank", "grace", "henry", "irene", "jack", "kate", "liam",
)  # fmt: skip
#: value type -> its values (one word each).
VALUES: dict[str, tuple[str, ...]] = {
    "city": ("paris", "rome", "london", "berlin", "madrid", "vienna", "lisbon", "prague"),
    "job": ("baker", "teacher", "nurse", "pilot", "chef", "lawyer", "farmer", "painter"),
    "instrument": ("piano", "violin", "guitar", "drums", "cello", "flute"),
    "food": ("pizza", "sushi", "pasta", "curry", "soup", "salad"),
    "language": ("french", "german", "spanish", "italian", "russian", "arabic"),
    "pet": ("dog", "cat", "parrot", "horse", "rabbit", "turtle"),
}
#: value type -> (relation as written in the sources, its paraphrase in the generated output).
RELATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "city": (("lives in", "resides in"), ("grew up in", "was raised in"), ("works in", "is employed in")),
    "job": (("works as a", "is employed as a"), ("trained as a", "qualified as a")),
    "instrument": (("plays the", "performs on the"), ("teaches the", "gives lessons on the")),
    "food": (("likes", "enjoys"), ("cooks", "prepares")),
    "language": (("speaks", "is fluent in"), ("studies", "is learning")),
    "pet": (("owns a", "has a"), ("feeds a", "looks after a")),
}
#: Function words and punctuation: never "content" (not counted by recall or the AIS proxy).
STOPWORDS: frozenset[str] = frozenset(
    {",", ".", "who", "is", "was", "a", "the", "in", "as", "on", "of", "to", "and", "up"}
)
#: Paraphrase content word -> the source relation's content word ("synonym-normalized" recall).
SYNONYMS: dict[str, str] = {
    "resides": "lives", "raised": "grew", "employed": "works", "qualified": "trained", "performs": "plays",
    "gives": "teaches", "lessons": "teaches", "enjoys": "likes", "prepares": "cooks", "fluent": "speaks",
    "learning": "studies", "has": "owns", "looks": "feeds", "after": "feeds",
}  # fmt: skip


@dataclasses.dataclass
class Instance:
    """One grounded-generation example.

    ``sources[d][s]``: the words of sentence ``s`` of document ``d`` (lower-case, punctuation as
    separate words), e.g. ``alice , who lives in paris , works as a baker .``. ``output``: the
    generated sentence's words, fusing one fact from each of three documents, relations
    paraphrased (``alice resides in paris , is employed as a nurse , and ...``). ``subject``: the
    output's subject. ``coarse``: the cited ``(doc, sent)`` pairs (the sentence-level attribution).
    ``highlights[k]``: word span ``[start, end)`` of fact ``k`` in ``output`` (relation + value,
    without the subject). ``gold[k]``: the source clause that states fact ``k``, a :data:`Span`.
    ``facts[k]``: ``(subject, source relation, value)``.
    """

    sources: list[list[list[str]]]
    output: list[str]
    subject: str
    coarse: list[tuple[int, int]]
    highlights: list[tuple[int, int]]
    gold: list[Span]
    facts: list[tuple[str, str, str]]


@dataclasses.dataclass
class GroundedFactsData(WorldData):
    """A list of :class:`Instance` (``instances``) and their output sentences as text (``texts``)."""

    instances: list[Instance]
    texts: list[str]
    _items: ClassVar[tuple[str, ...]] = ("instances", "texts")


def _sentence(
    name: str, rel1: str, val1: str, rel2: str, val2: str
) -> tuple[list[str], tuple[int, int], tuple[int, int]]:
    """``name , who rel1 val1 , rel2 val2 .`` and the word spans of its two clauses."""
    w = [name, ",", "who", *rel1.split(), val1, ","]
    c1 = (2, len(w) - 1)
    start = len(w)
    w += [*rel2.split(), val2, "."]
    return w, c1, (start, len(w) - 1)


def grounded_facts(
    n: int = 60,
    *,
    n_docs: int = 3,
    n_sents: int = 4,
    paraphrase: bool = True,
    p_shared_value: float = 0.5,
    seed: int = 0,
) -> GroundedFactsData:
    """``n`` seeded instances of content-grounded generation with gold clause alignments.

    Each instance has ``n_docs`` documents of ``n_sents`` sentences. Every sentence says two facts
    about one person in two clauses of the same value type: ``alice , who grew up in paris ,
    lives in rome .``. One person (the subject) has one sentence in every document, each about a
    different value type; the other sentences are about other people. The "generated" output
    fuses one clause from each of the subject's sentences, in document order, with the relation
    replaced by its paraphrase from :data:`RELATIONS` when ``paraphrase``:
    ``alice was raised in paris , is employed as a nurse , and enjoys pizza .``.

    Ground truth: for fact ``k`` the supporting clause (relation + value words) is
    ``gold[k]``; the coarse attribution is the subject's ``n_docs`` sentences. With probability
    ``p_shared_value`` the two clauses of a subject sentence share their value ("who teaches the
    piano , plays the piano"), so only the (paraphrased) relation tells the right clause apart:
    the case where word overlap cannot work and meaning must.
    """
    n = check_n(n)
    n_docs = check_int(n_docs, "n_docs", low=1, high=len(VALUES))
    n_sents = check_int(n_sents, "n_sents", low=1, high=len(NAMES) - 1)
    if not isinstance(paraphrase, bool):
        raise InputError(f"`paraphrase` must be a bool; got {type(paraphrase).__name__}")
    p_shared_value = check_float(p_shared_value, "p_shared_value", low=0.0, high=1.0)
    rng = np.random.default_rng(check_seed(seed))
    types = list(VALUES)

    def clause_pair(vtype: str, shared: bool) -> tuple[tuple[str, str], tuple[str, str], str, str]:
        r1, r2 = (RELATIONS[vtype][i] for i in rng.choice(len(RELATIONS[vtype]), size=2, replace=False))
        v1, v2 = (str(v) for v in rng.choice(VALUES[vtype], size=2, replace=False))
        return r1, r2, v1, v2 if not shared else v1

    instances = []
    for _ in range(n):
        people = [str(p) for p in rng.choice(NAMES, size=n_sents, replace=False)]
        subject = people[0]
        subj_types = [types[i] for i in rng.choice(len(types), size=n_docs, replace=False)]
        sources, coarse, gold, facts, pieces = [], [], [], [], []
        for d in range(n_docs):
            where = int(rng.integers(n_sents))
            others = iter(rng.permutation(people[1:]).tolist())
            doc = []
            for s in range(n_sents):
                if s == where:
                    r1, r2, v1, v2 = clause_pair(subj_types[d], bool(rng.uniform() < p_shared_value))
                    words, c1, c2 = _sentence(subject, r1[0], v1, r2[0], v2)
                    k = int(rng.integers(2))
                    (rel, para), val, cl = ((r1, v1, c1), (r2, v2, c2))[k]
                    coarse.append((d, s))
                    gold.append((d, s, *cl))
                    facts.append((subject, rel, val))
                    pieces.append([*(para if paraphrase else rel).split(), val])
                else:
                    vt = types[int(rng.integers(len(types)))]
                    r1, r2, v1, v2 = clause_pair(vt, bool(rng.uniform() < p_shared_value))
                    words = _sentence(next(others), r1[0], v1, r2[0], v2)[0]
                doc.append(words)
            sources.append(doc)
        output, highlights = [subject], []
        for k, piece in enumerate(pieces):
            if k > 0:
                output += [","] + (["and"] if k == len(pieces) - 1 else [])
            highlights.append((len(output), len(output) + len(piece)))
            output += piece
        output.append(".")
        instances.append(Instance(sources, output, subject, coarse, highlights, gold, facts))
    return GroundedFactsData(instances=instances, texts=[" ".join(i.output) for i in instances])
