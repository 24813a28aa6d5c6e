"""Cross-modal alignment for OoD detection (paper 21): known answers, the spec's toy-hypersphere check,
NegMining on a constructed case, input errors, and the ``scale="full"`` path on local stand-ins."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError
from xattr_nb.methods import crossmodal_ood as M
from xattr_nb.metrics import mine_negatives, modality_gap, neglabel_score
from xattr_nb.models import clip as C
from xattr_nb.worlds import captions as W

# ----------------------------------------------------------------------------------------------- the loss


def test_flyp_loss_hand_case():
    a, b, c, d = 2.0, 0.5, -1.0, 1.5
    s = torch.tensor([[a, b], [c, d]])
    img = -math.log(math.exp(a) / (math.exp(a) + math.exp(b))) - math.log(math.exp(d) / (math.exp(c) + math.exp(d)))
    txt = -math.log(math.exp(a) / (math.exp(a) + math.exp(c))) - math.log(math.exp(d) / (math.exp(b) + math.exp(d)))
    assert float(M.flyp_loss(s)) == pytest.approx(0.5 * (img / 2 + txt / 2), abs=1e-6)


def test_flyp_counts_duplicate_prompts_as_negatives():
    # two images of the same class, both perfectly aligned with the (identical) prompt: FLYP still
    # pays log 2, because the duplicate prompt is a negative (the official in-batch targets)
    s = torch.full((2, 2), 10.0)
    assert float(M.flyp_loss(s)) == pytest.approx(math.log(2), abs=1e-6)


def test_cma_term_hand_case_and_total():
    s = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    rows = [math.log(math.e + 1), math.log(math.exp(2) + math.exp(3))]
    cols = [math.log(math.e + math.exp(2)), math.log(1 + math.exp(3))]
    want = -0.5 * (np.mean(rows) + np.mean(cols))
    assert float(M.cma_term(s)) == pytest.approx(want, abs=1e-6)
    torch.manual_seed(0)
    u, v = F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1)
    ls = torch.tensor(math.log(7.0))
    loss, parts = M.flyp_cma_loss(u, v, ls, lam=0.3)
    ss = 7.0 * u @ v.T
    assert float(loss) == pytest.approx(float(M.flyp_loss(ss) + 0.3 * M.cma_term(ss)), abs=1e-5)
    assert parts["cma"] == pytest.approx(float(M.cma_term(ss)), abs=1e-5)
    # the logit scale is clamped at 100, as open_clip does
    big = M.flyp_cma_loss(u, v, torch.tensor(10.0), lam=1.0)[0]
    assert float(big) == pytest.approx(
        float(M.flyp_cma_loss(u, v, torch.tensor(math.log(100.0)), lam=1.0)[0]), abs=1e-4
    )


def _toward(u: torch.Tensor, c: torch.Tensor, t: float) -> torch.Tensor:
    return F.normalize((1 - t) * u + t * c, dim=1)


def test_cma_term_decreases_as_images_move_to_the_text_centroid_analytic():
    """Spec check 4 on a toy hypersphere. With every text at the unit centroid c,
    S_ij = s·u_i·c and the term has the closed form −½[s·mean_i u_i·c + log B + log Σ_i exp(s·u_i·c)],
    which falls as each u_i·c rises."""
    torch.manual_seed(0)
    b, s = 6, 5.0
    c = torch.tensor([0.0, 0.0, 1.0])
    v = c.expand(b, 3)
    u0 = F.normalize(torch.randn(b, 3), dim=1)
    values = []
    for t in np.linspace(0, 1, 11):
        u = _toward(u0, c, float(t))
        a = s * u @ c
        closed = -0.5 * (float(a.mean()) + math.log(b) + float(torch.logsumexp(a, 0)))
        got = float(M.cma_term(s * u @ v.T))
        assert got == pytest.approx(closed, abs=1e-5)
        values.append(got)
    assert all(x > y for x, y in itertools.pairwise(values))
    assert values[-1] == pytest.approx(-0.5 * (2 * s + 2 * math.log(b)), abs=1e-5)  # all at c: S = s everywhere


def test_cma_term_decreases_for_a_text_cluster():
    torch.manual_seed(1)
    pole = torch.tensor([1.0, 0.0, 0.0, 0.0])
    v = F.normalize(pole + 0.3 * torch.randn(5, 4), dim=1)
    c = F.normalize(v.mean(0), dim=0)
    u0 = F.normalize(torch.randn(5, 4), dim=1)
    vals = [float(M.cma_term(10.0 * _toward(u0, c, float(t)) @ v.T)) for t in np.linspace(0, 1, 9)]
    assert all(x > y for x, y in itertools.pairwise(vals))


# ----------------------------------------------------------------------------------------------- metrics


def test_modality_gap_known_vectors():
    u = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # both e1 once normalised
    v = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # e1, e2
    g = modality_gap(u, v, torch.tensor([0, 1]))
    assert g["gap"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert g["own_cos"] == pytest.approx(0.5, abs=1e-12)  # cos(e1, e1) and cos(e1, e2)
    assert g["other_cos"] == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(modality_gap(u, v)["own_cos"])
    assert modality_gap(v, v)["gap"] == pytest.approx(0.0, abs=1e-12)


def test_mine_negatives_picks_the_least_id_like():
    r = 1 / math.sqrt(2)
    ids = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    cand = torch.tensor([[1.0, 0, 0], [r, 0, r], [0, 0, 1.0], [-1.0, 0, 0], [-r, -r, 0]])
    # 0.95-quantile of the cosines to the two ID labels: 1, 0.707, 0, -0.05, -0.707
    assert mine_negatives(cand, ids, 3).tolist() == [4, 3, 2]
    # the percentile matters: at 0 (the minimum cosine) -e1 (cos -1 to e1) is the farthest
    assert mine_negatives(cand, ids, 2, percentile=0.0).tolist() == [3, 4]


def test_neglabel_sweep_matches_the_score():
    torch.manual_seed(0)
    f = {"id": torch.randn(5, 4), "x": torch.randn(3, 4)}
    vid, vneg = F.normalize(torch.randn(2, 4), dim=1), torch.randn(6, 4)
    ev = M.Evaluation({}, f, vid, [], {}, torch.ones(5, dtype=torch.bool))
    got = ev.neglabel_at(vneg, 0.05)
    assert torch.allclose(got["x"], neglabel_score(f["x"], vid, vneg, temperature=0.05))


def test_ood_table_restricts_the_id_set():
    scores = {"id": torch.tensor([0.9, 0.8, 0.1]), "far": torch.tensor([0.2, 0.3])}
    assert M.ood_table(scores)["auroc_far"] == pytest.approx(4 / 6)
    assert M.ood_table(scores, keep=torch.tensor([True, True, False]))["auroc_far"] == pytest.approx(1.0)


def test_candidate_pool_has_no_id_class_and_tokenizes():
    pool = M.candidate_pool()
    assert 250 <= len(pool) <= 400 and len(set(pool)) == len(pool)
    assert not any(set(p.split()) & set(W.ID_CLASSES) for p in pool)
    assert any("hexagon" in p for p in pool)
    no_near = M.candidate_pool(exclude=W.NEAR_OOD_CLASSES)
    assert not any(set(p.split()) & set(W.NEAR_OOD_CLASSES) for p in no_near)
    C.tokenize(C.clip_tokenizer(), pool)  # raises on an out-of-vocabulary word


# ----------------------------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_argument():
    ids = torch.eye(3)[:2]
    with pytest.raises(InputError, match="`m`"):
        mine_negatives(torch.eye(3), ids, 4)
    with pytest.raises(InputError, match="`id_features`"):
        mine_negatives(torch.eye(3), torch.eye(2), 1)
    with pytest.raises(InputError, match="`percentile`"):
        mine_negatives(torch.eye(3), ids, 1, percentile=1.5)
    with pytest.raises(InputError, match="`labels`"):
        modality_gap(torch.eye(2), torch.eye(2), torch.tensor([0, 2]))
    with pytest.raises(InputError, match="`logits`"):
        M.flyp_loss(torch.zeros(2, 3))
    with pytest.raises(InputError, match="`lam`"):
        M.flyp_cma_loss(torch.eye(2), torch.eye(2), torch.tensor(0.0), lam=-1.0)
    with pytest.raises(InputError, match="`text_features`"):
        M.flyp_cma_loss(torch.eye(2), torch.eye(3), torch.tensor(0.0))
    with pytest.raises(InputError, match="`data`"):
        M.evaluate(C.tiny_clip(), C.clip_tokenizer(), {"id": 1})
    with pytest.raises(InputError, match="`n_test`"):
        M.make_data(2, 0, 2)
    with pytest.raises(InputError, match="`template`"):
        M.finetune(C.tiny_clip(), C.clip_tokenizer(), torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]),
                   ["circle", "star"], template="a photo")  # fmt: skip
    with pytest.raises(InputError, match="`epochs`"):
        M.finetune(C.tiny_clip(), C.clip_tokenizer(), torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]),
                   ["circle", "star"], epochs=0)  # fmt: skip


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("stem", ["patch", "hybrid"])  # hybrid: a channel shuffle in train mode, from the RNG
def test_finetune_is_paired_and_leaves_the_model_alone(stem):
    torch.manual_seed(0)
    model, tok = C.tiny_clip(stem=stem), C.clip_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 3, 32, 32), torch.arange(16) % 4
    cls = ["circle", "star", "heart", "cross"]
    a = M.finetune(model, tok, x, y, cls, lam=0.0, epochs=2, batch_size=8, lr=1e-3, warmup=1, seed=3)
    torch.rand(5)  # the global RNG moves between the arms, as in the notebook
    b = M.finetune(model, tok, x, y, cls, lam=0.5, epochs=2, batch_size=8, lr=1e-3, warmup=1, seed=3)
    assert len(a.history) == 4
    assert a.history["flyp"][0] == pytest.approx(b.history["flyp"][0], abs=1e-6)  # same first batch
    assert b.history["loss"][0] == pytest.approx(b.history["flyp"][0] + 0.5 * b.history["cma"][0], abs=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(a.model.visual_projection.weight, model.visual_projection.weight)


def test_cma_pulls_images_to_their_texts_on_a_small_run():
    torch.manual_seed(0)
    model, tok = C.tiny_clip(), C.clip_tokenizer()
    data = M.make_data(8, 40, 20, seed=1)
    gaps = {}
    for lam in (0.0, 1.0):
        ft = M.finetune(model, tok, data.train_images, data.train_labels, data.classes, lam=lam, epochs=3,
                        batch_size=16, lr=2e-3, warmup=1, seed=0)  # fmt: skip
        u = M.embed_images(ft.model, data.test_images)
        v = M.class_features(ft.model, tok, [M.PROMPT.format(shape=c) for c in data.classes])
        gaps[lam] = modality_gap(u, v, data.test_labels)["gap"]
    assert gaps[1.0] < gaps[0.0]


# ----------------------------------------------------------------------------------------------- full scale


def _write_pngs(folder, n, rng):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = (rng.uniform(0, 1, (40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")


def test_full_scale_path_on_a_saved_clip_and_png_folders(tmp_path):
    torch.manual_seed(0)
    model, tok = C.tiny_clip(), C.clip_tokenizer()
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("circle", "star"):
            _write_pngs(tmp_path / "id" / split / cls, 4, rng)
    _write_pngs(tmp_path / "inat" / "images", 3, rng)
    _write_pngs(tmp_path / "textures" / "a", 2, rng)
    loaded = C.load_clip("full", full=tmp_path / "clip")
    data = M.load_folder_data(tmp_path / "id", {"inat": tmp_path / "inat", "textures": tmp_path / "textures"}, size=32)
    assert data.classes == ("circle", "star") and data.train_images.shape == (8, 3, 32, 32)
    assert set(data.ood) == {"inat", "textures"} and len(data.ood["inat"]) == 3
    pool = ["a photo of a ring", "a red thing", "a grid pattern", "the digit seven", "a photo of a hexagon"]
    table, arms = M.compare(loaded.model, loaded.tokenizer, data, lam=0.01, epochs=1, batch_size=4, lr=1e-4,
                            warmup=0, template="a photo of a {}", pool=pool, n_neg=3)  # fmt: skip
    assert list(table.index) == ["zero-shot", "FLYP", "FLYP+CMA"]
    assert np.isfinite(table[["id_acc", "gap", "neglabel_auroc_mean", "mcm_fpr95_inat"]].to_numpy()).all()
    assert len(arms["FLYP+CMA"][1].negatives) == 3
    with pytest.raises(InputError, match="`id_root`"):
        M.load_folder_data(tmp_path / "inat", {"x": tmp_path / "inat"}, size=32)
