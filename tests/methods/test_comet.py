"""COMET (paper 05): analytic checks of each step and one test per bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution import attribute
from xattr_nb.checks import InputError
from xattr_nb.methods import comet as C


def _twin_squares(n: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Black images with two red 3×3 squares each; the GT mask is their union."""
    x = torch.zeros(n, 3, size, size)
    gt = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        gt[i, 1 + i : 4 + i, 2:5] = True
        gt[i, 10:13, 9 + i % 3 : 12 + i % 3] = True
    x[:, 0][gt] = 0.9
    return x, gt


class _RedSelector(nn.Module):
    """Selects exactly the red pixels: logits +20 where the red channel is bright, −20 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, :1] > 0.5).float() - 20


class _RedCounter(nn.Module):
    """Class 1 if any red pixel is visible, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] > 0.8).flatten(1).any(1).float()
        return torch.stack([1 - red, red], 1) * 10


def _oracle(threshold: float = 0.5) -> C.CometModel:
    return C.CometModel(_RedSelector(), _RedCounter(), _RedCounter(), baseline=0.5, threshold=threshold).eval()


# ---------------------------------------------------------------------------- views and masks


def test_compose_views_extremes_and_sum():
    x = torch.rand(3, 3, 8, 8)
    ones, zeros = torch.ones(3, 8, 8), torch.zeros(3, 8, 8)
    xs, xc = C.compose_views(x, ones, 0.5)
    assert torch.equal(xs, x) and torch.all(xc == 0.5)
    xs, xc = C.compose_views(x, zeros, 0.5)
    assert torch.all(xs == 0.5) and torch.equal(xc, x)
    m = torch.rand(3, 8, 8)
    xs, xc = C.compose_views(x, m, 0.25)
    assert torch.allclose(xs + xc, x + 0.25)  # the two views split x and q between them


def test_compose_views_colour_baseline():
    x = torch.zeros(1, 3, 2, 2)
    _, xc = C.compose_views(x, torch.ones(1, 2, 2), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(xc[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))


def test_straight_through_value_and_gradient():
    m = torch.tensor([0.2, 0.5, 0.51, 0.9], requires_grad=True)
    out = C.straight_through(m)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0]
    out.sum().backward()
    assert torch.equal(m.grad, torch.ones(4))


def test_tiny_selector_shape_and_initial_mask():
    sel = C.TinySelector(init_bias=0.5)
    with torch.no_grad():
        sel.net[-1].weight.zero_()
    m = C.mask_of(sel, torch.rand(2, 3, 12, 12))
    assert m.shape == (2, 12, 12)
    assert torch.allclose(m, torch.full_like(m, torch.sigmoid(torch.tensor(0.5)).item()))


def test_topk_mask_exact():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    keep = C.topk_mask(maps, 0.25)
    assert keep.sum() == 4 and bool(keep[0, 3].all()) and not bool(keep[0, :3].any())


def test_topk_mask_per_image_fractions_match_another_mask_area():
    maps = torch.arange(32.0).reshape(2, 4, 4)
    keep = C.topk_mask(maps, torch.tensor([0.25, 0.5]))
    assert keep.flatten(1).sum(1).tolist() == [4, 8]
    assert bool(keep[0, 3].all()) and bool(keep[1, 2:].all()) and not bool(keep[1, :2].any())
    ties = C.topk_mask(torch.zeros(1, 2, 2), 0.5)  # ties broken by index: the first pixels win
    assert ties.flatten().tolist() == [True, True, False, False]


def test_split_copies_two_squares():
    _, gt = _twin_squares(2)
    parts = C.split_copies(gt)
    assert parts.shape == (2, 2, 16, 16)
    assert torch.equal(parts[:, 0] | parts[:, 1], gt)
    assert not bool((parts[:, 0] & parts[:, 1]).any())
    assert parts[:, 0].flatten(1).sum(1).tolist() == [9, 9]


# ---------------------------------------------------------------------------- holes


def test_random_holes_deterministic_and_nonempty():
    a = C.random_holes(20, 32, classes=("circle", "square"), seed=3)
    b = C.random_holes(20, 32, classes=("circle", "square"), seed=3)
    assert a.dtype == torch.bool and a.shape == (20, 32, 32)
    assert torch.equal(a, b)
    assert bool(a.flatten(1).any(1).all())  # every image gets at least one hole
    assert not torch.equal(a, C.random_holes(20, 32, classes=("circle", "square"), seed=4))


def test_hole_augment_p_zero_and_one():
    x = torch.rand(6, 3, 16, 16)
    assert torch.equal(C.hole_augment(x, classes=("circle",), p=0.0), x)
    out = C.hole_augment(x, classes=("circle",), p=1.0, baseline=0.5, seed=1)
    holes = (out == 0.5).all(1)
    assert bool(holes.flatten(1).any(1).all())
    keep = ~holes
    assert torch.equal(out.permute(0, 2, 3, 1)[keep], x.permute(0, 2, 3, 1)[keep])


# ---------------------------------------------------------------------------- objective


def test_comet_loss_terms_by_hand():
    logits_p = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    logits_d = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    y = torch.tensor([0, 1])
    m = torch.full((2, 4, 4), 0.7)
    t = C.comet_loss(logits_p, logits_d, y, m, a=4, gap=2, b=100, tau=0.6, beta=1.0)
    l_p = F.cross_entropy(logits_p, y)
    l_d = F.cross_entropy(logits_d, y)
    assert torch.isclose(t["l_p"], l_p) and torch.isclose(t["l_d"], l_d)
    assert torch.isclose(t["detector_term"], torch.relu(l_p - l_d + 2))
    assert torch.isclose(t["area_hinge"], torch.tensor(0.1), atol=1e-6)
    assert torch.isclose(t["l1"], torch.tensor(0.7))
    want = l_p + 4 * torch.relu(l_p - l_d + 2) + 100 * 0.1 + 0.7
    assert torch.isclose(t["selector"], want, atol=1e-5)
    assert torch.equal(t["predictor"], t["l_p"])


def test_comet_loss_hinge_switches_off_and_subtract_form():
    logits_p = torch.tensor([[5.0, 0.0]])  # l_p ≈ 0.0067
    logits_d = torch.tensor([[0.0, 5.0]])  # l_d ≈ 5.0067 > l_p + gap
    y, m = torch.tensor([0]), torch.zeros(1, 2, 2)
    t = C.comet_loss(logits_p, logits_d, y, m, a=4, gap=2, tau=0.6)
    assert t["detector_term"] == 0 and t["area_hinge"] == 0
    t = C.comet_loss(logits_p, logits_d, y, m, a=4, gap=2, tau=0.6, form="subtract")
    assert torch.isclose(t["detector_term"], -F.cross_entropy(logits_d, y))


def test_train_comet_deterministic_and_detector_untouched():
    x = torch.rand(8, 3, 8, 8)
    y = torch.arange(8) % 2
    torch.manual_seed(0)
    det = C.freeze(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)))
    before = [p.clone() for p in det.parameters()]
    kw = {"a": 4.0, "tau": 0.6, "epochs": 2, "warmup_epochs": 0, "batch_size": 8, "seed": 5, "show_progress": False}
    m1, h1 = C.train_comet(x, y, det, **kw)
    torch.manual_seed(1)  # a different global state must not matter: selector and predictor are seeded inside
    m2, h2 = C.train_comet(x, y, det, **kw)
    assert all(torch.equal(a, b) for a, b in zip(m1.selector.parameters(), m2.selector.parameters(), strict=True))
    assert h1.terms["selector"] == h2.terms["selector"] and h1.steps == 2
    assert all(torch.equal(a, b) for a, b in zip(before, det.parameters(), strict=True))


def test_selector_moves_after_warmup_and_warmup_must_leave_an_epoch():
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 2
    det = C.freeze(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)))
    torch.manual_seed(0)
    sel = C.TinySelector()
    start = [p.clone() for p in sel.parameters()]
    C.train_comet(x, y, det, selector=sel, predictor=nn.Sequential(nn.Flatten(), nn.Linear(192, 2)),
                  epochs=2, warmup_epochs=2 - 1, batch_size=8, show_progress=False)  # fmt: skip
    # one warm-up epoch (selector fixed), then one epoch where it moves
    assert not all(torch.equal(a, b) for a, b in zip(start, sel.parameters(), strict=True))
    sel2 = C.TinySelector()
    start2 = [p.clone() for p in sel2.parameters()]
    with pytest.raises(InputError, match="warmup_epochs"):
        C.train_comet(x, y, det, selector=sel2, epochs=1, warmup_epochs=1, show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(start2, sel2.parameters(), strict=True))


def test_predictor_from_detector_is_a_trainable_copy():
    det = C.freeze(nn.Linear(3, 2))
    pred = C.predictor_from_detector(det)
    assert pred.training and all(p.requires_grad for p in pred.parameters())
    assert torch.equal(pred.weight, det.weight) and pred.weight is not det.weight
    assert not any(p.requires_grad for p in det.parameters()) and not det.training


# ---------------------------------------------------------------------------- evaluation and explain


def test_evaluate_oracle_selector():
    x, gt = _twin_squares(4)
    y = torch.ones(4, dtype=torch.long)
    r = C.evaluate(_oracle(), x, y, gt)
    assert r["recall"].tolist() == [1.0] * 4 and r["both_copies"].tolist() == [1.0] * 4
    assert torch.allclose(r["iou"], torch.ones(4))
    assert torch.allclose(r["area"], torch.full((4,), 18 / 256))
    assert r["pred_correct"].tolist() == [1.0] * 4  # the red glyphs survive in x_s
    assert r["comp_correct"].tolist() == [0.0] * 4  # and nothing red is left in the complement


def test_evaluate_one_copy_is_not_both():
    x, gt = _twin_squares(2)
    x[:, 0, 10:13] = 0.0  # erase the second square from the image: the selector cannot pick it
    r = C.evaluate(_oracle(), x, torch.ones(2, dtype=torch.long), gt)
    assert r["both_copies"].tolist() == [0.0, 0.0]
    assert torch.allclose(r["recall"], torch.full((2,), 0.5))


def test_evaluate_masks_scores_any_mask_like_evaluate():
    x, gt = _twin_squares(3)
    y = torch.ones(3, dtype=torch.long)
    model = _oracle()
    r = C.evaluate(model, x, y, gt)
    same = C.evaluate_masks(model.detector, x, y, gt, x[:, 0] > 0.5, baseline=0.5)
    assert set(r) == {"pred_correct", *same} and all(torch.equal(r[k], v) for k, v in same.items())
    ones = C.evaluate_masks(_RedCounter(), x, y, gt, torch.ones_like(gt))  # the all-ones control
    assert ones["recall"].tolist() == [1.0] * 3 and ones["area"].tolist() == [1.0] * 3
    assert ones["comp_correct"].tolist() == [0.0] * 3  # nothing left to see in an all-q complement
    none = C.evaluate_masks(_RedCounter(), x, y, gt, torch.zeros_like(gt))
    assert none["comp_correct"].tolist() == [1.0] * 3 and none["recall"].tolist() == [0.0] * 3


def test_comet_model_is_buildable_from_its_config():
    from xattr_nb.models import build

    m = build({"arch": "CometModel", "kwargs": {"n_classes": 4, "in_ch": 3, "width": 8}})
    assert isinstance(m, C.CometModel) and isinstance(m.selector, C.TinySelector)
    assert not any(p.requires_grad for p in m.detector.parameters())  # the detector is frozen
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert isinstance(build({"arch": "TinySelector", "kwargs": {"width": 4}}), C.TinySelector)


def test_twin_shapes_has_two_copies_and_disjoint_splits():
    train, test = C.twin_shapes(40, 10, seed=3)
    assert len(train) == 40 and len(test) == 10 and train.images.shape[1:] == (3, 32, 32)
    assert C.split_copies(test.masks).flatten(2).any(-1).all()  # two non-empty copies per image
    flat = lambda d: {tuple(v.tolist()) for v in d.images.flatten(1)[:, ::37]}  # noqa: E731
    assert not flat(train) & flat(test)
    again, _ = C.twin_shapes(40, 10, seed=3)
    assert torch.equal(again.images, train.images)


def test_explain_and_registered_method_give_the_mask():
    x, _ = _twin_squares(2)
    model = _oracle()
    att = C.explain(model, x)
    assert att.kind == "pixels" and att.method == "comet"
    assert torch.equal(att.scores > 0.5, x[:, 0] > 0.5)
    assert att.target.tolist() == [1, 1]
    via = attribute(model, x, 1, method="comet")
    assert torch.allclose(via.scores, att.scores)


# ---------------------------------------------------------------------------- full scale stand-ins


def test_full_scale_models_from_local_stand_ins(tmp_path):
    from transformers import (
        MobileViTConfig,
        MobileViTForSemanticSegmentation,
        ResNetConfig,
        ResNetForImageClassification,
    )

    rc = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3, layer_type="basic")
    ResNetForImageClassification(rc).save_pretrained(tmp_path / "res")
    mc = MobileViTConfig(image_size=32, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
                         num_attention_heads=2, num_labels=2, aspp_out_channels=8)  # fmt: skip
    MobileViTForSemanticSegmentation(mc).save_pretrained(tmp_path / "seg")
    sel, pred, det = C.full_scale_models(3, selector=tmp_path / "seg", backbone=tmp_path / "res", local_files_only=True)
    x = torch.rand(2, 3, 32, 32)
    assert C.mask_of(sel, x).shape == (2, 32, 32)
    assert pred(x).shape == (2, 3) and det(x).shape == (2, 3)
    saved = ResNetForImageClassification.from_pretrained(tmp_path / "res")
    # the detector starts from the checkpoint, the predictor from scratch
    w = "resnet.embedder.embedder.convolution.weight"
    assert torch.equal(det.hf.state_dict()[w], saved.state_dict()[w])
    assert not torch.equal(pred.hf.state_dict()[w], saved.state_dict()[w])


# ---------------------------------------------------------------------------- bad inputs


def test_bad_mask_shape():
    with pytest.raises(InputError, match="`m` must be"):
        C.compose_views(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 4))


def test_bad_mask_range():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        C.compose_views(torch.rand(1, 3, 4, 4), torch.full((1, 4, 4), 1.5))


def test_bad_baseline_channels():
    with pytest.raises(InputError, match="baseline"):
        C.compose_views(torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4), torch.tensor([0.5, 0.5]))


def test_bad_images_ndim():
    with pytest.raises(InputError, match="`x`"):
        C.compose_views(torch.rand(3, 4, 4), torch.ones(1, 4, 4))


def test_bad_logits_mismatch():
    with pytest.raises(InputError, match="logits_d"):
        C.comet_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), torch.zeros(2, 2, 2))


def test_bad_label_out_of_range():
    with pytest.raises(InputError, match="`y` must lie"):
        C.comet_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3]), torch.zeros(2, 2, 2))


def test_bad_form():
    with pytest.raises(InputError, match="form"):
        C.comet_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2, 2), form="minus")


def test_bad_tau():
    with pytest.raises(InputError, match="tau"):
        C.comet_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2, 2), tau=1.5)


def test_bad_hole_class():
    with pytest.raises(InputError, match="unknown shape"):
        C.random_holes(2, 16, classes=("blob",))


def test_bad_hole_images_not_square():
    with pytest.raises(InputError, match="square"):
        C.hole_augment(torch.rand(2, 3, 8, 12), classes=("circle",))


def test_bad_train_labels_beyond_detector():
    det = C.freeze(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)))
    with pytest.raises(InputError, match="detector"):
        C.train_comet(torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0]), det, epochs=2, show_progress=False)


def test_bad_selector_output():
    with pytest.raises(InputError, match="one logit map"):
        C.mask_of(nn.Conv2d(3, 2, 1), torch.rand(1, 3, 4, 4))


def test_bad_evaluate_model():
    x, gt = _twin_squares(1)
    with pytest.raises(InputError, match="CometModel"):
        C.evaluate(nn.Identity(), x, torch.tensor([1]), gt)


def test_bad_evaluate_gt_shape():
    x, gt = _twin_squares(2)
    with pytest.raises(InputError, match="`gt`"):
        C.evaluate(_oracle(), x, torch.tensor([1, 1]), gt[:1])


def test_bad_explain_model():
    with pytest.raises(InputError, match="CometModel"):
        C.explain(nn.Identity(), torch.rand(1, 3, 4, 4))


def test_bad_comet_method_model():
    with pytest.raises(InputError, match="CometModel"):
        attribute(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval(), torch.rand(1, 3, 4, 4), 0, method="comet")


def test_bad_topk_fraction():
    with pytest.raises(InputError, match="fraction"):
        C.topk_mask(torch.rand(1, 4, 4), 1.5)


def test_bad_topk_per_image_fraction():
    with pytest.raises(InputError, match="fraction"):
        C.topk_mask(torch.rand(2, 4, 4), torch.tensor([0.5, -0.1]))
    with pytest.raises(InputError, match="fraction"):
        C.topk_mask(torch.rand(2, 4, 4), torch.tensor([0.5]))


def test_bad_evaluate_masks_shape():
    x, gt = _twin_squares(2)
    with pytest.raises(InputError, match="`masks`"):
        C.evaluate_masks(_RedCounter(), x, torch.ones(2, dtype=torch.long), gt, gt[:1])


def test_bad_split_copies_dtype():
    with pytest.raises(InputError, match="boolean"):
        C.split_copies(torch.rand(1, 4, 4))


def test_bad_full_scale_name(tmp_path):
    with pytest.raises(InputError, match="cannot load selector"):
        C.full_scale_models(3, selector=tmp_path / "nope", backbone=tmp_path / "nope", local_files_only=True)


def test_bad_selector_width():
    with pytest.raises(InputError, match="width"):
        C.TinySelector(width=0)


def test_bad_seed_type():
    with pytest.raises(InputError, match="seed"):
        C.random_holes(2, 16, classes=("circle",), seed=1.5)


def test_np_seed_is_accepted():
    assert C.random_holes(2, 16, classes=("circle",), seed=np.int64(2)).shape == (2, 16, 16)


class _BrightCounter(nn.Module):
    """Two classes; logit of class 0 = number of bright pixels (> 0.5), class 1 = 0: p(0) = σ(n_bright)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = (x[:, 0] > 0.5).flatten(1).float().sum(1)
        return torch.stack([n, torch.zeros_like(n)], 1)


def _bright_images(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` copies of a 4×4 black image with a bright 2×2 block (the evidence R), labels 0, and R."""
    x = torch.zeros(n, 1, 4, 4)
    region = torch.zeros(n, 4, 4, dtype=torch.bool)
    region[:, 1:3, 1:3] = True
    x[:, 0][region] = 1.0
    return x, torch.zeros(n, dtype=torch.long), region


def _sig(v: float) -> float:
    return 1 / (1 + np.exp(-v))


def test_comprehensiveness_by_hand():
    x, y, region = _bright_images(3)
    masks = torch.zeros_like(region)
    masks[0] = region[0]  # all the evidence: p drops from σ(4) to σ(0)
    masks[1, 1, 1:3] = True  # half of it: σ(4) − σ(2)
    masks[2, 0, :] = True  # dark pixels only: nothing changes
    c = C.comprehensiveness(_BrightCounter(), x, y, masks, baseline=0.0)
    expected = torch.tensor([_sig(4) - 0.5, _sig(4) - _sig(2), 0.0])
    assert torch.allclose(c.double(), expected.double(), atol=1e-6)


def test_area_normalised_comprehensiveness_is_zero_for_all_ones_and_empty_masks():
    x, y, region = _bright_images(2)
    det = _BrightCounter()
    for masks in (torch.ones_like(region), torch.zeros_like(region)):
        c = C.area_normalised_comprehensiveness(det, x, y, masks, baseline=0.0, n_random=3)
        assert torch.equal(c, torch.zeros(2))
    # the all-ones mask has the largest raw comprehensiveness, and no area-normalised credit
    assert float(C.comprehensiveness(det, x, y, torch.ones_like(region), baseline=0.0)[0]) == pytest.approx(
        _sig(4) - 0.5
    )


def test_area_normalised_comprehensiveness_matches_the_hypergeometric_expectation():
    from math import comb

    x, y, region = _bright_images(400)
    det = _BrightCounter()
    got = C.area_normalised_comprehensiveness(det, x, y, region, baseline=0.0, n_random=25, seed=1).mean()
    # a random 4-pixel mask of 16 removes H ~ Hypergeometric(16, 4, 4) of the 4 bright pixels
    p_h = [comb(4, h) * comb(12, 4 - h) / comb(16, 4) for h in range(5)]
    ref = sum(p * (_sig(4) - _sig(4 - h)) for h, p in enumerate(p_h))
    assert float(got) == pytest.approx((_sig(4) - 0.5) - ref, abs=0.015)
    # a bigger mask with the same evidence has the same raw comprehensiveness and less area-normalised credit
    bigger = region.clone()
    bigger[:, 0, :] = True
    bigger[:, 3, :] = True
    raw_r, raw_b = (C.comprehensiveness(det, x[:1], y[:1], m[:1], baseline=0.0) for m in (region, bigger))
    assert torch.equal(raw_r, raw_b)
    norm_b = C.area_normalised_comprehensiveness(det, x, y, bigger, baseline=0.0, n_random=25, seed=1).mean()
    assert float(norm_b) < float(got) - 0.1
    # random masks earn nothing on average
    rand = C.topk_mask(torch.rand(region.shape, generator=torch.Generator().manual_seed(3)), 0.25)
    norm_r = C.area_normalised_comprehensiveness(det, x, y, rand, baseline=0.0, n_random=25, seed=1).mean()
    assert abs(float(norm_r)) < 0.02


def test_bad_comprehensiveness_masks():
    x, y, region = _bright_images(2)
    with pytest.raises(InputError, match="masks"):
        C.comprehensiveness(_BrightCounter(), x, y, region[:, :3], baseline=0.0)
    with pytest.raises(InputError, match="masks"):
        C.area_normalised_comprehensiveness(_BrightCounter(), x, y, region.float(), baseline=0.0)


def test_bad_n_random():
    x, y, region = _bright_images(2)
    with pytest.raises(InputError, match="n_random"):
        C.area_normalised_comprehensiveness(_BrightCounter(), x, y, region, baseline=0.0, n_random=0)


def test_beta_ramp_starts_the_sparsity_at_zero():
    x, _ = _twin_squares(8)
    y = torch.tensor([0, 1] * 4)
    det = C.freeze(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)))
    kw = {"a": 0.0, "beta": 2.0, "epochs": 3, "warmup_epochs": 1, "batch_size": 4, "seed": 0, "show_progress": False}
    _, hist = C.train_comet(x, y, det, predictor=nn.Sequential(nn.Flatten(), nn.Linear(768, 2)),
                            beta_ramp_epochs=2, **kw)  # fmt: skip
    # two batches an epoch: warm-up at 0; then 0 and 2·0.5/2 (mean 0.25); then 2·1/2 and 2·1.5/2 (mean 1.25)
    assert hist.terms["beta"] == pytest.approx([0.0, 0.25, 1.25])
    _, flat = C.train_comet(x, y, det, predictor=nn.Sequential(nn.Flatten(), nn.Linear(768, 2)), **kw)
    assert flat.terms["beta"] == pytest.approx([2.0, 2.0, 2.0])
    with pytest.raises(InputError, match="beta_ramp_epochs"):
        C.train_comet(x, y, det, beta_ramp_epochs=-1.0, **kw)


# ---------------------------------------------------------------------------- the sparse setting's aids


def test_normalised_selector_logits_are_z_scores_plus_the_offset():
    torch.manual_seed(0)
    sel = C.TinySelector(init_bias=-0.5, normalise=True)
    x = torch.rand(3, 3, 16, 16)
    logits, raw = sel(x)[:, 0], sel.net[:-1](x - 0.5)[:, 0]  # after and before the normalisation
    assert torch.allclose(logits.mean((1, 2)), torch.full((3,), -0.5), atol=1e-5)
    v = raw.var((1, 2), unbiased=False)  # z-scores: variance v / (v + eps), eps = 1e-5 (InstanceNorm's)
    assert torch.allclose(logits.var((1, 2), unbiased=False), v / (v + 1e-5), rtol=1e-3)
    assert torch.equal(logits.flatten(1).argsort(1), raw.flatten(1).argsort(1))  # the ranking is the convolutions'
    # a uniform shift of the convolutions' output cannot change the mask: only the offset sets the area
    with torch.no_grad():
        sel.net[-2].bias += 5.0
    assert torch.allclose(sel(torch.rand(1, 3, 16, 16))[:, 0].mean(), torch.tensor(-0.5), atol=1e-5)
    with pytest.raises(InputError, match="normalise"):
        C.TinySelector(normalise=1)


class _ConstSelector(nn.Module):
    """Every pixel's logit is one learnt number (0.3: soft mask 0.574, binarised mask 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c * torch.ones_like(x[:, :1])


def test_area_on_selected_measures_the_binarised_mask():
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 2
    det = C.freeze(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)))
    kw = {"tau": 0.1, "epochs": 2, "warmup_epochs": 1, "batch_size": 8, "show_progress": False}
    soft_m = torch.sigmoid(torch.tensor(0.3)).item()
    _, hs = C.train_comet(x, y, det, selector=_ConstSelector(), area_on="soft", **kw)
    _, hh = C.train_comet(x, y, det, selector=_ConstSelector(), area_on="selected", **kw)
    # first epoch: the selector has not moved (warm-up), so the terms are known exactly
    assert hs.terms["area_hinge"][0] == pytest.approx(soft_m - 0.1, abs=1e-6)
    assert hh.terms["area_hinge"][0] == pytest.approx(1.0 - 0.1, abs=1e-6)
    assert hh.terms["l1"][0] == pytest.approx(1.0) and hh.terms["selected_area"][0] == 1.0
    with pytest.raises(InputError, match="area_on"):
        C.train_comet(x, y, det, area_on="hard", **kw)
    with pytest.raises(InputError, match="straight_through"):
        C.train_comet(x, y, det, area_on="selected", straight_through=False, **kw)
