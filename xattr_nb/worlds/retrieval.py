"""A synthetic retrieval benchmark with known relevant documents: paraphrased facts, hard negatives.

A *fact* is (agent, verb, patient, place): "Alice phoned Bob at the railway station". It is
rendered by one of 8 surface templates (active, passive, place-fronted, cleft, ...) with one of
each slot's synonyms, so two renderings of one fact share meaning but not wording. For every fact
a **query** is one rendering (template ``a``), its **positive** another (template ``b ≠ a``), and
two **hard negatives** are renderings of nearby *different* facts (template ``≠ a``, drawn like
the positive, so neither template nor wording tells them apart):

- ``"slot"``: the verb or the place changed (to another verb group or place);
- ``"role_swap"``: agent and patient exchanged, the same words in other roles (a bag of words
  cannot see it).

Ground truth: a document is relevant to a query exactly when it renders the same fact
(``doc_fact == query_fact``); facts are numbered by their tuple, so a duplicate is caught.

Splits (nothing of the evaluation split is seen in training):

- **train**: ``n_train_facts`` queries; a document **pool** with, per training fact, the
  labelled positive, ``n_paraphrases - 1`` further *unlabelled* paraphrases of the same fact
  (true duplicates, the false-negative trap of mined negatives), and its two hard negatives.
  Hard negatives are not labelled for training: a miner must find them in the pool.
- **eval**: ``n_eval_facts`` held-out queries and a corpus of their positives and hard negatives
  (3 documents per fact). Evaluation facts use agent/patient name pairs (in either order) that no
  training text uses, so no evaluation fact, swap or document string occurs in training.

Names from :data:`NAMES` (60), verbs from :data:`VERBS` (22 groups of synonyms, past and
participle), places from :data:`PLACES` (20, two names each), templates :data:`TEMPLATES` (8).
Seeded and deterministic per seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_int
from xattr_nb.worlds.base import check_seed

__all__ = ["NAMES", "PLACES", "TEMPLATES", "VERBS", "RetrievalWorld", "make_retrieval_world", "render"]

NAMES: tuple[str, ...] = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Kate", "Liam",
    "Maria", "Nathan", "Olivia", "Peter", "Quinn", "Rachel", "Samuel", "Tina", "Victor", "Wendy", "Xavier",
    "Yara", "Zoe", "Adam", "Bella", "Chris", "Diana", "Ethan", "Fiona", "George", "Hannah", "Isaac", "Julia",
    "Kevin", "Laura", "Martin", "Nina", "Oscar", "Paula", "Robert", "Sarah", "Thomas", "Ursula", "Vincent",
    "Walter", "Yvonne", "Arthur", "Brenda", "Carlos", "Donna", "Edward", "Felix", "Gloria", "Harold", "Ingrid",
    "Jonas", "Karen", "Leon",
)  # fmt: skip

#: Verb groups: each a tuple of synonyms (past tense, past participle).
VERBS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("called", "called"), ("phoned", "phoned"), ("rang", "rung")),
    (("helped", "helped"), ("assisted", "assisted"), ("aided", "aided")),
    (("met", "met"), ("encountered", "encountered")),
    (("hired", "hired"), ("employed", "employed")),
    (("warned", "warned"), ("alerted", "alerted")),
    (("praised", "praised"), ("complimented", "complimented")),
    (("questioned", "questioned"), ("interviewed", "interviewed")),
    (("paid", "paid"), ("compensated", "compensated")),
    (("taught", "taught"), ("tutored", "tutored")),
    (("followed", "followed"), ("tracked", "tracked")),
    (("hugged", "hugged"), ("embraced", "embraced")),
    (("greeted", "greeted"), ("welcomed", "welcomed")),
    (("pushed", "pushed"), ("shoved", "shoved")),
    (("rescued", "rescued"), ("saved", "saved")),
    (("blamed", "blamed"), ("accused", "accused")),
    (("chased", "chased"), ("pursued", "pursued")),
    (("fired", "fired"), ("dismissed", "dismissed")),
    (("trained", "trained"), ("coached", "coached")),
    (("hit", "hit"), ("struck", "struck")),
    (("watched", "watched"), ("observed", "observed")),
    (("defended", "defended"), ("protected", "protected")),
    (("ignored", "ignored"), ("snubbed", "snubbed")),
)

#: Places: each a tuple of synonyms.
PLACES: tuple[tuple[str, ...], ...] = (
    ("station", "railway station"), ("library", "public library"), ("park", "city park"),
    ("airport", "airfield"), ("market", "marketplace"), ("hospital", "clinic"), ("beach", "seaside"),
    ("office", "workplace"), ("school", "schoolhouse"), ("museum", "gallery"), ("harbour", "port"),
    ("cinema", "movie theater"), ("cafe", "coffee shop"), ("stadium", "arena"), ("church", "chapel"),
    ("hotel", "inn"), ("bakery", "bread shop"), ("garage", "workshop"), ("bank", "bank branch"),
    ("theatre", "playhouse"),
)  # fmt: skip

#: Surface templates over {A} agent, {P} patient, {v} past, {pp} participle, {L} place.
TEMPLATES: tuple[str, ...] = (
    "{A} {v} {P} at the {L}.",
    "{P} was {pp} by {A} at the {L}.",
    "At the {L}, {A} {v} {P}.",
    "At the {L}, {P} was {pp} by {A}.",
    "It was {A} who {v} {P} at the {L}.",
    "It was {P} who was {pp} by {A} at the {L}.",
    "At the {L} it was {A} who {v} {P}.",
    "{P} got {pp} by {A} at the {L}.",
)

Fact = tuple[int, int, int, int]  # (agent, verb group, patient, place)


def render(fact: Fact, template: int, verb_syn: int, place_syn: int) -> str:
    """One surface form of ``fact`` (indices into NAMES, VERBS, NAMES, PLACES)."""
    if isinstance(fact, torch.Tensor):
        fact = fact.tolist()
    if not isinstance(fact, (tuple, list, np.ndarray)) or len(fact) != 4:
        raise InputError(f"`fact` must be 4 indices (agent, verb group, patient, place); got {fact!r}")
    highs = (len(NAMES), len(VERBS), len(NAMES), len(PLACES))
    a, v, p, l = (
        check_int(x, f"fact[{i}]", low=0, high=h - 1) for i, (x, h) in enumerate(zip(fact, highs, strict=True))
    )
    template = check_int(template, "template", low=0, high=len(TEMPLATES) - 1)
    verb_syn, place_syn = check_int(verb_syn, "verb_syn", low=0), check_int(place_syn, "place_syn", low=0)
    group, places = VERBS[v], PLACES[l]
    past, pp = group[verb_syn % len(group)]
    return TEMPLATES[template].format(A=NAMES[a], P=NAMES[p], v=past, pp=pp, L=places[place_syn % len(places)])


@dataclasses.dataclass
class RetrievalWorld:
    """The benchmark's tables (see the module docstring). ``*_fact`` are fact ids into ``facts``;
    ``*_kind`` say what each document is (``"positive"``, ``"paraphrase"``, ``"slot"``, ``"role_swap"``)."""

    facts: np.ndarray  # [F, 4] (agent, verb group, patient, place)
    train_queries: list[str]
    train_query_fact: torch.Tensor  # [Qt]
    train_positive: torch.Tensor  # [Qt] index of the labelled positive in train_docs
    train_docs: list[str]
    train_doc_fact: torch.Tensor  # [Dt]
    train_doc_kind: list[str]
    eval_queries: list[str]
    eval_query_fact: torch.Tensor  # [Qe]
    eval_docs: list[str]
    eval_doc_fact: torch.Tensor  # [De]
    eval_doc_kind: list[str]
    eval_positive: torch.Tensor  # [Qe]
    eval_hard: torch.Tensor  # [Qe, 2] the query's own (slot, role_swap) negatives in eval_docs
    seed: int = 0

    @property
    def eval_relevant(self) -> torch.Tensor:
        """``[Qe, De]`` bool: document renders the query's fact."""
        return self.eval_doc_fact[None, :] == self.eval_query_fact[:, None]

    @property
    def train_relevant(self) -> torch.Tensor:
        """``[Qt, Dt]`` bool: pool document renders the query's fact (the labelled positive and its duplicates)."""
        return self.train_doc_fact[None, :] == self.train_query_fact[:, None]

    def __repr__(self) -> str:
        return (
            f"RetrievalWorld(train: {len(self.train_queries)} queries, {len(self.train_docs)} pool docs; "
            f"eval: {len(self.eval_queries)} queries, {len(self.eval_docs)} docs; seed={self.seed})"
        )


def make_retrieval_world(
    n_train_facts: int = 400, n_eval_facts: int = 200, n_paraphrases: int = 2, seed: int = 0
) -> RetrievalWorld:
    """Build the benchmark (see the module docstring). ``n_paraphrases`` ≥ 1 renderings of each training
    fact go into the pool (the first is the labelled positive)."""
    n_train_facts = check_int(n_train_facts, "n_train_facts", low=1)
    n_eval_facts = check_int(n_eval_facts, "n_eval_facts", low=1)
    n_paraphrases = check_int(n_paraphrases, "n_paraphrases", low=1, high=len(TEMPLATES) - 1)
    seed = check_seed(seed)
    n_names = len(NAMES)
    pairs = [(i, j) for i in range(n_names) for j in range(i + 1, n_names)]
    if n_train_facts + n_eval_facts > len(pairs):
        raise InputError(
            f"`n_train_facts` + `n_eval_facts` must be at most {len(pairs)} (one name pair each); "
            f"got {n_train_facts} + {n_eval_facts}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    fact_ids: dict[Fact, int] = {}

    def fid(f: Fact) -> int:
        return fact_ids.setdefault(f, len(fact_ids))

    def draw_fact(pair: tuple[int, int]) -> Fact:
        a, p = pair if rng.random() < 0.5 else pair[::-1]
        return (a, int(rng.integers(len(VERBS))), p, int(rng.integers(len(PLACES))))

    def slot_change(f: Fact) -> Fact:
        a, v, p, l = f
        if rng.random() < 0.5:
            v = int((v + rng.integers(1, len(VERBS))) % len(VERBS))
        else:
            l = int((l + rng.integers(1, len(PLACES))) % len(PLACES))
        return (a, v, p, l)

    def other_template(a: int) -> int:
        return int((a + rng.integers(1, len(TEMPLATES))) % len(TEMPLATES))

    def doc(f: Fact, query_template: int) -> str:
        return render(f, other_template(query_template), int(rng.integers(3)), int(rng.integers(2)))

    def build(pair_idx: np.ndarray, n_para: int) -> dict[str, Any]:
        out: dict[str, Any] = {k: [] for k in ("q", "qf", "pos", "docs", "df", "kind", "hard")}
        for k in pair_idx:
            f = draw_fact(pairs[int(k)])
            a = int(rng.integers(len(TEMPLATES)))
            out["q"].append(render(f, a, int(rng.integers(3)), int(rng.integers(2))))
            out["qf"].append(fid(f))
            out["pos"].append(len(out["docs"]))
            templates = rng.permutation([t for t in range(len(TEMPLATES)) if t != a])[:n_para]
            for i, t in enumerate(templates):
                out["docs"].append(render(f, int(t), int(rng.integers(3)), int(rng.integers(2))))
                out["df"].append(fid(f))
                out["kind"].append("positive" if i == 0 else "paraphrase")
            hard = []
            for kind, g in (("slot", slot_change(f)), ("role_swap", (f[2], f[1], f[0], f[3]))):
                hard.append(len(out["docs"]))
                out["docs"].append(doc(g, a))
                out["df"].append(fid(g))
                out["kind"].append(kind)
            out["hard"].append(hard)
        return out

    ev = build(order[:n_eval_facts], 1)
    tr = build(order[n_eval_facts : n_eval_facts + n_train_facts], n_paraphrases)
    facts = np.array(sorted(fact_ids, key=fact_ids.get), dtype=np.int64).reshape(-1, 4)
    t = torch.tensor
    return RetrievalWorld(
        facts=facts,
        train_queries=tr["q"],
        train_query_fact=t(tr["qf"]),
        train_positive=t(tr["pos"]),
        train_docs=tr["docs"],
        train_doc_fact=t(tr["df"]),
        train_doc_kind=tr["kind"],
        eval_queries=ev["q"],
        eval_query_fact=t(ev["qf"]),
        eval_docs=ev["docs"],
        eval_doc_fact=t(ev["df"]),
        eval_doc_kind=ev["kind"],
        eval_positive=t(ev["pos"]),
        eval_hard=t(ev["hard"]),
        seed=seed,
    )
