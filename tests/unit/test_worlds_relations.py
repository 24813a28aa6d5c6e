"""worlds.relations: the few-shot relation corpus with a domain shift."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.relations import _TYPE_SUFFIX, RELATIONS, TEMPLATES, entity_name, relation_world


def test_splits_domains_balance_and_ground_truth():
    w = relation_world(n_pool=70, n_unlabeled=140, n_test=35, n_source_test=14, seed=3)
    assert (len(w.pool), len(w.unlabeled), len(w.test), len(w.source_test)) == (70, 140, 35, 14)
    assert bool((w.pool.domains == 0).all()) and bool((w.source_test.domains == 0).all())
    assert bool((w.unlabeled.domains == 1).all()) and bool((w.test.domains == 1).all())
    assert torch.bincount(w.pool.labels, minlength=len(RELATIONS)).tolist() == [10] * len(RELATIONS)
    for data, dom in ((w.pool, "source"), (w.test, "target")):
        for text, y, s, o, t in zip(data.texts, data.labels, data.subjects, data.objects, data.templates, strict=True):
            # each sentence is exactly its template filled with its two entities: the label is known
            assert text == TEMPLATES[RELATIONS[int(y)]][dom][int(t)].format(s=s, o=o)


def test_source_and_target_share_no_template_and_no_entity_syllables():
    for rel in RELATIONS:
        assert not set(TEMPLATES[rel]["source"]) & set(TEMPLATES[rel]["target"])
    w = relation_world(n_pool=70, n_unlabeled=70, n_test=70, seed=0)
    # type words ("corp", "tales"), the same in both domains; the invented name parts are not shared
    shared = {"the", *_TYPE_SUFFIX["company"], *_TYPE_SUFFIX["book"]}

    def words(names):
        return {x for s in names for x in s.split()} - shared

    assert words(w.pool.subjects) and words(w.test.subjects)
    assert not words(w.pool.subjects + w.pool.objects) & words(w.test.subjects + w.test.objects)


def test_seeded_and_few_shot_draw():
    a, b = (
        relation_world(n_pool=70, n_unlabeled=7, n_test=7, seed=1),
        relation_world(n_pool=70, n_unlabeled=7, n_test=7, seed=1),
    )
    assert a.pool.texts == b.pool.texts and a.test.texts == b.test.texts
    assert relation_world(n_pool=70, n_unlabeled=7, n_test=7, seed=2).pool.texts != a.pool.texts
    few = a.few_shot(3, seed=0)
    assert torch.bincount(few.labels).tolist() == [3] * len(RELATIONS)
    assert few.texts == a.few_shot(3, seed=0).texts and few.texts != a.few_shot(3, seed=1).texts
    assert set(few.texts) <= set(a.pool.texts)


def test_entity_names_by_type():
    import numpy as np

    rng = np.random.default_rng(0)
    assert len(entity_name("person", "source", rng).split()) == 2
    assert entity_name("book", "target", rng).startswith("the ")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: relation_world(n_pool=3), "n_pool"),
        (lambda: relation_world(n_test=0), "n_test"),
        (lambda: relation_world(seed=-1), "seed"),
        (lambda: relation_world(n_pool=14, n_unlabeled=7, n_test=7).few_shot(3), "k"),
        (lambda: entity_name("planet", "source", None), "kind"),
        (lambda: entity_name("city", "space", None), "domain"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        call()
