"""Sparse autoencoders: exact TopK/ReLU semantics, tied weights, training on planted sparse codes, revival."""

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.models.sae import (
    L1SAE,
    TopKSAE,
    dead_latents,
    encode_direction,
    explained_variance,
    finetune_dead_revival,
    l0,
    nmse,
    top_activations,
    train_sae,
)


def planted(n=3000, d=16, f=32, active=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(f, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, f, generator=g) < active / f).float() * (1 + torch.rand(n, f, generator=g))
    return codes @ dirs + 0.3, dirs


def test_nmse_is_one_for_zero_prediction_and_zero_for_exact():
    x = torch.randn(8, 5)
    assert float(nmse(torch.zeros_like(x), x)) == pytest.approx(1.0)
    assert float(nmse(x, x)) == 0.0


def test_topk_keeps_exactly_k_before_relu():
    sae = TopKSAE(6, 10, 3, seed=1)
    x = torch.randn(50, 6)
    u = sae.encode_pre(x)
    a = sae.encode(x)
    assert ((a > 0).sum(-1) <= 3).all()
    # every kept latent is among the 3 largest pre-activations, with its value unchanged
    top3 = u.topk(3, dim=-1).indices
    for i in range(50):
        nz = torch.nonzero(a[i]).flatten().tolist()
        assert set(nz) <= set(top3[i].tolist())
        assert torch.allclose(a[i, nz], u[i, nz])


def test_tied_decoder_is_encoder_transpose_and_untied_is_not_shared():
    tied, untied = TopKSAE(4, 8, 2), TopKSAE(4, 8, 2, tied=False)
    assert tied.decoder.data_ptr() == tied.W_enc.data_ptr()
    assert torch.equal(tied.decoder, tied.W_enc.T)
    assert untied.W_dec is not None and untied.W_dec.data_ptr() != untied.W_enc.data_ptr()


def test_encode_direction_is_inner_product_plus_bias_constants_when_tied():
    sae = TopKSAE(5, 7, 2, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    w = torch.randn(5)
    expected = sae.decoder @ w - sae.decoder @ sae.b_dec + sae.b_enc
    assert torch.allclose(encode_direction(sae, w), expected, atol=1e-6)
    with pytest.raises(InputError, match="`w` must be a tensor"):
        encode_direction(sae, torch.randn(4))


def test_topk_training_recovers_planted_sparse_code_and_anneals_k():
    x, _ = planted()
    sae = TopKSAE(16, 64, 3, seed=0)
    hist = train_sae(sae, x, epochs=25, batch_size=256, lr=3e-3, k_schedule=(12, 3, 0.5), show_progress=False)
    assert hist["k"][0] == 12 and hist["k"][-1] == 3
    untrained = TopKSAE(16, 64, 3, seed=0)
    with torch.no_grad():
        untrained.b_dec.copy_(x.mean(0))
    # 3 of 64 latents cannot hold rows with more planted features, so the bound is loose; training must
    # still explain most of the variance the untrained SAE (centred on the data mean) misses.
    assert explained_variance(sae, x) > 0.6
    assert explained_variance(sae, x) > explained_variance(untrained, x) + 0.4
    assert l0(sae, x) <= 3
    assert not sae.training


def test_l1_training_keeps_unit_norm_decoder_and_reconstructs():
    x, _ = planted(seed=1)
    sae = L1SAE(16, 48, l1=1e-3)
    train_sae(sae, x, epochs=20, batch_size=256, lr=3e-3, show_progress=False)
    assert torch.allclose(sae.decoder.norm(dim=1), torch.ones(48), atol=1e-5)
    assert explained_variance(sae, x) > 0.9


def test_dead_latent_revival_lowers_the_dead_count():
    x, _ = planted(seed=2)
    sae = TopKSAE(16, 64, 3, seed=0)
    with torch.no_grad():  # kill half the latents: their pre-activation is never in the top k
        sae.b_enc[32:] = -100.0
    dead = dead_latents(sae, x)
    assert dead[32:].all()
    hist = finetune_dead_revival(sae, x, epochs=4, lr=1e-2, show_progress=False)
    assert hist["dead_before"] >= 32
    assert hist["dead_after"] < hist["dead_before"]


def test_top_activations_lists_strongest_rows_with_labels():
    sae = TopKSAE(3, 3, 1, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.tensor([[1.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0]])
    table = top_activations(sae, x, ["a", "b", "c", "d"], k=2)
    first = table[table.latent == 0].sort_values("rank")
    assert first.label.tolist() == ["b", "d"]
    assert table[table.latent == 1].label.tolist() == ["c"]
    assert 2 not in set(table.latent)


def test_bad_inputs_name_the_argument():
    sae = TopKSAE(4, 8, 2)
    with pytest.raises(InputError, match="4 features"):
        train_sae(sae, torch.randn(10, 5), show_progress=False)
    with pytest.raises(InputError, match="NaN"):
        train_sae(sae, torch.full((10, 4), float("nan")), show_progress=False)
    with pytest.raises(InputError, match="k_schedule"):
        train_sae(L1SAE(4, 8), torch.randn(10, 4), k_schedule=(4, 2, 0.5), show_progress=False)
    with pytest.raises(InputError, match="`k`"):
        TopKSAE(4, 8, 9)
    with pytest.raises(InputError, match="`labels`"):
        top_activations(sae, torch.randn(3, 4), ["a"])
