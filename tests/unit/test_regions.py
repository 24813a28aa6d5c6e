"""Region partitions: label maps, SLIC-style superpixels, subset unions and batched masked outputs."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from xattr_nb.checks import InputError
from xattr_nb.kernels import (
    check_regions,
    grid_regions,
    labels_to_regions,
    masked_outputs,
    slic_regions,
    subset_keep,
)
from xattr_nb.worlds.shapes import make_scenes


def test_labels_to_regions_orders_by_label_value():
    labels = torch.tensor([[42, 3, 3], [7, 7, 42]])
    r = labels_to_regions(labels)
    check_regions(r)
    assert r.shape == (3, 2, 3)
    assert r[0].tolist() == [[False, True, True], [False, False, False]]  # label 3
    assert r[2].tolist() == [[True, False, False], [False, False, True]]  # label 42


def test_slic_is_a_connected_partition_near_the_requested_size():
    img = make_scenes(1, seed=3).images[0]
    for n in (16, 36):
        r = slic_regions(img, n)
        check_regions(r)  # disjoint and covering
        assert all(ndimage.label(m.numpy())[1] == 1 for m in r)  # every superpixel is one 4-connected piece
        assert n / 3 <= r.shape[0] <= 2 * n


def test_slic_follows_a_colour_edge():
    # Left 20 columns red, right 28 blue: with a moderate compactness no superpixel straddles the edge.
    img = torch.zeros(3, 48, 48)
    img[0, :, :20] = 1.0
    img[2, :, 20:] = 1.0
    r = slic_regions(img, 16, compactness=10.0)
    left = r[:, :, :20].flatten(1).any(1)
    right = r[:, :, 20:].flatten(1).any(1)
    assert not bool((left & right).any())


def test_slic_on_a_constant_image_is_grid_like_and_deterministic():
    img = torch.full((3, 32, 32), 0.5)
    a, b = slic_regions(img, 16), slic_regions(img, 16)
    assert torch.equal(a, b)
    assert a.shape[0] == 16
    assert a.sum((1, 2)).tolist() == [64] * 16  # 4x4 squares of 8x8 pixels


def test_subset_keep_is_the_union():
    regions = grid_regions(4, 4, 2, 2)
    members = torch.tensor([[True, False, False, True], [False] * 4, [True] * 4])
    keep = subset_keep(regions, members)
    assert torch.equal(keep[0], regions[0] | regions[3])
    assert not keep[1].any() and keep[2].all()


def test_masked_outputs_returns_fn_rows_per_mask():
    x = torch.ones(3, 4, 4)
    keep = subset_keep(grid_regions(4, 4, 2, 2), torch.tensor([[True, False, False, False], [True, True, True, True]]))

    def fn(im):
        return torch.stack([im.sum((1, 2, 3)), im.mean((1, 2, 3))], 1)

    out = masked_outputs(fn, x, keep, baseline=0.5, batch_size=1)
    assert out.shape == (2, 2)
    assert out[:, 0].tolist() == [3 * (4 + 12 * 0.5), 48.0]


def test_bad_labels_float():
    with pytest.raises(InputError, match="integer"):
        labels_to_regions(torch.zeros(3, 3))


def test_bad_slic_image_ndim():
    with pytest.raises(InputError, match="image"):
        slic_regions(torch.zeros(8, 8), 4)


def test_bad_slic_n_segments():
    with pytest.raises(InputError, match="n_segments"):
        slic_regions(torch.zeros(3, 8, 8), 0)


def test_bad_slic_compactness():
    with pytest.raises(InputError, match="compactness"):
        slic_regions(torch.zeros(3, 8, 8), 4, compactness=-1.0)


def test_bad_slic_int_image():
    with pytest.raises(InputError, match="floating"):
        slic_regions(torch.zeros(3, 8, 8, dtype=torch.long), 4)


def test_bad_subset_keep_columns():
    with pytest.raises(InputError, match="columns"):
        subset_keep(grid_regions(4, 4, 2, 2), torch.ones(2, 3, dtype=torch.bool))


def test_bad_masked_outputs_fn_rows():
    keep = torch.ones(3, 4, 4, dtype=torch.bool)
    with pytest.raises(InputError, match="one row per image"):
        masked_outputs(lambda im: im.sum(), torch.ones(3, 4, 4), keep)


def test_bad_masked_outputs_fn_not_callable():
    with pytest.raises(InputError, match="callable"):
        masked_outputs(3, torch.ones(3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))  # type: ignore[arg-type]
