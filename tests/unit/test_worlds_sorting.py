"""The digit-sorting world (paper 25): targets, the exact reward on hand cases, the noisy corpus."""

from __future__ import annotations

import pytest

from xattr_nb.checks import InputError
from xattr_nb.worlds.sorting import SortTask, levenshtein


def test_levenshtein_known_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("122579", "122579") == 0
    assert levenshtein("122579", "125279") == 2  # one adjacent swap = two substitutions


def test_target_and_reward_hand_cases():
    t = SortTask()
    p = "529271="
    assert t.target(p) == "122579"
    assert t.reward(p, "122579") == 1.0
    assert t.exact(p, "122579") == 1.0
    assert t.reward(p, "125279") == pytest.approx(1 - 2 / 6)
    assert t.exact(p, "125279") == 0.0
    assert t.reward(p, "122570") == pytest.approx(1 - 1 / 6)  # one wrong digit
    assert t.reward(p, "975221") == pytest.approx(1 - levenshtein("975221", "122579") / 6)
    assert t.reward(p, "12257") == 0.0  # too short: malformed
    assert t.reward(p, "1225799") == 0.0  # too long
    assert t.reward(p, "12257=") == 0.0  # non-digit


def test_prompts_seeded_and_shaped():
    t = SortTask(length=4)
    a, b = t.prompts(20, seed=3), t.prompts(20, seed=3)
    assert a == b and a != t.prompts(20, seed=4)
    assert all(len(p) == 5 and p.endswith("=") and p[:-1].isdigit() for p in a)


def test_noisy_corpus_mix():
    t = SortTask()
    ps, rs = t.noisy_corpus(300, p_correct=1.0, seed=0)
    assert all(r == t.target(p) for p, r in zip(ps, rs, strict=True))
    ps, rs = t.noisy_corpus(300, p_correct=0.0, max_swaps=3, seed=0)
    for p, r in zip(ps, rs, strict=True):
        tgt = t.target(p)
        assert sorted(r) == sorted(tgt)  # a near-sort permutes the right digits
        if len(set(tgt)) > 1:
            assert r != tgt  # and is wrong whenever it can be
            assert t.reward(p, r) < 1.0
    ps, rs = t.noisy_corpus(2000, p_correct=0.5, seed=1)
    share = sum(r == t.target(p) for p, r in zip(ps, rs, strict=True)) / 2000
    assert 0.45 < share < 0.56


def test_rewards_shapes():
    t = SortTask()
    ps = ["529271=", "000000="]
    assert t.rewards(ps, ["122579", "000000"]).tolist() == [1.0, 1.0]
    assert t.rewards(ps, [["122579", "x"], ["000001", "000000"]]).shape == (2, 2)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: SortTask(length=1), "length"),
        (lambda: SortTask(sep="5"), "sep"),
        (lambda: SortTask().target("5292="), "prompt"),
        (lambda: SortTask().target("52927a="), "prompt"),
        (lambda: SortTask().noisy_corpus(10, p_correct=1.5), "p_correct"),
        (lambda: SortTask().noisy_corpus(10, max_swaps=0), "max_swaps"),
        (lambda: SortTask().prompts(0), "n"),
        (lambda: SortTask().rewards(["529271="], []), "responses"),
        (lambda: SortTask().reward("529271=", 5), "response"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        call()
