"""ShapesWorld: exact masks, tight boxes, determinism, the spurious knob, splits, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds import split, subset
from xattr_nb.worlds.shapes import (
    BACKGROUNDS,
    BASE_CLASSES,
    ID_CLASSES,
    NEAR_OOD_CLASSES,
    NOVEL_CLASSES,
    SHAPES,
    STYLES,
    caption_vocab,
    make_scenes,
    make_shapes,
    render_masks,
    world_version,
)


def _differs_from(images: torch.Tensor, value: float) -> torch.Tensor:
    return (images - value).abs().amax(dim=1) > 1e-6


def test_constants_and_splits():
    assert len(SHAPES) == 16 and len(set(SHAPES)) == 16
    assert set(BASE_CLASSES) | set(NOVEL_CLASSES) == set(SHAPES) and not set(BASE_CLASSES) & set(NOVEL_CLASSES)
    assert ID_CLASSES + NEAR_OOD_CLASSES == SHAPES and len(ID_CLASSES) == 10


@pytest.mark.parametrize("style", STYLES)
def test_mask_equals_drawn_pixels_on_black(style):
    d = make_shapes(64, classes=SHAPES, styles=(style,), backgrounds=("black",), seed=3)
    assert torch.equal(_differs_from(d.images, 0.05), d.masks)
    assert bool((d.masks <= d.silhouettes).all()) and int(d.masks.flatten(1).sum(1).min()) > 0
    if style == "solid":
        assert torch.equal(d.masks, d.silhouettes)


def test_distractors_do_not_touch_target_and_are_drawn():
    d = make_shapes(100, n_distractors=3, backgrounds=("black",), seed=1)
    assert not bool((d.masks & d.distractor_masks).any())
    assert torch.equal(_differs_from(d.images, 0.05), d.masks | d.distractor_masks)
    assert int(d.distractor_masks.flatten(1).any(1).sum()) >= 95


def test_parts_are_inside_the_object_and_coloured_by_class():
    d = make_shapes(40, parts=True, body="square", sizes=("large",), backgrounds=("black",), seed=2)
    assert bool((d.part_masks <= d.masks).all()) and bool(d.part_masks.flatten(1).any(1).all())
    body = d.masks & ~d.part_masks
    assert torch.allclose(d.images.permute(0, 2, 3, 1)[body], torch.tensor(0.62))  # class-agnostic grey
    assert set(d.shape_ids.tolist()) == {SHAPES.index("square")}


def test_twin_draws_two_copies():
    d = make_shapes(30, twin=True, sizes=("small",), backgrounds=("black",), seed=0)
    one = make_shapes(30, sizes=("small",), backgrounds=("black",), seed=0)
    assert torch.equal(_differs_from(d.images, 0.05), d.masks)
    assert d.masks.flatten(1).sum(1).float().mean() > 1.6 * one.masks.flatten(1).sum(1).float().mean()


def test_twin_beside_a_central_object_finds_the_corners():
    # Beside a central small object a copy fits only near the corners, which random draws used to miss.
    d = make_shapes(400, twin=True, sizes=("small",), positions=("center",), backgrounds=("black",), seed=3)
    one = make_shapes(400, sizes=("small",), positions=("center",), backgrounds=("black",), seed=3)
    assert d.masks.flatten(1).sum(1).float().mean() > 1.6 * one.masks.flatten(1).sum(1).float().mean()
    with pytest.raises(InputError, match="no room for a second copy"):
        make_shapes(20, twin=True, sizes=("large",), positions=("center",), seed=0)


def test_boxes_are_tight():
    d = make_shapes(50, styles=STYLES, seed=4)
    for m, b in zip(d.masks, d.boxes, strict=True):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_render_masks_known_geometry():
    m = render_masks(["square"], [15.5], [15.5], [10.0], [0.0], 32)[0]
    # half-side 0.8 * 10 = 8 px around 15.5: edges at 7.5 and 23.5, so pixels 8..23 (16 of them)
    assert m.sum() == 16 * 16 and m[8:24, 8:24].all()
    c = render_masks(["circle"], [15.0], [15.0], [5.0], [0.0], 32)[0]
    ys, xs = np.mgrid[0:32, 0:32]
    assert np.array_equal(c, (xs - 15) ** 2 + (ys - 15) ** 2 <= 25)


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = (make_shapes(16, n_distractors=2, styles=STYLES, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_spurious_background_knob():
    n = 600
    tied = make_shapes(n, spurious_bg=1.0, seed=0)
    assert torch.equal(tied.backgrounds, tied.labels % len(BACKGROUNDS))
    assert tied.spurious_map == {c: BACKGROUNDS[k] for k, c in enumerate(tied.classes)}
    free = make_shapes(n, spurious_bg=0.0, seed=0)
    agree = (free.backgrounds == free.labels % len(BACKGROUNDS)).float().mean().item()
    assert abs(agree - 1 / len(BACKGROUNDS)) < 0.06  # chance level
    half = make_shapes(n, spurious_bg=0.5, seed=0)
    assert abs(half.spurious.float().mean().item() - 0.5) < 0.07


def test_labels_balanced_captions_and_attrs():
    d = make_shapes(40, classes=("star", "heart"), seed=0)
    assert torch.bincount(d.labels).tolist() == [20, 20]
    assert all(a["shape"] == d.classes[y] for a, y in zip(d.attrs, d.labels.tolist(), strict=True))
    vocab = set(caption_vocab())
    assert all(set(c.split()) <= vocab for c in d.captions)
    assert all(d.attrs[i]["shape"] in d.captions[i] for i in range(40))


def test_subset_and_split():
    d = make_shapes(20, seed=0)
    s = subset(d, [3, 5])
    assert len(s) == 2 and torch.equal(s.images[1], d.images[5]) and s.captions[0] == d.captions[3]
    tr, te = split(d, (0.75, 0.25), seed=1)
    assert len(tr) == 15 and len(te) == 5
    both = torch.cat([tr.images, te.images]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == 20


def test_scenes_objects_disjoint_with_tight_boxes():
    s = make_scenes(40, max_objects=3, backgrounds=("black",), n_distractors=0, seed=0)
    counts = [len(lab) for lab in s.labels]
    assert min(counts) >= 1 and max(counts) == 3
    for img, m, b in zip(s.images, s.masks, s.boxes, strict=True):
        assert int(m.sum(0).max()) <= 1  # disjoint
        assert torch.equal(_differs_from(img[None], 0.05)[0], m.any(0))
        for mj, bj in zip(m, b, strict=True):
            ys, xs = torch.nonzero(mj, as_tuple=True)
            assert bj.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_world_version_is_stable_hex():
    v = world_version()
    assert v == world_version() and len(v) == 16 and int(v, 16) >= 0


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"n": 0}, "n"),
        ({"n": 4, "classes": ("circle", "blob")}, "classes"),
        ({"n": 4, "classes": ("circle", "circle")}, "classes"),
        ({"n": 4, "spurious_bg": 1.5}, "spurious_bg"),
        ({"n": 4, "spurious_color": -0.1}, "spurious_color"),
        ({"n": 4, "backgrounds": ("sky",)}, "backgrounds"),
        ({"n": 4, "n_distractors": -1}, "n_distractors"),
        ({"n": 4, "body": "square"}, "body"),
        ({"n": 4, "size": 4}, "size"),
        ({"n": 4, "seed": -1}, "seed"),
    ],
)
def test_make_shapes_bad_inputs(kwargs, arg):
    with pytest.raises(InputError, match=f"`{arg}`"):
        make_shapes(**kwargs)


def test_make_scenes_bad_max_objects():
    with pytest.raises(InputError, match="`max_objects`"):
        make_scenes(4, max_objects=0)


def test_split_bad_fractions():
    with pytest.raises(InputError, match="`fractions`"):
        split(make_shapes(4), (0.5, 0.6))


def test_subset_bad_index():
    with pytest.raises(InputError, match="`idx`"):
        subset(make_shapes(4), [0, 9])


def test_render_masks_unknown_shape():
    with pytest.raises(InputError, match="`shapes`"):
        render_masks(["blob"], [5.0], [5.0], [3.0], [0.0], 16)
