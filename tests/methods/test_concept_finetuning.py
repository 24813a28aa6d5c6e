"""Tests of xattr_nb.methods.concept_finetuning (CFT, paper 16) and its zoo recipe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError
from xattr_nb.methods import concept_finetuning as cft
from xattr_nb.models import load_image_model
from xattr_nb.models.vision import TinyViT


@pytest.fixture(scope="module")
def small_data():
    return cft.make_data(n_train=40, n_id=24, n_ood=24, n_ft_pool=80, seed=3)


def _tiny_vit(depth=1, n_classes=4, seed=0):
    return cft.make_vit(n_classes, seed=seed, dim=16, depth=depth, heads=2).double()


# ------------------------------------------------------------------------------ the world


def test_make_data_ties_the_texture_in_id_and_not_in_ood():
    d = cft.make_data(n_train=400, n_id=40, n_ood=400, n_ft_pool=40, seed=1)
    tr, ood = d["train"], d["ood"]
    assert tr.background_names == cft.TEXTURES
    tied = (tr.backgrounds == tr.labels).float().mean()
    assert 0.88 < float(tied) < 0.97  # 0.9 tied + 0.1 * 1/4 by chance
    assert abs(float((ood.backgrounds == ood.labels).float().mean()) - 0.25) < 0.07
    assert not bool(ood.spurious.any())
    # the concept is a part of the foreground, and every class has the same square body
    assert bool((tr.part_masks <= tr.masks).all()) and bool(tr.part_masks.any((1, 2)).all())
    assert set(tr.shape_ids.tolist()) == {1}  # SHAPES[1] == "square"


def test_finetune_set_takes_half_the_classes(small_data):
    ft, trained, held = cft.finetune_set(small_data["pool"], per_class=5, seed=4)
    assert len(trained) == 2 and len(held) == 2 and not set(trained) & set(held)
    assert sorted(ft.labels.tolist()) == sorted([c for c in trained for _ in range(5)])
    with pytest.raises(InputError, match="per_class"):
        cft.finetune_set(small_data["pool"], per_class=500, seed=4)


# ------------------------------------------------------------------------------ relevance


def test_rollout_matches_a_hand_computation():
    # one image, T = 2 tokens, 2 heads; block 1 then block 2
    a1 = torch.tensor([[[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.4, 0.6]]]])
    g1 = torch.tensor([[[[2.0, -1.0], [1.0, 1.0]], [[1.0, 3.0], [-1.0, 0.5]]]])
    # ReLU(g ⊙ A): head 0 [[1, 0], [.2, .8]], head 1 [[1, 0], [0, .3]] -> mean [[1, 0], [.1, .55]]
    c1 = torch.tensor([[1.0, 0.0], [0.1, 0.55]])
    a2 = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]], [[0.25, 0.75], [0.5, 0.5]]]])
    g2 = torch.ones_like(a2)
    c2 = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    eye = torch.eye(2)
    want = (eye + c2) @ (eye + c1)
    got = cft.rollout([a1, a2], [g1, g2])
    assert torch.allclose(got[0], want)
    assert torch.allclose(cft.rollout([a1], [g1])[0], eye + c1)


def test_rollout_is_differentiable_in_the_maps():
    torch.manual_seed(0)
    maps = [torch.rand(2, 2, 5, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    grads = [torch.rand(2, 2, 5, 5, dtype=torch.float64) + 0.1 for _ in range(2)]  # positive: away from ReLU's kink
    assert torch.autograd.gradcheck(lambda a, b: cft.rollout([a, b], grads)[:, 0, 1:], tuple(maps))
    # where g ⊙ A < 0 the ReLU kills the gradient: no flow from that entry
    neg = [-g for g in grads]
    out = cft.rollout([maps[0]], [neg[0]]).sum()
    (gr,) = torch.autograd.grad(out, maps[0])
    assert float(gr.abs().max()) == 0.0


def test_relevance_equals_a_hand_computation_on_one_block():
    model = _tiny_vit(depth=1).eval()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    # by hand: keep the attention, retain its gradient, backprop the target logits
    logits = model(x, keep_attn=False)
    model.keep_attn = True
    logits = model(x)
    attn = model.blocks[0].attn.last_attn
    attn.retain_grad()
    logits.gather(1, target[:, None]).sum().backward()
    cam = (attn.grad * attn).clamp_min(0).mean(1)  # R = I + cam; CLS's row over the patches is cam[:, 0, 1:]
    model.keep_attn = False
    r = cam[:, 0, 1:].reshape(3, 1, 8, 8).detach()
    r = F.interpolate(r, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    lo = r.flatten(1).min(1).values[:, None, None]
    hi = r.flatten(1).max(1).values[:, None, None]
    want = (r - lo) / (hi - lo + 1e-8)
    got, lg = cft.relevance(model, x, target)
    assert torch.allclose(got.detach(), want, atol=1e-10)
    assert torch.allclose(lg.detach(), logits.detach())
    raw, _ = cft.relevance(model, x, target, normalize=False, out_size=8)
    assert raw.shape == (3, 8, 8) and torch.allclose(raw.detach(), cam[:, 0, 1:].reshape(3, 8, 8).detach())


def test_relevance_stays_in_the_graph_and_its_loss_trains_attention():
    model = _tiny_vit(depth=2)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    rel, logits = cft.relevance(model, x)
    assert rel.requires_grad and float(rel.detach().min()) >= 0 and float(rel.detach().max()) <= 1 + 1e-9
    mask = torch.zeros(4, 32, 32, dtype=torch.bool)
    mask[:, :8] = True
    terms = cft.cft_loss(rel, mask, logits)
    model.zero_grad()
    (terms["ctx"] + terms["concept"]).backward()
    # only the attention path reaches the relevance: the query/key weights get a gradient
    assert float(model.blocks[0].attn.qkv.weight.grad.abs().sum()) > 0
    # a finite-difference check of the alignment loss along the qkv weights, with the rollout's
    # gradients held at their values (the official rule: they are constants)
    w = model.blocks[1].attn.qkv.weight
    direction = torch.randn_like(w)
    analytic = float((w.grad * direction).sum())

    def align_loss():
        logits, maps, grid = cft.attention_maps(model, x)
        return maps, logits, grid

    maps, logits, grid = align_loss()
    y = logits.gather(1, logits.argmax(-1)[:, None]).sum()
    fixed = [g.detach() for g in torch.autograd.grad(y, maps)]

    def loss_at(eps):
        with torch.no_grad():
            w.add_(eps * direction)
        try:
            with torch.no_grad():
                _, mp, _ = cft.attention_maps(model, x)
                r = cft.rollout(mp, fixed)[:, 0, 1:].reshape(-1, 1, grid, grid)
                r = F.interpolate(r, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
                r = cft._minmax(r)
                t = cft.cft_loss(r, mask, logits.detach())
            return float(t["ctx"] + t["concept"])
        finally:
            with torch.no_grad():
                w.sub_(eps * direction)

    eps = 1e-6
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-9)


def test_relevance_errors_name_the_argument():
    model = _tiny_vit().float()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="target"):
        cft.relevance(model, x, torch.tensor([0, 9]))
    with pytest.raises(InputError, match="model"):
        cft.relevance(torch.nn.Linear(3, 4), x)
    with pytest.raises(InputError, match="maps"):
        cft.rollout([], [])
    with pytest.raises(InputError, match="grads"):
        cft.rollout([torch.rand(1, 2, 3, 3)], [torch.rand(1, 2, 4, 4)])


# ------------------------------------------------------------------------------ loss


def test_cft_loss_known_values():
    rel = torch.full((2, 4, 4), 0.5)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True  # half of the pixels
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = cft.cft_loss(rel, mask, logits)
    half_log2 = 0.5 * math.log(2)
    assert float(t["ctx"]) == pytest.approx(half_log2, rel=1e-6)  # outside: -log(1 - 0.5); inside: 0
    assert float(t["concept"]) == pytest.approx(half_log2, rel=1e-6)  # inside: -log 0.5; outside: 0
    ce = float(F.cross_entropy(logits, torch.tensor([0, 1])))  # pseudo-labels = own top-1
    assert float(t["cls"]) == pytest.approx(ce)
    assert float(t["total"]) == pytest.approx(0.8 * (1.2 * half_log2 + 0.5 * half_log2) + 0.2 * ce, rel=1e-6)
    # relevance exactly on the mask and nothing else: both alignment terms vanish
    t2 = cft.cft_loss(mask.float(), mask, logits)
    assert float(t2["ctx"]) == pytest.approx(0.0, abs=1e-6) and float(t2["concept"]) == pytest.approx(0.0, abs=1e-6)
    t3 = cft.cft_loss(None, None, logits)
    assert float(t3["total"]) == pytest.approx(0.2 * ce)
    with pytest.raises(InputError, match="rel"):
        cft.cft_loss(rel * 3, mask, logits)
    with pytest.raises(InputError, match="mask"):
        cft.cft_loss(rel, mask[:, :2], logits)


def test_relevance_fractions_by_hand():
    rel = torch.zeros(1, 2, 2)
    rel[0, 0, 0], rel[0, 1, 1] = 3.0, 1.0
    m = torch.zeros(1, 2, 2, dtype=torch.bool)
    m[0, 0, 0] = True
    fr = cft.relevance_fractions(rel, {"a": m, "rest": ~m})
    assert float(fr["a"]) == pytest.approx(0.75) and float(fr["rest"]) == pytest.approx(0.25)


# ------------------------------------------------------------------------------ fine-tuning and evaluation


def test_finetune_moves_relevance_toward_the_mask_and_leaves_the_input_model(small_data):
    base = load_image_model("cpu", small="cft_vit_erm")
    ft, _, _ = cft.finetune_set(small_data["pool"], per_class=8, seed=0)

    def ctx(m):  # the context term on the whole fine-tuning set
        r, lg = cft.relevance(m, ft.images)
        return float(cft.cft_loss(r.detach(), ft.part_masks, lg.detach())["ctx"])

    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned, _ = cft.finetune(base, ft, mode="concept", steps=30, batch_size=8, lr=1e-3, seed=0, show_progress=False)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # a copy was tuned
    assert ctx(tuned) < 0.5 * ctx(base)
    _, h2 = cft.finetune(base, ft, mode="cls", steps=3, batch_size=8, seed=0, show_progress=False)
    assert h2["ctx"] == [0.0] * 3 and h2["concept"] == [0.0] * 3
    ev = cft.evaluate(tuned, small_data["ood"], held_out=(1, 3))
    for k in ("acc", "bg", "body", "concept", "pointing", "acc_held", "bg_trained"):
        assert 0.0 <= ev[k] <= 1.0
    assert ev["bg"] + ev["body"] + ev["concept"] == pytest.approx(1.0, abs=1e-5)
    area = float((~small_data["ood"].masks).float().mean())
    assert ev["bg_area"] == pytest.approx(area, abs=1e-6) and 0.5 < area < 1.0
    with pytest.raises(InputError, match="mode"):
        cft.finetune(base, ft, mode="labels")
    with pytest.raises(InputError, match="lambdas"):
        cft.finetune(base, ft, lambdas={"lam_foo": 1.0})
    arms = cft.evaluate_arms({"a": base}, {"ood": small_data["ood"]})
    assert set(arms) == {"a"} and "ood.acc" in arms["a"]


def test_explain_returns_pixel_attribution():
    model = _tiny_vit().float()
    x = torch.rand(2, 3, 32, 32)
    att = cft.explain(model, x)
    assert isinstance(att, Attribution) and att.kind == "pixels" and att.scores.shape == (2, 32, 32)
    assert att.cost.forward == 2 and att.cost.backward == 2
    assert torch.equal(att.target, model(x).argmax(-1))


# ------------------------------------------------------------------------------ full scale on a local stand-in


def test_full_scale_path_on_a_saved_hf_vit(tmp_path, small_data):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=4,
    )  # fmt: skip
    ViTForImageClassification(cfg).save_pretrained(tmp_path)
    model = load_image_model("full", small="cft_vit_erm", full=str(tmp_path))
    x = small_data["ood"].images[:3]
    rel, logits = cft.relevance(model, x)
    assert rel.shape == (3, 32, 32) and logits.shape == (3, 4)
    # one block: the map is ReLU(∂y/∂A ⊙ A) averaged over heads, CLS row, from HF's own attentions
    out = model.hf(pixel_values=model.normalize(x), output_attentions=True)
    (a,) = out.attentions
    (g,) = torch.autograd.grad(out.logits.gather(1, out.logits.argmax(-1)[:, None]).sum(), [a])
    raw = (g * a).clamp_min(0).mean(1)[:, 0, 1:].reshape(3, 4, 4)
    got, _ = cft.relevance(model, x, normalize=False, out_size=4)
    assert torch.allclose(got.detach(), raw.detach(), atol=1e-6)
    ft, _, _ = cft.finetune_set(small_data["pool"], per_class=2, seed=0)
    _, hist = cft.finetune(model, ft, mode="fg", steps=2, batch_size=4, seed=0, show_progress=False)
    assert len(hist["total"]) == 2 and all(math.isfinite(v) for v in hist["total"])


# ------------------------------------------------------------------------------ zoo recipe


def test_shipped_base_model_matches_its_recipe_config():
    from xattr_nb.models import cft_recipes

    model = load_image_model("cpu", small="cft_vit_erm")
    assert isinstance(model, TinyViT)
    assert model.arch_config == cft_recipes.CFT_VIT_CONFIG
    d = cft.make_data(n_train=8, n_id=8, n_ood=200, n_ft_pool=8, seed=0)
    from xattr_nb.models.fit import accuracy

    assert accuracy(model, d["ood"].images, d["ood"].labels) < 0.9  # the shortcut: OOD well below ID


# ------------------------------------------------------------------------------ full-scale folders (a written stand-in)


def _write_imagenet_like(
    root, *, classes=("n01", "n02"), n_train=3, n_val=2, n_masked=2, ood=False, objects=False, size=32
):
    """Flat-colour images; concept masks (8x8 squares) on masked train images and every val image (none with
    ``ood``); with ``objects``, a 16x16 object mask around each concept mask."""
    import numpy as np
    from PIL import Image

    for ci, c in enumerate(classes):
        for split, n in (("train", n_train), ("val", n_val)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                px = np.full((size, size, 3), 40 * ci + 10 * i, dtype=np.uint8)
                Image.fromarray(px).save(d / f"{c}_{split}_{i}.JPEG", format="PNG")  # lossless, any suffix
                if ood or (split == "train" and i >= n_masked):
                    continue
                m = np.zeros((size, size), dtype=np.uint8)
                m[8:16, 4 + 4 * i : 12 + 4 * i] = 255  # an 8x8 concept square
                (root / "masks" / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(root / "masks" / c / f"{c}_{split}_{i}.png")
                if objects:
                    o = np.zeros((size, size), dtype=np.uint8)
                    o[4:20, 4 * i : 16 + 4 * i] = 255  # the object holds its concept
                    (root / "objects" / c).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(o).save(root / "objects" / c / f"{c}_{split}_{i}.png")


def test_load_folders_reads_images_labels_and_concept_masks(tmp_path):
    _write_imagenet_like(tmp_path / "in")
    _write_imagenet_like(tmp_path / "ood", ood=True)
    d = cft.load_folders(tmp_path / "in", ood_root=tmp_path / "ood", image_size=32)
    assert set(d) == {"train", "id", "pool", "ood"}
    tr, pool, idd, ood = d["train"], d["pool"], d["id"], d["ood"]
    assert tr.classes == ("n01", "n02") and tr.images.shape == (6, 3, 32, 32)
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(tr.images[4], torch.full((3, 32, 32), 50 / 255))  # class 1, image 1: value 40 + 10
    assert tr.part_masks is None  # one train image per class has no mask
    assert len(pool) == 4 and pool.part_masks.shape == (4, 32, 32)  # only the masked ones
    assert pool.part_masks.sum((1, 2)).tolist() == [64] * 4 and bool(pool.part_masks[1, 8, 8])
    assert torch.equal(pool.masks, pool.part_masks) and idd.part_masks is not None
    assert ood.part_masks is None and ood.labels.tolist() == [0, 0, 1, 1]
    assert len(cft.load_image_folder(tmp_path / "in", "train", image_size=32, max_per_class=1)) == 2


def test_load_folders_rejects_a_bad_layout(tmp_path):
    with pytest.raises(InputError, match="train"):
        cft.load_image_folder(tmp_path, "train")
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(InputError, match="no image file"):
        cft.load_image_folder(tmp_path, "train")
    with pytest.raises(InputError, match="masks"):
        cft.load_folders(tmp_path)
    _write_imagenet_like(tmp_path / "b")
    with pytest.raises(InputError, match="not in `classes`"):
        cft.load_image_folder(tmp_path / "b", "train", classes=("n01",))


def test_folder_data_runs_finetuning_and_evaluation(tmp_path):
    _write_imagenet_like(tmp_path / "in", n_train=4, n_masked=3)
    _write_imagenet_like(tmp_path / "ood", ood=True)
    d = cft.load_folders(tmp_path / "in", ood_root=tmp_path / "ood", image_size=32)
    model = cft.make_vit(2, seed=0, dim=16, depth=1, heads=2)
    ft, trained, held = cft.finetune_set(d["pool"], per_class=3, seed=0)
    assert len(ft) == 3 and set(ft.labels.tolist()) == set(trained)
    tuned, hist = cft.finetune(model, ft, mode="concept", steps=2, batch_size=2, seed=0, show_progress=False)
    assert all(math.isfinite(v) for v in hist["total"])
    res = cft.evaluate_arms({"ERM": model, "CFT": tuned}, {"id": d["id"], "ood": d["ood"]}, held_out=held)
    r = res["CFT"]
    assert 0 <= r["id.acc"] <= 1 and abs(r["id.bg"] + r["id.body"] + r["id.concept"] - 1) < 1e-5
    assert r["id.body"] == 0  # the foreground is the concept: no body pixels
    assert "ood.bg" not in r and r["ood.acc"] == pytest.approx((r["ood.acc_held"] + r["ood.acc_trained"]) / 2)
    pred = model(d["ood"].images).argmax(-1)
    assert res["ERM"]["ood.acc"] == pytest.approx(float((pred == d["ood"].labels).float().mean()))


def test_label_order_reads_id2label_and_ignores_default_names(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    kw = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=32)  # fmt: skip
    names = ("n03", "n01", "n04", "n02")
    cfg = ViTConfig(**kw, num_labels=4, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "named")
    ViTForImageClassification(ViTConfig(**kw, num_labels=3)).save_pretrained(tmp_path / "plain")
    assert cft.label_order(load_image_model("full", small="cft_vit_erm", full=str(tmp_path / "named"))) == names
    assert cft.label_order(load_image_model("full", small="cft_vit_erm", full=str(tmp_path / "plain"))) is None
    assert cft.label_order(_tiny_vit()) is None


def test_full_scale_end_to_end_on_a_saved_vit_and_written_folders(tmp_path):
    """The notebook's full-scale path: a pretrained-style ViT with its own label order, folders with concept
    and object masks, an OOD folder with neither; four arms fine-tuned and evaluated."""
    import shutil

    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    names = ("n03", "n01", "n04", "n02", "n09")  # the model's order; n09 has no folder
    cfg = ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_labels=5, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit")
    model = load_image_model("full", small="cft_vit_erm", full=str(tmp_path / "vit"))
    folders = ("n01", "n02", "n03", "n04")
    _write_imagenet_like(tmp_path / "in", classes=folders, n_train=4, n_masked=3, objects=True)
    _write_imagenet_like(tmp_path / "ood", classes=folders, ood=True)
    d = cft.load_folders(tmp_path / "in", ood_root=tmp_path / "ood", classes=cft.label_order(model), image_size=32)
    tr, pool, idd, ood = d["train"], d["pool"], d["id"], d["ood"]
    assert tr.classes == names and tr.labels.tolist() == [1] * 4 + [3] * 4 + [0] * 4 + [2] * 4  # model's indices
    assert pool.has_objects and idd.has_objects and not ood.has_objects and ood.part_masks is None
    assert cft.has_object_masks(pool) and not cft.has_object_masks(ood)
    assert torch.equal(pool.masks & pool.part_masks, pool.part_masks)  # foreground = object ∪ concept
    assert int(pool.masks.sum()) == 3 * 4 * 16 * 16 and int(pool.part_masks.sum()) == 3 * 4 * 64
    ft, trained, held = cft.finetune_set(pool, per_class=3, seed=0)
    assert len(trained) == len(held) == 2 and set(trained) | set(held) == {0, 1, 2, 3}  # n09 has no image
    arms, hist = {"ERM": model}, {}
    for name, mode in (("CFT", "concept"), ("fg mask", "fg"), ("cls only", "cls")):
        arms[name], hist[name] = cft.finetune(model, ft, mode=mode, steps=2, batch_size=4, seed=0, show_progress=False)
    assert hist["CFT"]["ctx"] != hist["fg mask"]["ctx"]  # different masks: the fg arm is not CFT again
    res = cft.evaluate_arms(arms, {"id": idd, "ood": ood, "ft": ft}, held_out=held)
    for r in res.values():
        assert abs(r["id.bg"] + r["id.body"] + r["id.concept"] - 1) < 1e-5 and r["id.body"] > 0  # objects: a body
        assert "ood.bg" not in r and 0 <= r["ood.acc"] <= 1 and 0 <= r["ft.acc"] <= 1
    with torch.no_grad():
        pred = model(ood.images).argmax(-1)
    assert res["ERM"]["ood.acc"] == pytest.approx(float((pred == ood.labels).float().mean()))
    shutil.rmtree(tmp_path / "in" / "objects")  # no object masks: the fg arm is refused, not a copy of CFT
    pool2 = cft.load_folders(tmp_path / "in", classes=names, image_size=32)["pool"]
    assert not pool2.has_objects and not cft.has_object_masks(pool2)
    with pytest.raises(InputError, match="object masks"):
        cft.finetune(model, pool2, mode="fg", steps=1, show_progress=False)
