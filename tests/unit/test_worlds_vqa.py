"""The VQA world: answers match the rendered attributes, Tiny-POPE is balanced, negatives are what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds import captions as W
from xattr_nb.worlds import shapes as S
from xattr_nb.worlds import vqa as V


@pytest.fixture(scope="module")
def ev():
    return V.images(240, seed=5)


def test_answers_are_the_attributes(ev):
    for q in ("shape", "color", "color_named", "describe"):
        qa = V.qa_set(ev, q)
        assert len(qa) == len(ev)
        for a, ans, s, c in zip(qa.attrs, qa.answers, qa.shape_ids, qa.color_ids, strict=True):
            assert W.SHAPES[int(s)] == a["shape"] and W.COLORS[int(c)] == a["color"]
            want = {"shape": a["shape"], "color": a["color"], "color_named": a["color"]}.get(
                q, f"a {a['color']} {a['shape']} on a {a['bg']} background"
            )
            assert ans == want
    named = V.qa_set(ev, "color_named")
    assert all(q == f"what color is the {a['shape']} ?" for q, a in zip(named.questions, named.attrs, strict=True))


def test_colour_answers_match_the_pixels(ev):
    """On solid shapes over a black background the object's mean pixel is nearest the answer's palette colour."""
    qa = V.qa_set(ev, "color")
    palette = torch.tensor(list(S.COLORS.values()))
    checked = 0
    for img, a, ans in zip(qa.images, qa.attrs, qa.answers, strict=True):
        if a["bg"] != "black" or a["style"] != "solid":
            continue
        obj = img.reshape(3, -1)[:, img.max(0).values.flatten() > 0.2]
        nearest = W.COLORS[int(((palette - obj.mean(1)) ** 2).sum(1).argmin())]
        assert nearest == ans, (a, obj.mean(1))
        checked += 1
    assert checked >= 5


def test_pope_is_balanced_and_negatives_are_absent(ev):
    for kind in V.NEGATIVE_KINDS:
        p = V.pope(ev, kind, seed=1)
        yes = p.yes
        assert int(yes.sum()) * 2 == len(p)
        for a, ask, ans, k in zip(p.attrs, p.asked, p.answers, p.kinds, strict=True):
            truth = (a["color"], a["shape"])
            assert (ans == "yes") == (ask == truth) == (k == "positive")
            if k != "positive":
                assert k == kind


def test_adversarial_negative_is_the_prior_colour(ev):
    p = V.pope(ev, "adversarial", seed=1)
    neg = [i for i, k in enumerate(p.kinds) if k == "adversarial"]
    assert neg
    for i in neg:
        a = p.attrs[i]
        assert p.asked[i] == (W.PRIOR_COLOR[a["shape"]], a["shape"]) and a["color"] != W.PRIOR_COLOR[a["shape"]]
    # prior images have no adversarial negative and are left out
    assert not bool(p.prior.any())
    n_counter = int((~W.prior_mask(ev)).sum())
    assert len(p) == 2 * n_counter


def test_popular_negative_is_another_shapes_prior_pair(ev):
    p = V.pope(ev, "popular", seed=2)
    for a, ask, k in zip(p.attrs, p.asked, p.kinds, strict=True):
        if k == "popular":
            color, shape = ask
            assert shape != a["shape"] and color == W.PRIOR_COLOR[shape]


def test_training_qa_plants_the_bias():
    d = V.images(1600, seed=3, spurious_color=0.8)
    assert 0.7 < float(W.prior_mask(d).float().mean()) < 0.9
    qa = V.training_qa(d, seed=0, yes_rate=0.7)
    yn = [i for i, q in enumerate(qa.qtypes) if q == "yesno"]
    yes = np.mean([qa.answers[i] == "yes" for i in yn])
    assert abs(yes - 0.7) < 0.06
    assert "adversarial" not in {qa.kinds[i] for i in yn}
    # the answers still follow the attributes
    for i in yn:
        a = qa.attrs[i]
        assert (qa.answers[i] == "yes") == (qa.asked[i] == (a["color"], a["shape"]))


def test_seeded_and_vocabulary():
    a, b = V.images(40, seed=9), V.images(40, seed=9)
    assert torch.equal(a.images, b.images)
    qa1, qa2 = V.training_qa(a, seed=4), V.training_qa(b, seed=4)
    assert qa1.questions == qa2.questions and qa1.answers == qa2.answers
    assert V.training_qa(a, seed=5).questions != qa1.questions
    vocab = set(V.vocabulary())
    for q in (*qa1.questions, *qa1.answers):
        assert set(q.split()) <= vocab
    assert len(V.world_version()) == 16


def test_bad_inputs_name_the_argument(ev):
    with pytest.raises(InputError, match="kind"):
        V.pope(ev, "hard")
    with pytest.raises(InputError, match="data"):
        V.pope([1, 2], "random")
    with pytest.raises(InputError, match="qtype"):
        V.qa_set(ev, "yesno")
    with pytest.raises(InputError, match="yes_rate"):
        V.training_qa(ev, yes_rate=1.5)
    with pytest.raises(InputError, match="mix"):
        V.training_qa(ev, mix={"size": 1.0})
    with pytest.raises(InputError, match="ask"):
        V.question("yesno", ask=("pink", "star"))
    with pytest.raises(InputError, match="adversarial"):
        V.pope(V.images(16, seed=1, spurious_color=1.0), "adversarial")
