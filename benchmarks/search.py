"""Black-box search: LiMA's bidirectional greedy vs naive greedy, and batched masked forwards.

Model: the shipped ``shapes_cnn`` (4 classes, 32x32 ShapesWorld images); no gradients anywhere.

- **bidirectional vs naive greedy** (:func:`xattr_nb.methods.lima.explain`, ``how="bidirectional"``
  vs ``how="greedy"``): the same set function (LiMA's default terms and weights, complement forwards
  on), the same grid of regions; the two searches are different algorithms, so agreement is
  the Spearman correlation (at least 0.8) of their region maps; the note gives each one's measured forwards.
- **masked forwards, batched vs one at a time** (:func:`xattr_nb.kernels.masked_outputs`, folded in
  from the former ``benchmarks/masked_forward.py``): the same keep-masks (random subsets of a 4x4 grid)
  through the model in chunks vs one image per forward; agreement to float tolerance. A ``bound`` row
  compares the default chunking with the best of 32/128/512/all rows per forward on this machine.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.harness import Row, allclose, best_chunk, bound, compare, spearman

_STATE: dict[str, Any] = {}


def _setup() -> tuple[Any, torch.Tensor, torch.Tensor]:
    if "model" not in _STATE:
        from xattr_nb.models import zoo
        from xattr_nb.models.recipes import SHAPES_CNN_CLASSES
        from xattr_nb.worlds.shapes import make_shapes

        data = make_shapes(2, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=1)
        _STATE["model"] = zoo.load("shapes_cnn").eval()
        _STATE["x"], _STATE["y"] = data.images, data.labels
    return _STATE["model"], _STATE["x"], _STATE["y"]


def search_rows(quick: bool) -> list[Row]:
    from xattr_nb.methods import lima

    model, x, y = _setup()
    out = []
    for grid in (4,) if quick else (4, 6):
        r = grid * grid
        fwd: dict[str, int] = {}

        def run(how: str, grid: int = grid, fwd: dict[str, int] = fwd) -> torch.Tensor:
            a = lima.explain(model, x[:1], y[:1], grid=grid, pending=4, how=how)
            fwd[how] = int(a.cost.forward)
            return a.scores

        row = compare(
            f"LiMA bidirectional vs naive greedy, {r} regions",
            f"shapes_cnn, 1 image 32x32, {grid}x{grid} grid, pending 4, LiMA's default set function",
            lambda run=run: run("bidirectional"),
            lambda run=run: run("greedy"),
            peer_name="naive greedy (same set function)",
            agree=spearman(0.8),
            repeats=5,
            quick=quick,
            group="search",
        )
        if fwd:
            row.note = (
                f"forwards: {fwd.get('bidirectional')} vs {fwd.get('greedy')} "
                f"({fwd.get('bidirectional', 0) / max(1, fwd.get('greedy', 1)):.2f}x); different algorithms, "
                "so agreement is the rank correlation of their maps"
            )
        out.append(row)
    return out


def masked_rows(quick: bool) -> list[Row]:
    from xattr_nb.kernels import compose_masked, grid_regions, masked_outputs, subset_keep

    model, xs, _ = _setup()
    x = xs[0]
    n = 64 if quick else 1024
    g = torch.Generator().manual_seed(0)
    keep = subset_keep(grid_regions(32, 32, 4, 4), torch.rand(n, 16, generator=g) < 0.5)

    @torch.no_grad()
    def probs(images: torch.Tensor) -> torch.Tensor:
        return model(images).softmax(-1)

    @torch.no_grad()
    def one_at_a_time() -> torch.Tensor:
        return torch.cat([probs(compose_masked(x, keep[i : i + 1])) for i in range(n)])

    def ours() -> torch.Tensor:
        return masked_outputs(probs, x, keep)

    work = f"shapes_cnn, {n} keep-masks (random subsets of a 4x4 grid) of one 32x32 image, softmax outputs"
    rows = [
        compare(
            "masked forwards, batched vs one at a time",
            work,
            ours,
            one_at_a_time,
            peer_name="one forward per mask",
            agree=allclose(1e-5, 1e-4),
            repeats=5,
            quick=quick,
            group="search",
        )
    ]
    if quick:
        return rows
    # The bound: the best chunking of the same forwards on this machine.
    sizes = [32, 128, 512, n]
    best = best_chunk(lambda b: lambda: masked_outputs(probs, x, keep, batch_size=b), sizes)
    rows.append(
        bound(
            "masked forwards vs best chunking",
            work,
            ours,
            lambda: masked_outputs(probs, x, keep, batch_size=best),
            bound_name=f"bound: best chunking ({best} rows per forward, of 32/128/512/{n})",
            agree=allclose(1e-5, 1e-4),
            repeats=5,
            group="search",
            note="masked_outputs sizes chunks from the widest activation of its first 8 masks (kernels.rows_per_chunk); "
            "before, every mask went in one forward (2.66x)",
        )
    )
    return rows


def rows(quick: bool = False) -> list[Row]:
    return search_rows(quick) + masked_rows(quick)
