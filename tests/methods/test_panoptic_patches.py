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


# ------------------------------------------------------------------------------ full scale on local stand-ins


def _tiny_clip(path, image_size=28, patch=14):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        image_size=image_size, patch_size=patch, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=8,
    )  # fmt: skip
    CLIPVisionModel(cfg).save_pretrained(path)
    return path


def _write_genimage(root, generator="sdv14", split="train", n_ai=4, n_nature=5, size=(40, 30)):
    import numpy as np
    from PIL import Image

    for kind, n in (("ai", n_ai), ("nature", n_nature)):
        d = root / generator / split / kind
        d.mkdir(parents=True)
        for i in range(n):
            px = np.full((size[1], size[0], 3), (200 if kind == "ai" else 20) + i, dtype=np.uint8)
            Image.fromarray(px).save(d / f"{i:03d}.png")


def test_load_genimage_reads_pairs_into_aigi_data(tmp_path):
    _write_genimage(tmp_path)
    d = P.load_genimage(tmp_path, "sdv14", "train", image_size=28, patch=14, seed=0)
    assert len(d) == 4 and d.real.shape == (4, 3, 28, 28) and d.fake.shape == (4, 3, 28, 28)  # min(4 ai, 5 nature)
    assert d.n_patches == 4 and d.patch == 14 and d.variant == "genimage:sdv14"
    assert bool((d.strong_idx == -1).all()) and not bool(d.replaced.any()) and bool(d.weak_amp.isnan().all())
    # constant images: every fake is 200+i, every real 20+j (one each, no repeats), resize/crop keeps the value
    fakes = sorted(round(float(v) * 255) for v in d.fake[:, 0, 0, 0])
    reals = [round(float(v) * 255) for v in d.real[:, 0, 0, 0]]
    assert fakes == [200, 201, 202, 203] and len(set(reals)) == 4 and set(reals) <= set(range(20, 25))
    assert torch.allclose(d.fake, d.fake[:, :, :1, :1].expand_as(d.fake))
    assert len(P.load_genimage(tmp_path, "sdv14", image_size=28, max_images=2)) == 2
    m = P.mask_random_patches(d, frac=0.5, seed=1)
    assert m.replaced.sum(1).tolist() == [2] * 4
    grid = patch_grid(28, 14)
    for i in range(4):
        for p in range(4):
            src = d.real if bool(m.replaced[i, p]) else d.fake
            assert torch.equal(m.fake[i][:, grid == p], src[i][:, grid == p])


def test_load_genimage_names_the_folder_of_a_bad_layout(tmp_path):
    with pytest.raises(InputError, match=r"sdv14.*train.*ai.*\{ai,nature\}"):
        P.load_genimage(tmp_path, "sdv14", "train")
    (tmp_path / "g" / "val" / "ai").mkdir(parents=True)
    (tmp_path / "g" / "val" / "nature").mkdir(parents=True)
    with pytest.raises(InputError, match="no image file"):
        P.load_genimage(tmp_path, "g", "val")
    with pytest.raises(InputError, match="patch"):
        P.load_genimage(tmp_path, "g", "val", image_size=30, patch=14)


def test_clip_patch_detector_is_a_linear_head_on_frozen_patch_tokens(tmp_path):
    vision = P.load_clip_backbone(str(_tiny_clip(tmp_path / "clip")))
    det = P.CLIPPatchDetector(vision, proj_dim=4)
    assert det.patch == 14 and all(not q.requires_grad for q in det.vision.parameters())
    x = torch.rand(3, 3, 28, 28)
    feats = det.patch_features(x)
    assert feats.shape == (3, 4, 16)
    # by hand: CLIP normalisation, patch tokens of the last hidden state, post-layernorm, head, mean
    mean, std = torch.tensor(P.CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(P.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        h = vision(pixel_values=(x - mean) / std).last_hidden_state[:, 1:]
        expect = det.head(getattr(vision, "vision_model", vision).post_layernorm(h)).squeeze(-1).mean(1)
    torch.testing.assert_close(P.score(det, x), expect)
    torch.testing.assert_close(P.patch_logits(det, x).mean(1), expect)
    det.train()
    assert not det.vision.training
    with pytest.raises(InputError, match="image_size"):
        det.patch_features(torch.rand(1, 3, 32, 32))
    with pytest.raises(InputError, match="CLIPVisionModel"):
        P.CLIPPatchDetector(torch.nn.Linear(2, 2))


def test_full_path_end_to_end_on_stand_ins(tmp_path):
    # the notebook's scale="full" path: GenImage-style folders -> AIGIData -> CLIP detector arms -> evaluate
    clip = str(_tiny_clip(tmp_path / "clip"))
    for gen, split in (("sdv14", "train"), ("sdv14", "val"), ("midj", "val")):
        _write_genimage(tmp_path / "gi", gen, split, n_ai=6, n_nature=6)
    kw = dict(image_size=28, patch=14)
    train = P.load_genimage(tmp_path / "gi", "sdv14", "train", **kw)
    tid = P.load_genimage(tmp_path / "gi", "sdv14", "val", seed=1, **kw)
    tests = {"id": tid, "unseen": P.load_genimage(tmp_path / "gi", "midj", "val", seed=2, **kw),
             "masked": P.mask_random_patches(tid, seed=3)}  # fmt: skip
    vision = P.load_clip_backbone(clip)
    before = [q.clone() for q in vision.parameters()]
    out = {}
    for arm in ("naive", "ppl"):
        model, res = P.explain(
            train,
            tests,
            arm=arm,
            tde_on=tid,
            n_tde=3,
            epochs=2,
            batch_size=4,
            model_fn=lambda: P.CLIPPatchDetector(vision),
        )
        out[arm] = res
        assert isinstance(model, P.CLIPPatchDetector) and len(res["train"]["loss"]) == 2
        for name in ("id", "unseen", "masked"):
            assert 0 <= res[f"acc_{name}"] <= 1 and 0 <= res[f"ap_{name}"] <= 1
        assert res["tde"].shape == (3, 4) and 0 <= res["top1_share"] <= 1 and 0 <= res["gini"] <= 0.75
        assert "strong_share" not in res  # no planted strong patch in folder data
        # the TDE is the definition, re-scored by hand for one patch
        grid = patch_grid(28, 14)
        x = torch.where((grid == 2)[None, None], tid.real[:3], tid.fake[:3])
        torch.testing.assert_close(res["tde"][:, 2], P.score(model, tid.fake[:3]) - P.score(model, x))
    assert all(torch.equal(a, b) for a, b in zip(before, vision.parameters(), strict=True))  # the tower stayed frozen
    with pytest.raises(InputError, match="patch size"):
        P.train_detector(make_aigi_pairs(4, seed=0), epochs=1, model_fn=lambda: P.CLIPPatchDetector(vision))
