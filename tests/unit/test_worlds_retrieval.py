"""xattr_nb.worlds.retrieval: known relevance, hard negatives that are what they say, a held-out split."""

from __future__ import annotations

import pytest

from xattr_nb.checks import InputError
from xattr_nb.worlds.retrieval import NAMES, TEMPLATES, make_retrieval_world, render


@pytest.fixture(scope="module")
def world():
    return make_retrieval_world(60, 30, n_paraphrases=2, seed=3)


def _names(text):
    return sorted(w.strip(".,") for w in text.split() if w.strip(".,") in NAMES)


def test_seeded_and_deterministic():
    a, b = make_retrieval_world(20, 10, seed=1), make_retrieval_world(20, 10, seed=1)
    assert a.train_queries == b.train_queries and a.eval_docs == b.eval_docs
    assert make_retrieval_world(20, 10, seed=2).train_queries != a.train_queries


def test_each_eval_query_has_exactly_its_positive_relevant(world):
    rel = world.eval_relevant
    assert rel.shape == (30, 90)
    assert rel.sum(1).tolist() == [1] * 30
    assert all(bool(rel[i, world.eval_positive[i]]) for i in range(30))
    assert not bool(rel[range(30), world.eval_hard[:, 0]].any()) and not bool(
        rel[range(30), world.eval_hard[:, 1]].any()
    )
    assert {world.eval_doc_kind[j] for j in world.eval_hard[:, 0].tolist()} == {"slot"}
    assert {world.eval_doc_kind[j] for j in world.eval_hard[:, 1].tolist()} == {"role_swap"}


def test_hard_negatives_are_what_they_say(world):
    for i in range(30):
        qf = world.facts[int(world.eval_query_fact[i])]
        slot = world.facts[int(world.eval_doc_fact[world.eval_hard[i, 0]])]
        swap = world.facts[int(world.eval_doc_fact[world.eval_hard[i, 1]])]
        assert (slot != qf).sum() == 1 and slot[0] == qf[0] and slot[2] == qf[2]  # verb or place changed
        assert (swap[0], swap[1], swap[2], swap[3]) == (qf[2], qf[1], qf[0], qf[3])
        assert _names(world.eval_docs[int(world.eval_hard[i, 1])]) == _names(world.eval_queries[i])  # same words
        assert world.eval_queries[i] != world.eval_docs[int(world.eval_positive[i])]


def test_the_training_pool_holds_unlabelled_duplicates(world):
    rel = world.train_relevant
    assert rel.sum(1).tolist() == [2] * 60  # the labelled positive and one more paraphrase
    assert [world.train_doc_kind[j] for j in world.train_positive.tolist()] == ["positive"] * 60
    assert world.train_doc_kind.count("paraphrase") == 60


def test_nothing_of_the_eval_split_occurs_in_training(world):
    train_texts = set(world.train_queries) | set(world.train_docs)
    assert not train_texts & (set(world.eval_queries) | set(world.eval_docs))
    pair = lambda f: frozenset(world.facts[f][[0, 2]].tolist())  # noqa: E731
    eval_pairs = {pair(f) for f in world.eval_doc_fact.tolist()}
    train_pairs = {pair(f) for f in world.train_doc_fact.tolist()}
    assert not eval_pairs & train_pairs


def test_render_by_hand():
    assert render((0, 0, 1, 0), 0, 1, 1) == "Alice phoned Bob at the railway station."
    assert render((0, 0, 1, 0), 1, 2, 0) == "Bob was rung by Alice at the station."
    assert len(TEMPLATES) == 8


@pytest.mark.parametrize(
    ("kw", "name"),
    [({"n_train_facts": 0}, "n_train_facts"), ({"n_eval_facts": 2000}, "n_train_facts"),
     ({"n_paraphrases": 0}, "n_paraphrases"), ({"seed": -1}, "seed")],
)  # fmt: skip
def test_bad_input_names_the_argument(kw, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        make_retrieval_world(**kw)
