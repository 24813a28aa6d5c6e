from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from xattr_nb.checks import InputError
from xattr_nb.models.fit import FitHistory, accuracy, fit


def separable(n=200, seed=0):
    """Two Gaussian blobs at (-2,-2) and (+2,+2): linearly separable with a wide margin."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 4.0 - 2.0)
    return x, y


def linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(2, 2)


def test_fit_separates_and_loss_decreases():
    x, y = separable()
    xv, yv = separable(100, seed=1)
    model = linear()
    hist = fit(model, (x, y), epochs=8, lr=0.05, batch_size=32, val=(xv, yv), show_progress=False)
    assert isinstance(hist, FitHistory)
    assert len(hist.loss) == 8 and len(hist.val_accuracy) == 8
    assert hist.loss[-1] < 0.3 * hist.loss[0]
    assert all(b <= a * 1.05 for a, b in zip(hist.loss, hist.loss[1:], strict=False))
    assert hist.val_accuracy[-1] == 1.0 and accuracy(model, x, y) == 1.0
    assert hist.steps == 8 * 7  # ceil(200 / 32) batches per epoch
    assert hist.final["val_accuracy"] == 1.0
    assert not model.training


def test_fit_same_seed_same_weights_other_seed_differs():
    x, y = separable()
    runs = []
    for seed in (0, 0, 1):
        m = linear()
        fit(m, (x, y), epochs=2, lr=0.05, batch_size=16, seed=seed, show_progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_fit_leaves_global_rng_alone():
    x, y = separable(40)
    model = linear()
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    fit(model, (x, y), epochs=1, lr=0.01, show_progress=False)
    assert torch.equal(torch.rand(2), expected)


def test_extra_loss_is_added_to_the_loss():
    """A constant extra term has zero gradient: same weights, loss shifted by exactly that constant."""
    x, y = separable(64)
    a, b = linear(), linear()
    ha = fit(a, (x, y), epochs=3, lr=0.05, batch_size=16, show_progress=False)
    hb = fit(b, (x, y), epochs=3, lr=0.05, batch_size=16, show_progress=False,
             extra_loss=lambda model, inputs, yb, logits: torch.tensor(1.5))  # fmt: skip
    assert torch.equal(a.weight, b.weight)
    assert hb.extra == [1.5] * 3
    torch.testing.assert_close(torch.tensor(hb.loss), torch.tensor(ha.loss) + 1.5)


def test_extra_loss_shapes_the_solution():
    x, y = separable(64)
    free, shrunk = linear(), linear()
    fit(free, (x, y), epochs=10, lr=0.05, batch_size=8, show_progress=False)
    fit(shrunk, (x, y), epochs=10, lr=0.05, batch_size=8, show_progress=False,
        extra_loss=lambda model, inputs, yb, logits: 10.0 * model.weight.pow(2).sum())  # fmt: skip
    assert shrunk.weight.norm() < 0.5 * free.weight.norm()


def test_fit_with_dataloader_and_several_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x, scale):
            return self.lin(x) * scale[:, None]

    x, y = separable(96)
    scale = torch.ones(96)
    torch.manual_seed(0)
    model = TwoInputs()
    loader = DataLoader(TensorDataset(x, scale, y), batch_size=16, shuffle=False)
    hist = fit(model, loader, epochs=5, lr=0.05, show_progress=False)
    assert hist.loss[-1] < hist.loss[0]
    assert accuracy(model, (x, scale), y) == 1.0


def test_fit_custom_loss_fn():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    target = x @ torch.tensor([[1.0], [-2.0]])
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    fit(model, (x, target), epochs=40, lr=0.05, batch_size=8, loss_fn=nn.functional.mse_loss, show_progress=False)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, -2.0]]), atol=0.05, rtol=0)


def test_accuracy_counts_exactly():
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    x = torch.tensor([[-1.0], [2.0], [3.0], [-4.0]])  # predicts 0, 1, 1, 0
    assert accuracy(model, x, torch.tensor([0, 1, 0, 1]), batch_size=3) == 0.5


def test_accuracy_rejects_length_mismatch():
    with pytest.raises(InputError, match=r"first .*dimension"):
        accuracy(nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))


def test_fit_rejects_zero_epochs():
    with pytest.raises(InputError, match="epochs"):
        fit(linear(), separable(8), epochs=0, lr=0.1)


def test_fit_rejects_zero_lr():
    with pytest.raises(InputError, match="lr"):
        fit(linear(), separable(8), epochs=1, lr=0.0)


def test_fit_rejects_float_targets_for_cross_entropy():
    x, y = separable(8)
    with pytest.raises(InputError, match="integer"):
        fit(linear(), (x, y.float()), epochs=1, lr=0.1, show_progress=False)


def test_fit_rejects_targets_outside_classes():
    x, y = separable(8)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        fit(linear(), (x, y + 1), epochs=1, lr=0.1, show_progress=False)


def test_fit_rejects_length_mismatch():
    x, y = separable(8)
    with pytest.raises(InputError, match=r"first .*dimension"):
        fit(linear(), (x, y[:5]), epochs=1, lr=0.1)


def test_fit_rejects_non_tuple_train():
    with pytest.raises(InputError, match="tuple"):
        fit(linear(), torch.zeros(4, 2), epochs=1, lr=0.1)


def test_fit_rejects_batch_size_with_dataloader():
    x, y = separable(8)
    with pytest.raises(InputError, match="batch_size"):
        fit(linear(), DataLoader(TensorDataset(x, y), batch_size=4), epochs=1, lr=0.1, batch_size=4)


def test_fit_rejects_zero_batch_size():
    with pytest.raises(InputError, match="batch_size"):
        fit(linear(), separable(8), epochs=1, lr=0.1, batch_size=0)


def test_fit_rejects_frozen_model():
    model = linear().requires_grad_(False)
    with pytest.raises(InputError, match="no trainable parameters"):
        fit(model, separable(8), epochs=1, lr=0.1)


def test_fit_rejects_non_callable_loss():
    with pytest.raises(InputError, match="loss_fn"):
        fit(linear(), separable(8), epochs=1, lr=0.1, loss_fn="mse")


def test_fit_rejects_bad_val():
    x, y = separable(8)
    with pytest.raises(InputError, match="val"):
        fit(linear(), (x, y), epochs=1, lr=0.1, val=x)
