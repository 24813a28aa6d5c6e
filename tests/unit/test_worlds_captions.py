"""The image–caption ShapesWorld: determinism, splits as promised, templates, far-OoD content."""

from __future__ import annotations

import re

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds import captions as W


def test_vocabulary_and_templates():
    assert len(W.TEMPLATES) >= 10
    vocab = set(W.vocabulary())
    attr = {"shape": "star", "color": "red", "size": "small", "style": "striped", "bg": "grid", "pos": "top left"}
    for i, t in enumerate(W.TEMPLATES):
        text = W.caption(attr, i)
        assert "{" not in text and "star" in text
        assert set(text.split()) <= vocab, (t, set(text.split()) - vocab)
    for s in W.CLASS_TEMPLATES:
        assert re.findall(r"\{(\w+)\}", s) == ["shape"]
    # negative words (NegLabel candidates) never appear in any caption
    caption_words = {w for i in range(len(W.TEMPLATES)) for w in W.caption(attr, i).split()}
    caption_words |= {
        w for v in (*W.SHAPES, *W.COLORS, *W.SIZES, *W.STYLES, *W.BACKGROUNDS, *W.POSITIONS) for w in v.split()
    }
    assert not set(W.NEGATIVE_WORDS) & caption_words
    with pytest.raises(InputError, match="missing"):
        W.caption({"shape": "star"}, 0)
    with pytest.raises(InputError, match="template"):
        W.caption(attr, len(W.TEMPLATES))


def test_every_template_fills_in_a_corpus():
    d = W.corpus(600, seed=3)
    assert set(d.templates.tolist()) == set(range(len(W.TEMPLATES)))
    vocab = set(W.vocabulary())
    for c, a, t in zip(d.captions, d.attrs, d.templates.tolist(), strict=True):
        assert c == W.caption(a, t)
        assert set(c.split()) <= vocab


def test_determinism_and_seed_dependence():
    a, b, c = W.corpus(200, seed=1), W.corpus(200, seed=1), W.corpus(200, seed=2)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    assert a.recaption(5) == b.recaption(5) != a.recaption(6)
    x1, y1 = W.far_ood_digits(20, seed=4)
    x2, y2 = W.far_ood_digits(20, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(W.far_ood_textures(10, seed=1), W.far_ood_textures(10, seed=1))
    assert W.world_version() == W.world_version() and len(W.world_version()) == 16


def test_holdout_pairs_never_in_corpus_and_only_in_holdout_set():
    held = set(W.HOLDOUT_PAIRS)
    assert len(held) == len(W.SHAPES)  # one per shape
    d = W.corpus(3000, seed=0)
    pairs = {(a["shape"], a["color"]) for a in d.attrs}
    assert not pairs & held
    assert len(pairs) == len(W.SHAPES) * len(W.COLORS) - len(held)  # every other combination appears
    h = W.holdout_set(3, seed=0)
    assert {(a["shape"], a["color"]) for a in h.attrs} == held and len(h) == 3 * len(held)
    assert all(W.SHAPES[s] == a["shape"] for s, a in zip(h.shape_ids.tolist(), h.attrs, strict=True))


def test_class_splits_are_disjoint_and_cover_the_shapes():
    assert not set(W.BASE_CLASSES) & set(W.NOVEL_CLASSES)
    assert set(W.BASE_CLASSES) | set(W.NOVEL_CLASSES) == set(W.SHAPES)
    assert not set(W.ID_CLASSES) & set(W.NEAR_OOD_CLASSES)
    assert set(W.ID_CLASSES) | set(W.NEAR_OOD_CLASSES) == set(W.SHAPES)
    assert set(W.LOOKALIKE) == set(W.NEAR_OOD_CLASSES) and set(W.LOOKALIKE.values()) <= set(W.ID_CLASSES)
    assert not set(W.FAR_OOD_NAMES) & set(W.SHAPES)


def test_fewshot_and_domain():
    f = W.fewshot(W.NOVEL_CLASSES, 5, domain=W.DOWNSTREAM_DOMAIN, seed=2)
    assert f.labels.bincount().tolist() == [5] * len(W.NOVEL_CLASSES)
    assert f.classes == W.NOVEL_CLASSES
    assert {a["shape"] for a in f.attrs} == set(W.NOVEL_CLASSES)
    for a in f.attrs:
        assert a["style"] in W.DOWNSTREAM_DOMAIN["styles"]
        assert a["bg"] in W.DOWNSTREAM_DOMAIN["backgrounds"]
        assert a["size"] in W.DOWNSTREAM_DOMAIN["sizes"]
    assert [f.classes[i] for i in f.labels.tolist()] == [a["shape"] for a in f.attrs]
    ood = W.labelled(W.NEAR_OOD_CLASSES, 12, seed=0)
    assert {a["shape"] for a in ood.attrs} <= set(W.NEAR_OOD_CLASSES)
    with pytest.raises(InputError, match="classes"):
        W.fewshot(("circle", "blob"), 2)
    with pytest.raises(InputError, match="domain"):
        W.labelled(W.SHAPES, 4, domain={"colour": ("red",)})


def test_far_ood_has_no_shape():
    x, digits = W.far_ood_digits(30, seed=0)
    assert x.shape == (30, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert set(digits.tolist()) <= set(range(10))
    # the digits are the only painted content: rows of the 8x8 source upsampled x4 come in 4x4 blocks
    # wherever the background is flat (black / gray backgrounds): no ShapesWorld glyph is drawn
    flat = [i for i in range(30) if float(x[i].std()) > 0 and float(x[i, :, :4, :4].std(dim=(1, 2)).max()) < 1e-6]
    assert flat, "expected some digits on a flat background"
    t = W.far_ood_textures(40, seed=0)
    assert t.shape == (40, 3, 32, 32)
    # textures are periodic/noise/ramps: no image holds a palette-coloured object (every pixel is a
    # grey level times a mild tint, so channels stay within a factor 0.7 of each other)
    ratio = t.amin(1) / t.amax(1).clamp_min(1e-6)
    assert float(ratio.min()) >= 0.69


def test_spurious_corpus_plants_the_prior_and_keeps_holdouts_out() -> None:
    data = W.corpus(1600, seed=2, spurious_color=0.8)
    held = set(W.HOLDOUT_PAIRS)
    assert not any((a["shape"], a["color"]) in held for a in data.attrs)
    # 0.8 exactly prior + 0.2 uniform over the 7 allowed colours (one of which is the prior)
    frac = float(W.prior_mask(data).float().mean())
    assert abs(frac - (0.8 + 0.2 / 7)) < 0.04
    assert torch.bincount(data.shape_ids, minlength=16).tolist() == [100] * 16
    assert all((s, c) not in held for s, c in W.PRIOR_COLOR.items())
    bg = W.corpus(800, seed=2, spurious_bg=1.0)
    assert all(a["bg"] == W.PRIOR_BACKGROUND[a["shape"]] for a in bg.attrs)


def test_unbiased_corpus_has_no_prior_beyond_chance() -> None:
    frac = float(W.prior_mask(W.corpus(1600, seed=2)).float().mean())
    assert abs(frac - 1 / 7) < 0.04


def test_spurious_rates_out_of_range_are_refused() -> None:
    with pytest.raises(InputError, match="spurious_color"):
        W.corpus(10, spurious_color=1.5)
    with pytest.raises(InputError, match="spurious_bg"):
        W.corpus(10, spurious_bg=-0.1)
