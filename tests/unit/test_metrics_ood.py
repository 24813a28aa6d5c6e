"""OoD metrics and scores (``xattr_nb.metrics.ood``) against hand-computed answers; the convention
is higher score = more in-distribution, ID the positive class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    energy_score,
    fpr_at_tpr,
    max_logit_score,
    mcm_score,
    neglabel_score,
    ood_metrics,
)


def test_auroc_known_value_and_orientation():
    id_s, ood_s = [0.9, 0.8, 0.7, 0.6], [0.75, 0.5, 0.4, 0.3]
    assert auroc(id_s, ood_s) == pytest.approx(14 / 16)  # pairs with ID above OoD
    assert auroc(ood_s, id_s) == pytest.approx(2 / 16)  # swapped roles: the convention is in the argument order
    assert auroc([1.0, 2.0], [0.0, -1.0]) == 1.0


def test_fpr95_known_value():
    id_s = np.arange(1.0, 21.0)  # keeping >= 95% of 20 ID scores means the threshold 2 (19 kept)
    ood_s = np.array([2.5, 1.5, 0.5, 10.0, 30.0])  # at threshold 2: 2.5, 10 and 30 pass
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(3 / 5)
    assert fpr_at_tpr(id_s, ood_s, tpr=1.0) == pytest.approx(4 / 5)  # threshold 1: 1.5 passes too
    assert fpr_at_tpr(id_s, ood_s, tpr=0.5) == pytest.approx(1 / 5)  # threshold 11 (10 ID kept): only 30 passes
    assert fpr_at_tpr([2.0, 3.0], [0.0, 1.0]) == 0.0


def test_aupr_in_and_out_known_values():
    id_s, ood_s = [3.0, 1.0], [2.0]  # ranking: ID, OoD, ID
    assert aupr_in(id_s, ood_s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert aupr_out(id_s, ood_s) == pytest.approx(0.5)  # negated: ID, OoD, ID; the OoD at precision 1/2


def test_ood_metrics_summary_and_flip_flag():
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    out = ood_metrics(torch.tensor(id_s), ood_s)
    assert out["auroc"] == pytest.approx(auroc(id_s, ood_s))
    assert out["fpr95"] == pytest.approx(fpr_at_tpr(id_s, ood_s))
    assert (out["n_id"], out["n_ood"], out["flipped"]) == (300.0, 200.0, 0.0)
    assert ood_metrics(-id_s, -ood_s)["flipped"] == 1.0  # a lower-is-ID score shows up


def test_mcm_known_value():
    u = np.array([[2.0, 0.0]])  # not normalised: cosines are computed here
    v = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert mcm_score(u, v).item() == pytest.approx(math.e / (math.e + 1))  # softmax([1, 0])
    assert mcm_score(u, v, temperature=0.5).item() == pytest.approx(math.e**2 / (math.e**2 + 1))


def test_neglabel_known_value_and_stability():
    u, v, neg = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert neglabel_score(u, v, neg, temperature=1.0).item() == pytest.approx(math.e / (math.e + 1))
    tiny = neglabel_score(u, v, neg)  # tau = 0.01: exp(100) would overflow float32; the log-sum-exp does not
    assert torch.isfinite(tiny).all() and tiny.item() == pytest.approx(1.0)
    both = neglabel_score(np.array([[1.0, 0.0], [0.0, 1.0]]), v, neg)
    assert both[0] > both[1]  # an image like the negative label scores lower (more OoD)


def test_energy_and_max_logit():
    logits = torch.tensor([[0.0, 0.0], [2.0, 2.0], [5.0, -5.0]])
    assert energy_score(logits).tolist() == pytest.approx(
        [math.log(2), 2 + math.log(2), math.log(math.e**5 + math.e**-5)]
    )
    assert energy_score(logits, temperature=2.0)[1].item() == pytest.approx(2 * (1 + math.log(2)))
    assert max_logit_score(logits).tolist() == [0.0, 2.0, 5.0]
    assert max_logit_score(np.array([[1.0, 3.0]])).item() == 3.0


@pytest.mark.parametrize(
    ("id_s", "ood_s", "match"),
    [
        ([0.1, float("nan")], [0.2], "id_scores"),
        ([0.1, 0.3], [], "ood_scores"),  # a class with no examples
        ([], [0.2], "id_scores"),
        (np.zeros((2, 2)), [0.2], "id_scores"),
    ],
)
def test_bad_scores_raise(id_s, ood_s, match):
    for fn in (auroc, fpr_at_tpr, aupr_in, aupr_out, ood_metrics):
        with pytest.raises(InputError, match=match):
            fn(id_s, ood_s)


def test_bad_score_arguments_raise():
    with pytest.raises(InputError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=0.0)
    with pytest.raises(InputError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=1.5)
    with pytest.raises(InputError, match="temperature"):
        mcm_score(np.ones((1, 2)), np.ones((2, 2)), temperature=0.0)
    with pytest.raises(InputError, match="text_features"):
        mcm_score(np.ones((1, 2)), np.ones((2, 3)))
    with pytest.raises(InputError, match="image_features"):
        mcm_score(np.zeros((1, 2)), np.ones((2, 2)))
    with pytest.raises(InputError, match="negative_features"):
        neglabel_score(np.ones((1, 2)), np.ones((2, 2)), np.ones((2, 4)))
    with pytest.raises(InputError, match="logits"):
        energy_score(torch.tensor([1.0, float("nan")]))
    with pytest.raises(InputError, match="logits"):
        max_logit_score(torch.tensor([[1.0, float("nan")]]))
