import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import panoptic_patches as P
from xattr_nb.worlds.generated_images import make_aigi_pairs, patch_grid


def test_tde_matches_the_definition_on_a_linear_score():
    # s(x) = <w, x>: the TDE of patch i is <w, (fake - real) restricted to patch i>, by hand
    torch.manual_seed(0)
    real, fake = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    w = torch.randn(3, 16, 16)
    tde = P.tde_per_patch(lambda x: (x * w).sum((1, 2, 3)), fake, real, patch=8)
    grid = patch_grid(16, 8)
    expect = torch.stack([((fake - real) * w * (grid == i)).sum((1, 2, 3)) for i in range(4)], 1)
    torch.testing.assert_close(tde, expect, atol=1e-4, rtol=1e-4)


def test_patch_bag_tde_is_exact():
    # patches never interact: TDE_i = (head(f(fake_i)) - head(f(real_i))) / P, and they sum to s(fake) - s(real)
    torch.manual_seed(1)
    model = P.PatchBagNet(patch=8, width=16).eval()
    d = make_aigi_pairs(4, seed=0)
    tde = P.tde_per_patch(lambda x: P.score(model, x), d.fake, d.real, 8)
    closed = (P.patch_logits(model, d.fake) - P.patch_logits(model, d.real)) / 16
    torch.testing.assert_close(tde, closed, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tde.sum(1), P.score(model, d.fake) - P.score(model, d.real), atol=1e-5, rtol=1e-4)
    # one entry against the definition, composed by hand
    grid = patch_grid(32, 8)
    x = d.fake.clone()
    x[:, :, grid == 5] = d.real[:, :, grid == 5]
    torch.testing.assert_close(tde[:, 5], P.score(model, d.fake) - P.score(model, x), atol=1e-5, rtol=1e-4)


def test_top1_share_and_gini_known_answers():
    one = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    flat = torch.ones(1, 4)
    assert float(P.top1_share(one)) == 1.0 and float(P.top1_share(flat)) == 0.25
    assert float(P.gini(one)) == pytest.approx(0.75) and float(P.gini(flat)) == pytest.approx(0.0)
    # negatives are not mass: [3, 1, -5, 0] -> top-1 share 3/4
    assert float(P.top1_share(torch.tensor([[3.0, 1.0, -5.0, 0.0]]))) == pytest.approx(0.75)
    assert float(P.gini(torch.zeros(1, 4))) == 0.0 and float(P.top1_share(torch.zeros(1, 4))) == 0.0


def test_rpr_fake_to_real_patches():
    d = make_aigi_pairs(64, seed=0)
    g = torch.Generator().manual_seed(0)
    x, synth = P.random_patch_replacement(d.real, d.fake, 8, p=1.0, frac=(0.25, 0.25), generator=g)
    grid = patch_grid(32, 8)
    assert (synth.sum(1) == 12).all()  # a quarter of 16 patches replaced in every image
    pix = synth[:, grid][:, None].expand_as(x)
    assert torch.equal(x[pix], d.fake[pix]) and torch.equal(x[~pix], d.real[~pix])
    x0, s0 = P.random_patch_replacement(d.real, d.fake, 8, p=0.0)
    assert torch.equal(x0, d.fake) and s0.all()


def test_rpr_real_plus_fake_patches():
    d = make_aigi_pairs(64, seed=0)
    g = torch.Generator().manual_seed(0)
    x, synth = P.random_patch_replacement(
        d.real, d.fake, 8, p=1.0, frac=(0.5, 0.5), mode="real+fake-patches", generator=g
    )
    assert (synth.sum(1) == 8).all()
    grid = patch_grid(32, 8)
    pix = synth[:, grid][:, None].expand_as(x)
    assert torch.equal(x[pix], d.fake[pix]) and torch.equal(x[~pix], d.real[~pix])


def test_patch_contrastive_loss_known_answers():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # same label, same direction -> 0; different labels, orthogonal (cos 0 < m) -> 0
    assert float(P.patch_contrastive_loss(torch.stack([a, a]), torch.tensor([1, 1]))) == pytest.approx(0.0)
    assert float(P.patch_contrastive_loss(torch.stack([a, b]), torch.tensor([1, 0]))) == pytest.approx(0.0)
    # different labels, same direction -> cos 1 - m = 0.7; same label, orthogonal -> 1 - 0 = 1
    assert float(P.patch_contrastive_loss(torch.stack([a, 2 * a]), torch.tensor([1, 0]))) == pytest.approx(0.7)
    assert float(P.patch_contrastive_loss(torch.stack([a, b]), torch.tensor([0, 0]))) == pytest.approx(1.0)
    # three patches: pairs (0,1) same -> 0, (0,2) and (1,2) different at cos 1 -> mean 0.7
    three = P.patch_contrastive_loss(torch.stack([a, a, a]), torch.tensor([1, 1, 0]))
    assert float(three) == pytest.approx(0.7)


def test_training_detects_and_measures():
    tr = make_aigi_pairs(300, weak_amp=0.03, sensor_noise=0.03, seed=0)
    te = make_aigi_pairs(100, seed=9)
    _, res = P.explain(tr, {"id": te}, arm="ppl", epochs=3, n_tde=20, seed=0)
    assert res["acc_id"] > 0.9
    assert res["tde"].shape == (20, 16)
    assert 1 / 16 <= res["top1_share"] <= 1 and 0 <= res["gini"] <= 1
    assert len(res["train"]["loss"]) == 3


def test_bad_inputs_name_the_argument():
    d = make_aigi_pairs(4, seed=0)
    with pytest.raises(InputError, match="arm"):
        P.arm_config("lazy")
    with pytest.raises(InputError, match="mode"):
        P.random_patch_replacement(d.real, d.fake, 8, mode="swap")
    with pytest.raises(InputError, match="fake"):
        P.random_patch_replacement(d.real, d.fake[:, :, :16], 8)
    with pytest.raises(InputError, match="labels"):
        P.patch_contrastive_loss(torch.randn(4, 3), torch.ones(3))
    with pytest.raises(InputError, match="train"):
        P.train_detector(d.real)
    with pytest.raises(InputError, match="x"):
        P.PatchBagNet(8)(torch.rand(1, 3, 30, 30))
    with pytest.raises(InputError, match="tests"):
        P.explain(d, {})
