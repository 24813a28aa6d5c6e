"""The shortcut topic world: each split holds the tag/label correlation it promises, the
adversarial twin differs from the clean test only at the tag, gold words are the disc words,
determinism by seed, bad inputs."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.shortcut_text import SHORTCUT_TAGS, flip_tags, shortcut_splits, shortcut_topics, sibling_of
from xattr_nb.worlds.text import TOPIC_CLASSES, TOPIC_FILLERS, TOPIC_PAIRS


def _tag_class_from_words(d):
    by_word = {w: d.classes.index(c) for c, w in d.tags.items()}
    return torch.as_tensor([by_word[ws[int(p)]] for ws, p in zip(d.words, d.tag_pos, strict=True)])


@pytest.mark.parametrize("agree", [1.0, 0.95, 0.5, 0.0])
def test_split_holds_exactly_the_promised_correlation(agree):
    d = shortcut_topics(120, agree=agree, seed=3)
    assert int(d.channel_agrees.sum()) == round(agree * 120)
    tc = _tag_class_from_words(d)
    assert torch.equal(tc, d.tag_class)
    assert torch.equal(d.channel_agrees, tc == d.labels)
    # a disagreeing tag is always the sibling's: the shortcut points at the confusable class
    sib = torch.as_tensor([d.classes.index(sibling_of(d.classes[int(y)])) for y in d.labels])
    assert torch.equal(tc[~d.channel_agrees], sib[~d.channel_agrees])


def test_splits_train_clean_and_adversarial_twin():
    train, tests = shortcut_splits(7, n_per_class=8, n_test=60, agree=0.95)
    assert len(train) == 48 and torch.equal(torch.bincount(train.labels), torch.full((6,), 8))
    assert int(train.channel_agrees.sum()) == round(0.95 * 48) == 46
    clean, adv = tests["clean"], tests["adversarial"]
    assert int(clean.channel_agrees.sum()) == 57 and int(adv.channel_agrees.sum()) == 0
    assert torch.equal(adv.labels, clean.labels) and adv.gold_words == clean.gold_words and adv.roles == clean.roles
    for i in range(len(clean)):
        diff = [j for j, (a, b) in enumerate(zip(clean.words[i], adv.words[i], strict=True)) if a != b]
        sib_tag = SHORTCUT_TAGS[sibling_of(clean.classes[int(clean.labels[i])])]
        assert adv.words[i][int(adv.tag_pos[i])] == sib_tag
        assert diff == ([] if not clean.channel_agrees[i] else [int(clean.tag_pos[i])])
    # the test texts are not the training texts (disjoint generator seeds)
    assert not set(train.texts) & set(clean.texts)


def test_roles_gold_words_and_vocab():
    d = shortcut_topics(60, agree=0.9, seed=1)
    disc = {c: set(d1) for p in TOPIC_PAIRS for c, d1 in ((p[0], p[1]), (p[2], p[3]))}
    for ws, rs, gold, y, tp in zip(d.words, d.roles, d.gold_words, d.labels, d.tag_pos, strict=True):
        assert len(ws) == 10 and rs.count("spurious") == 1 and rs.index("spurious") == int(tp)
        assert gold == [j for j, r in enumerate(rs) if r == "disc"] and 1 <= len(gold) <= 2
        assert {ws[j] for j in gold} <= disc[d.classes[int(y)]]
        assert all(ws[j] in TOPIC_FILLERS for j, r in enumerate(rs) if r == "filler")
        assert set(ws) <= set(d.vocab)
    assert [d.texts[i][a:b] for i in range(3) for a, b in d.gold_chars[i]] == [
        d.words[i][j] for i in range(3) for j in d.gold_words[i]
    ]
    # the tags are none of the topic words
    topic_words = {w for p in TOPIC_PAIRS for ws in (p[1], p[3], p[4]) for w in ws} | set(TOPIC_FILLERS)
    assert not set(SHORTCUT_TAGS.values()) & topic_words and len(set(SHORTCUT_TAGS.values())) == len(TOPIC_CLASSES)


def test_deterministic_by_seed():
    a, b, c = shortcut_topics(30, seed=5), shortcut_topics(30, seed=5), shortcut_topics(30, seed=6)
    assert a.texts == b.texts and torch.equal(a.tag_class, b.tag_class) and a.texts != c.texts
    ta, sa = shortcut_splits(2, n_test=20)
    tb, sb = shortcut_splits(2, n_test=20)
    assert ta.texts == tb.texts and sa["adversarial"].texts == sb["adversarial"].texts


def test_subset_keeps_the_tag_fields():
    d = shortcut_topics(12, agree=0.5, seed=0)
    s = d.subset([3, 1])
    assert torch.equal(s.tag_class, d.tag_class[[3, 1]]) and torch.equal(s.tag_pos, d.tag_pos[[3, 1]])


def test_sibling_of():
    assert sibling_of("sport") == "fitness" and sibling_of("nutrition") == "cooking"
    with pytest.raises(InputError, match="`cls`"):
        sibling_of("poetry")


def test_bad_agree():
    with pytest.raises(InputError, match="`agree`"):
        shortcut_topics(4, agree=1.5)


def test_bad_n_disc():
    with pytest.raises(InputError, match="`n_disc`"):
        shortcut_topics(4, n_disc=(0, 2))


def test_bad_n_words_too_small():
    with pytest.raises(InputError, match="`n_words`"):
        shortcut_topics(4, n_words=5, n_disc=(2, 3), n_shared=(2, 2))


def test_bad_flip_input():
    from xattr_nb.worlds.text import topics

    with pytest.raises(InputError, match="ShortcutTopicData"):
        flip_tags(topics(4, seed=0))
