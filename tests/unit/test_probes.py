"""Probes and regressions on hidden states: pooling semantics, known-answer probes, R², MCC."""

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.interventions.probes import diff_of_means, hidden_states, layerwise_probe, regress_r2
from xattr_nb.metrics import matched_correlations, mcc
from xattr_nb.models import tiny_gpt2


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(20, n_layer=2, d_model=16, n_head=2, seed=0)


def test_hidden_states_pool_over_kept_tokens(model):
    ids = torch.randint(0, 20, (6, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    exclude = torch.zeros_like(ids, dtype=torch.bool)
    exclude[:, 0] = True
    full = hidden_states(model, ids, mask, pool=None)
    mean = hidden_states(model, ids, mask, pool="mean", exclude_mask=exclude)
    last = hidden_states(model, ids, mask, pool="last")
    assert set(full) == {0, 1} and full[1].shape == (6, 5, 16)
    assert torch.allclose(mean[1][0], full[1][0, 1:3].mean(0), atol=1e-6)
    assert torch.allclose(mean[1][2], full[1][2, 1:].mean(0), atol=1e-6)
    assert torch.allclose(last[0][0], full[0][0, 2]) and torch.allclose(last[0][1], full[0][1, 4])


def test_hidden_states_equal_hf_hidden_states(model):
    ids = torch.randint(0, 20, (3, 4))
    ours = hidden_states(model, ids, pool=None)
    hf = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(ours[0], hf[1], atol=1e-6)  # hf[0] is the embeddings, hf[-1] has ln_f applied


def test_hidden_states_errors(model):
    ids = torch.randint(0, 20, (2, 3))
    with pytest.raises(InputError, match="integer token ids"):
        hidden_states(model, ids.float())
    with pytest.raises(InputError, match="no token left"):
        hidden_states(model, ids, exclude_mask=torch.ones_like(ids, dtype=torch.bool))
    with pytest.raises(InputError, match="layers"):
        hidden_states(model, ids, layers=[5])
    with pytest.raises(InputError, match="attention_mask"):
        hidden_states(model, ids, torch.ones(2, 4))


def test_probe_finds_the_layer_that_carries_the_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    signal = np.c_[y + 0.3 * rng.normal(size=300), rng.normal(size=(300, 4))]
    table = layerwise_probe({0: rng.normal(size=(300, 5)), 1: signal}, y, cv=5)
    assert table.set_index("layer").loc[1, "auc"] > 0.95
    assert abs(table.set_index("layer").loc[0, "auc"] - 0.5) < 0.15
    with pytest.raises(InputError, match="two classes"):
        layerwise_probe({0: signal}, np.zeros(300))


def test_regress_r2_exact_linear_and_pure_noise():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    Y = X @ rng.normal(size=(6, 3)) + 2.0
    assert regress_r2(X, Y, ridge=1e-6) == pytest.approx(1.0, abs=1e-6)
    per = regress_r2(X, np.c_[Y[:, 0], rng.normal(size=400)], per_target=True)
    assert per[0] > 0.999 and per[1] < 0.05
    with pytest.raises(InputError, match="same rows"):
        regress_r2(X, Y[:10])


def test_diff_of_means_and_mcc_known_answers():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    assert torch.equal(diff_of_means(acts, [1, 1, 0, 0]), torch.tensor([2.0, -3.0]))
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(500, 3))
    latents = np.c_[rng.normal(size=500), -2 * truth[:, 2], 3 * truth[:, 0] + 1, np.zeros(500), truth[:, 1]]
    rows, cols, r = matched_correlations(latents, truth)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [2, 4, 1]
    assert np.allclose(r, 1.0)
    assert mcc(latents, truth) == pytest.approx(1.0)
    assert mcc(rng.normal(size=(500, 3)), truth) < 0.2
    with pytest.raises(InputError, match="NaN"):
        mcc(np.full((5, 2), np.nan), truth[:5])
