"""Metrics vs Quantus on the same maps.

Work: the shipped ``shapes_cnn`` and 64 ShapesWorld images 3x32x32 with their target masks; the
maps are our saliency maps of the labels (``attribute(..., "saliency")``), computed once, outside
the timing, plus a ramp of 1e-6 of their maximum that breaks exact ties (which the two sides' sorts
would order differently: a tie, not a disagreement). Both sides get the same maps, masks, images and targets as arrays.

- **pointing game**: :func:`xattr_nb.metrics.localization.pointing_game` (``ties="any"``, Quantus's
  convention) vs ``quantus.PointingGame`` (``normalise=False``, ``abs=False``).
- **localisation (mass inside the mask)**: :func:`~xattr_nb.metrics.localization.inside_mass`
  (``|a|``) vs ``quantus.RelevanceMassAccuracy`` (``abs=True``, ``normalise=False``).
- **deletion curve**: :func:`xattr_nb.metrics.curves.insertion_deletion_batch` (pixel protocol,
  1/16 of the pixels per step, baseline 0, softmax probability) vs ``quantus.PixelFlipping``
  (``perturb_baseline=0.0``): Quantus requires ``features_in_step`` to divide H*W but steps over
  the C*H*W channel-features, so it takes 48 steps of 64 features; every third of its probabilities
  (64 more whole pixels removed) is a point of our deletion curve (without its first point).
  Ours computes the insertion curve in the same call (twice the forwards): no Quantus metric
  computes insertion, so the row is charged with both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks.harness import Row, allclose, compare, not_installable

N_IMAGES = 64
_STATE: dict[str, Any] = {}


def _setup() -> dict[str, Any]:
    if not _STATE:
        from xattr_nb.attribution import attribute
        from xattr_nb.models import zoo
        from xattr_nb.models.recipes import SHAPES_CNN_CLASSES
        from xattr_nb.worlds.shapes import make_shapes

        data = make_shapes(N_IMAGES, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=2)
        model = zoo.load("shapes_cnn").eval()
        maps = attribute(model, data.images, data.labels, "saliency").scores
        # Ties (saliency is exactly 0 where no path reaches the logit) would be ordered differently by
        # the two sides' sorts: a ramp far below the maps' scale breaks them, the same for both.
        ramp = torch.arange(maps[0].numel(), dtype=maps.dtype).view_as(maps[0]) / maps[0].numel()
        maps = maps + 1e-6 * maps.abs().amax() * ramp
        _STATE.update(model=model, x=data.images, y=data.labels, maps=maps, masks=torch.as_tensor(data.masks).bool())
    return _STATE


def rows(quick: bool = False) -> list[Row]:
    try:
        import quantus
    except ImportError:
        work = f"shapes_cnn saliency maps of {N_IMAGES} images"
        reason = "quantus is not installed (pip install -e '.[bench]')"
        return [
            not_installable(n, work, "quantus", reason, group="metrics")
            for n in ("pointing game", "localisation", "deletion curve")
        ]
    from xattr_nb.metrics.curves import insertion_deletion_batch
    from xattr_nb.metrics.localization import inside_mass, pointing_game

    s = _setup()
    model, x, y, maps, masks = s["model"], s["x"], s["y"], s["maps"], s["masks"]
    x_np, y_np = x.numpy(), y.numpy()
    a_np, s_np = maps.unsqueeze(1).numpy(), masks.unsqueeze(1).numpy().astype(np.float32)
    work = f"shapes_cnn saliency maps of {N_IMAGES} images 32x32, target masks"
    quiet = {"disable_warnings": True, "display_progressbar": False}
    reps = 3 if quick else 9

    pg = quantus.PointingGame(normalise=False, abs=False, **quiet)
    rma = quantus.RelevanceMassAccuracy(normalise=False, abs=True, **quiet)

    def q_local(metric: Any):
        return lambda: np.asarray(
            metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, s_batch=s_np, device="cpu"), dtype=float
        )

    out = [
        compare(
            "pointing game",
            work,
            lambda: pointing_game(maps, masks, ties="any").double(),
            q_local(pg),
            peer_name="quantus PointingGame",
            agree=allclose(0, 0),
            repeats=reps,
            quick=quick,
            group="metrics",
        ),
        compare(
            "localisation (mass inside the mask)",
            work,
            lambda: inside_mass(maps, masks, absolute=True),
            q_local(rma),
            peer_name="quantus RelevanceMassAccuracy",
            agree=allclose(1e-6, 1e-5),
            repeats=reps,
            quick=quick,
            group="metrics",
        ),
    ]

    n_img = 8 if quick else N_IMAGES
    steps = 16
    per_step = 32 * 32 // steps
    # Quantus asserts that features_in_step divides H*W, then steps over the C*H*W channel-features
    # (the map broadcast to every channel): 64 whole pixels (192 features) per step cannot be asked
    # for, so it runs 48 steps of 64 features and every third point (64 whole pixels more) is ours.
    pf = quantus.PixelFlipping(features_in_step=per_step, perturb_baseline=0.0, normalise=False, abs=False, **quiet)

    @torch.no_grad()
    def ours_del() -> torch.Tensor:
        cs = insertion_deletion_batch(model, x[:n_img], maps[:n_img], y[:n_img], protocol="pixel", pixel_step=1 / steps)
        return torch.stack([c.deletion[1:] for c in cs.curves])

    def q_del() -> np.ndarray:
        res = pf(
            model=model,
            x_batch=x_np[:n_img],
            y_batch=y_np[:n_img],
            a_batch=a_np[:n_img],
            device="cpu",
            softmax=True,
            batch_size=n_img,
        )
        return np.asarray(res, dtype=float)[:, x.shape[1] - 1 :: x.shape[1]]

    out.append(
        compare(
            "deletion curve",
            f"shapes_cnn, {n_img} images, saliency maps, {steps} steps of {per_step} pixels, baseline 0",
            ours_del,
            q_del,
            peer_name="quantus PixelFlipping",
            agree=allclose(1e-5, 1e-4),
            repeats=reps,
            quick=quick,
            group="metrics",
            note="ours computes the insertion curve in the same call (2 x 16 forwards per image); Quantus can only "
            "step by 64 of the 3x1024 channel-features here (48 forwards per image; see the module docstring)",
        )
    )
    return out
