"""Surrogate classifiers and their ensemble (paper 23): shapes, the mean-of-log-probs identity, training, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.models.surrogates import HEADS, ClipMLP, Ensemble, SmallCNN, train_surrogate


class _Fixed(nn.Module):
    """A two-head 'classifier' returning fixed logits (known answers)."""

    def __init__(self, shape_logits, color_logits):
        super().__init__()
        self.s, self.c = torch.tensor(shape_logits), torch.tensor(color_logits)

    def forward(self, x):
        b = len(x)
        return {"shape": self.s.expand(b, -1), "color": self.c.expand(b, -1)}


def test_ensemble_logprob_is_mean_of_members():
    a = _Fixed([0.0] * 16, [2.0, 0.0] + [0.0] * 6)
    b = _Fixed([0.0] * 16, [0.0, 3.0] + [0.0] * 6)
    ens = Ensemble([a, b])
    x = torch.zeros(3, 3, 32, 32)
    want = (F.log_softmax(a.c, -1) + F.log_softmax(b.c, -1)) / 2
    assert torch.allclose(ens.logprob(x, "color"), want.expand(3, -1))
    # a uniform shape head: log(1/16) exactly
    assert torch.allclose(ens.logprob(x, "shape"), torch.full((3, 16), -torch.log(torch.tensor(16.0))))
    # all_wrong: member a predicts colour 0, member b colour 1
    assert ens.all_wrong(x, torch.tensor([0, 1, 2]), "color").tolist() == [False, False, True]


def test_small_cnn_heads_and_training_lowers_loss():
    torch.manual_seed(0)
    x = torch.rand(32, 3, 32, 32)
    s, c = torch.randint(0, 16, (32,)), torch.randint(0, 8, (32,))
    m = SmallCNN(width=4)
    out = m(x)
    assert {k: v.shape[1] for k, v in out.items()} == HEADS

    def loss():
        with torch.no_grad():
            o = m(x)
            return float(F.cross_entropy(o["shape"], s) + F.cross_entropy(o["color"], c))

    before = loss()
    train_surrogate(m, x, s, c, epochs=15, batch=32, lr=1e-2, seed=0)
    assert loss() < before - 0.5


def test_bad_input_names_argument():
    with pytest.raises(InputError, match="members"):
        Ensemble([])
    with pytest.raises(InputError, match="images"):
        SmallCNN()(torch.zeros(2, 3, 16, 16))
    with pytest.raises(InputError, match="clip"):
        ClipMLP(nn.Linear(2, 2))
    with pytest.raises(InputError, match="head"):
        Ensemble([SmallCNN(4)]).logprob(torch.zeros(1, 3, 32, 32), "size")
    with pytest.raises(InputError, match="shape_ids"):
        train_surrogate(
            SmallCNN(4), torch.zeros(2, 3, 32, 32), torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long)
        )
