"""DiFull grids: distinct classes per grid, cells equal to their source images, cell masks."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.grids import cell_box, cell_mask, make_grids


def _source(n_per_class: int = 5, n_classes: int = 6, c: int = 1, h: int = 4):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    return torch.rand(len(labels), c, h, h, generator=g), labels


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_cells_are_distinct_classes_and_equal_sources(scale):
    x, y = _source(n_classes=9, c=3)
    g = make_grids(x, y, scale=scale, n_grids=20, seed=1)
    assert g.images.shape == (20, 3, 4 * scale, 4 * scale) and g.labels.shape == (20, scale * scale)
    for i in range(20):
        assert len(set(g.labels[i].tolist())) == scale * scale
        for k in range(scale * scale):
            x1, y1, x2, y2 = cell_box(scale, 4, k)
            src = g.source_idx[i, k]
            assert torch.equal(g.images[i, :, y1:y2, x1:x2], x[src])
            assert y[src] == g.labels[i, k]


def test_class_order_is_random():
    x, y = _source()
    g = make_grids(x, y, scale=2, n_grids=50, seed=0)
    assert len({tuple(r) for r in g.labels.tolist()}) > 20


def test_cell_mask_partitions_grid():
    masks = torch.stack([cell_mask(2, 3, k) for k in range(4)])
    assert torch.equal(masks.sum(0), torch.ones(6, 6, dtype=torch.long))
    assert masks[1, 0, 3:].all() and not masks[1, 0, :3].any() and masks[2, 3:, 0].all()


def test_deterministic_and_seed_dependent():
    x, y = _source()
    a, b, c = (make_grids(x, y, n_grids=10, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images, b.images) and not torch.equal(a.source_idx, c.source_idx)


def test_subset_keeps_cell_masks():
    x, y = _source()
    g = make_grids(x, y, n_grids=10, seed=0).subset([1, 2])
    assert len(g) == 2 and g.cell_masks.shape == (4, 8, 8)


def test_bad_scale():
    x, y = _source()
    with pytest.raises(InputError, match="`scale`"):
        make_grids(x, y, scale=0)


def test_bad_n_grids():
    x, y = _source()
    with pytest.raises(InputError, match="`n_grids`"):
        make_grids(x, y, n_grids=0)


def test_too_few_classes():
    x, y = _source(n_classes=3)
    with pytest.raises(InputError, match="`labels`"):
        make_grids(x, y, scale=2)


def test_label_length_mismatch():
    x, y = _source()
    with pytest.raises(InputError, match="`labels`"):
        make_grids(x, y[:-1])


def test_non_square_images():
    with pytest.raises(InputError, match="`images`"):
        make_grids(torch.rand(8, 1, 4, 5), torch.arange(8))


def test_cell_index_out_of_range():
    with pytest.raises(InputError, match="`k`"):
        cell_mask(2, 4, 4)
