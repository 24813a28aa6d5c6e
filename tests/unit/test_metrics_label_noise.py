"""Memorisation and noisy-label detection measures on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics import detection_scores, memorization_stats


def test_memorization_stats_known_answer():
    clean = torch.tensor([0, 1, 2, 3, 4, 5])
    noisy = torch.tensor([0, 1, 9, 9, 9, 9])  # the last four are mislabelled
    pred = torch.tensor([0, 2, 2, 9, 9, 7])  # true, wrong label, wrong label, other
    m = memorization_stats(pred, noisy, clean)
    assert m["n_noisy"] == 4 and m["fit_clean"] == 0.25 and m["memorized"] == 0.5 and m["other"] == 0.25
    assert m["clean_acc"] == 0.5


def test_detection_scores_known_answer_and_auroc():
    truly = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    flags = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.0, 0.4])
    d = detection_scores(flags, truly, score)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    assert d["flagged"] == 0.375 and d["base_rate"] == 0.375
    # pairs (noisy, clean) ranked right: 0.9 and 0.8 beat all 5; 0.3 beats 0.2, 0.1, 0.0 -> 13/15
    assert d["auroc"] == pytest.approx(13 / 15)


def test_nothing_flagged_has_zero_precision():
    assert detection_scores(np.zeros(4, bool), np.array([1, 0, 0, 0], bool))["precision"] == 0.0


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: memorization_stats([0, 1], [0, 1, 2], [0, 1]), "noisy_labels"),
        (lambda: memorization_stats([0.5, 1.0], [0, 1], [0, 1]), "pred"),
        (lambda: detection_scores(np.ones(3, bool), np.ones(2, bool)), "truly_noisy"),
        (lambda: detection_scores(np.ones(3, bool), np.zeros(3, bool)), "truly_noisy"),
        (lambda: detection_scores(np.array([0.5, 1.0]), np.ones(2, bool)), "flags"),
        (lambda: detection_scores(np.ones(2, bool), np.array([1, 0], bool), [0.1, float("nan")]), "score"),
    ],
)
def test_bad_inputs(call, arg):
    with pytest.raises(InputError, match=arg):
        call()
