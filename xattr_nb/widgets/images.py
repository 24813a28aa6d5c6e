"""``ImageHeatmap``: images with attribution overlays, paged in a grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.widgets._common import StaticFallback, diverging_rgb_array, esc, png_b64, read_asset

__all__ = ["ImageHeatmap", "maps_from_attribution"]


def maps_from_attribution(a: Attribution, hw: tuple[int, int], name: str = "maps") -> torch.Tensor:
    """Pixel maps ``[B, H, W]`` from an Attribution, at the image size ``hw``.

    ``pixels`` at another size are resized bilinearly (a GradCAM-style coarse map); ``patches``
    ``[B, Hp, Wp]`` are blown up to blocks (nearest), so a patch shows as the square it scores;
    ``regions`` ``[B, R]`` are painted into their masks, ``meta["regions"]`` ``[R, H, W]`` bool
    (a pixel in several regions gets the sum).
    """
    if a.kind == "pixels":
        m = a.scores.float()
        if tuple(m.shape[1:]) != hw:
            m = torch.nn.functional.interpolate(m[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
        return m
    if a.kind == "patches":
        return torch.nn.functional.interpolate(a.scores.float()[:, None], size=hw, mode="nearest")[:, 0]
    if a.kind == "regions":
        regions = a.meta.get("regions")
        if regions is None:
            raise InputError(f"`{name}` scores regions but has no meta['regions'] [R, H, W] masks to paint them into")
        regions = check_tensor(regions, f"{name}.meta['regions']", ndim=3, dtype="bool", layout="[R, H, W]")
        if regions.shape[0] != a.scores.shape[1] or tuple(regions.shape[1:]) != hw:
            raise InputError(
                f"`{name}.meta['regions']` is {tuple(regions.shape)} but needs ({a.scores.shape[1]}, {hw[0]}, {hw[1]})"
            )
        return torch.einsum("br,rhw->bhw", a.scores.float(), regions.float())
    raise InputError(f"`{name}` must score pixels, patches or regions; this Attribution scores {a.kind}")


def _maps(maps: Any, b: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    if isinstance(maps, (Attribution, torch.Tensor, np.ndarray)):
        maps = {maps.method if isinstance(maps, Attribution) else "attribution": maps}
    if not isinstance(maps, Mapping) or len(maps) == 0:
        raise InputError("`maps` must be a [B, H, W] tensor, an Attribution, or a non-empty dict method -> those")
    out: dict[str, np.ndarray] = {}
    for k, v in maps.items():
        key = f"maps[{k!r}]"
        if isinstance(v, Attribution):
            m = maps_from_attribution(v, hw, key)
        else:
            m = check_tensor(v, key, ndim=3, dtype="float", layout="[B, H, W]").float()
            if tuple(m.shape[1:]) != hw:
                raise InputError(f"`{key}` is {tuple(m.shape[1:])} per image but the images are {hw}")
        if m.shape[0] != b:
            raise InputError(f"`{key}` has {m.shape[0]} maps but `images` has {b}")
        check_tensor(m, key)  # NaN check after upsampling too
        out[str(k)] = m.detach().cpu().double().numpy()
    return out


def _boxes(boxes: Any, b: int, hw: tuple[int, int]) -> list[list[list[float]]]:
    if boxes is None:
        return [[] for _ in range(b)]
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        t = check_tensor(boxes, "boxes", ndim=(2, 3), layout="[B, 4] or [B, K, 4] (x0, y0, x1, y1)")
        boxes = t.double().tolist()
        if t.ndim == 2:
            boxes = [[row] for row in boxes]
    if not isinstance(boxes, Sequence) or len(boxes) != b:
        raise InputError(f"`boxes` must give one list of (x0, y0, x1, y1) boxes per image ({b})")
    out = []
    for i, per in enumerate(boxes):
        rows = []
        for j, box in enumerate(per):
            arr = np.asarray(box, dtype=np.float64)
            if arr.shape != (4,) or not np.isfinite(arr).all():
                raise InputError(f"`boxes[{i}][{j}]` must be 4 finite numbers (x0, y0, x1, y1); got {box!r}")
            x0, y0, x1, y1 = arr.tolist()
            if not (0 <= x0 < x1 <= hw[1] and 0 <= y0 < y1 <= hw[0]):
                raise InputError(f"`boxes[{i}][{j}]` = {box!r} is not a box inside the {hw[1]}x{hw[0]} image")
            rows.append([x0, y0, x1, y1])
        out.append(rows)
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    """RGBA ``[H, W, 4]``: the pixels of ``mask`` that touch a pixel outside it, in green."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    edge = mask & ~inner
    out = np.zeros((*mask.shape, 4), dtype=np.uint8)
    out[edge] = (0, 230, 0, 255)
    return out


def overlay_rgba(m: np.ndarray) -> tuple[np.ndarray, float]:
    """A map as RGBA: colour from the diverging scale with the limit ``max |m|``, alpha ``|m| / limit``
    (zero is transparent, so the image shows through where nothing is attributed)."""
    v = float(np.abs(m).max()) or 1.0
    t = m / v
    rgba = np.concatenate([diverging_rgb_array(t), np.floor(np.abs(t) * 255 + 0.5).astype(np.uint8)[..., None]], -1)
    return rgba, v


class ImageHeatmap(StaticFallback, anywidget.AnyWidget):
    """Images with attribution overlays: a method switch, an opacity slider, the ground truth
    outlined (mask or boxes, toggled), and pages of ``page_size`` images in a grid.

    ``images`` ``[B, 1|3, H, W]`` float (values outside [0, 1] are min-max scaled per image for
    display). ``maps``: a ``[B, H, W]`` tensor, an :class:`~xattr_nb.attribution.Attribution`
    (pixels, patches or regions: see :func:`maps_from_attribution`), or a dict ``method -> either``.
    ``masks`` ``[B, H, W]`` bool and/or ``boxes`` (``[B, 4]`` tensor or one list of
    ``(x0, y0, x1, y1)`` pixel boxes per image) are the ground truth; ``labels`` one caption per
    image. Each overlay uses its image's own symmetric limit ``max |map|``. Images and overlays
    travel as small PNGs, not float lists. A click on an image sets ``selected`` to its index.
    """

    _esm = read_asset("image_heatmap.js")
    _css = read_asset("image_heatmap.css")

    methods = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    method = traitlets.Unicode("").tag(sync=True)
    opacity = traitlets.Float(0.7).tag(sync=True)
    show_truth = traitlets.Bool(True).tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(4).tag(sync=True)
    size = traitlets.Int(160).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    _items = traitlets.List().tag(sync=True)
    _overlays = traitlets.Dict().tag(sync=True)
    _limits = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        images: Any,
        maps: Any,
        *,
        masks: Any = None,
        boxes: Any = None,
        labels: Sequence[str] | None = None,
        method: str | None = None,
        opacity: float = 0.7,
        page_size: int = 4,
        size: int = 160,
        title: str = "",
        **kwargs: Any,
    ) -> None:
        images = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
        if images.shape[1] not in (1, 3):
            raise InputError(f"`images` must have 1 or 3 channels; got {images.shape[1]}")
        b, hw = int(images.shape[0]), (int(images.shape[2]), int(images.shape[3]))
        by_method = _maps(maps, b, hw)
        mask_arr = None
        if masks is not None:
            mask_arr = check_tensor(masks, "masks", shape=(b, *hw), dtype="bool", layout="[B, H, W]").cpu().numpy()
        box_list = _boxes(boxes, b, hw)
        if labels is not None:
            if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != b:
                raise InputError(f"`labels` must be one caption per image ({b})")
            labels = [str(x) for x in labels]
        if method is not None and method not in by_method:
            raise InputError(f"`method` must be one of {list(by_method)}; got {method!r}")
        opacity = check_float(opacity, "opacity", low=0.0, high=1.0)
        page_size = check_int(page_size, "page_size", low=1, high=64)
        size = check_int(size, "size", low=16, high=1024)

        imgs = images.detach().cpu().float()
        lo, hi = imgs.amin((1, 2, 3), keepdim=True), imgs.amax((1, 2, 3), keepdim=True)
        if float(lo.min()) < 0 or float(hi.max()) > 1:
            imgs = (imgs - lo) / (hi - lo).clamp_min(1e-12)
        rgb = (imgs.expand(-1, 3, -1, -1) if imgs.shape[1] == 1 else imgs).permute(0, 2, 3, 1).numpy()
        self._rgb = np.floor(rgb * 255 + 0.5).astype(np.uint8)
        self._maps_np = by_method
        self._masks = mask_arr
        self._boxes = box_list
        self._labels = labels or [f"#{i}" for i in range(b)]
        items = []
        for i in range(b):
            has_mask = mask_arr is not None and bool(mask_arr[i].any())
            items.append(
                {
                    "image": png_b64(self._rgb[i]),
                    "w": hw[1],
                    "h": hw[0],
                    "label": self._labels[i],
                    "mask": png_b64(_outline(mask_arr[i])) if has_mask else "",
                    "boxes": box_list[i],
                }
            )
        overlays, limits = {}, {}
        for k, m in by_method.items():
            pairs = [overlay_rgba(m[i]) for i in range(b)]
            overlays[k] = [png_b64(p[0]) for p in pairs]
            limits[k] = [p[1] for p in pairs]
        super().__init__(
            method=method or next(iter(by_method)),
            opacity=opacity,
            page_size=page_size,
            size=size,
            title=str(title),
            **kwargs,
        )
        self.set_trait("methods", list(by_method))
        self._items, self._overlays, self._limits = items, overlays, limits

    def __len__(self) -> int:
        return len(self._rgb)

    @property
    def n_pages(self) -> int:
        return -(-len(self) // self.page_size)

    def page_indices(self, page: int | None = None) -> list[int]:
        """The image indices shown on ``page`` (default: the current one)."""
        p = self.page if page is None else check_int(page, "page", low=0, high=self.n_pages - 1)
        return list(range(p * self.page_size, min(len(self), (p + 1) * self.page_size)))

    def limit(self, i: int, method: str | None = None) -> float:
        """The colour limit ``max |map|`` of image ``i`` under ``method``."""
        return self._limits[method or self.method][check_int(i, "i", low=0, high=len(self) - 1)]

    @traitlets.validate("method")
    def _check_method(self, proposal: Any) -> str:
        if self._overlays and proposal["value"] not in self._overlays:
            raise InputError(f"`method` must be one of {list(self._overlays)}; got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("opacity")
    def _check_opacity(self, proposal: Any) -> float:
        return check_float(proposal["value"], "opacity", low=0.0, high=1.0)

    @traitlets.validate("page")
    def _check_page(self, proposal: Any) -> int:
        n = self.n_pages if hasattr(self, "_rgb") else 1
        return check_int(proposal["value"], "page", low=0, high=max(0, n - 1))

    @traitlets.validate("selected")
    def _check_selected(self, proposal: Any) -> int:
        n = len(self) if hasattr(self, "_rgb") else 0
        return check_int(proposal["value"], "selected", low=-1, high=n - 1)

    # ---------------------------------------------------------------- fallbacks

    def composite(self, i: int, method: str | None = None) -> np.ndarray:
        """Image ``i`` with its overlay blended at the current opacity and the mask outline: ``[H, W, 3]`` uint8."""
        rgba, _ = overlay_rgba(self._maps_np[method or self.method][i])
        a = rgba[..., 3:4] / 255.0 * self.opacity
        out = self._rgb[i] * (1 - a) + rgba[..., :3] * a
        if self.show_truth and self._masks is not None:
            edge = _outline(self._masks[i])[..., 3] > 0
            out[edge] = (0, 230, 0)
        return np.floor(out + 0.5).astype(np.uint8)

    def _plain(self) -> str:
        return (
            f"ImageHeatmap({len(self)} images {self._rgb.shape[2]}x{self._rgb.shape[1]}, methods={list(self._overlays)}, "
            f"method={self.method!r}, page {self.page + 1}/{self.n_pages})"
        )

    def _static_html(self) -> str:
        cells = []
        for i in self.page_indices():
            boxes = ""
            if self.show_truth and self._boxes[i]:
                h, w = self._rgb.shape[1:3]
                rects = "".join(
                    f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#00e600" '
                    'stroke-width="2" vector-effect="non-scaling-stroke"/>'
                    for x0, y0, x1, y1 in self._boxes[i]
                )
                boxes = (
                    f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" style="position:absolute;left:0;top:0;'
                    f'width:100%;height:100%">{rects}</svg>'
                )
            cells.append(
                f'<figure style="display:inline-block;margin:4px;text-align:center;font-size:11px">'
                f'<div style="position:relative;width:{self.size}px;height:{self.size}px">'
                f'<img src="data:image/png;base64,{png_b64(self.composite(i))}" '
                f'style="width:100%;height:100%;image-rendering:pixelated"/>{boxes}</div>'
                f"<figcaption>{esc(self._labels[i])} · ±{self.limit(i):.3g}</figcaption></figure>"
            )
        head = f"<b>{esc(self.title)}</b> " if self.title else ""
        return (
            '<div class="xih-root xih-static" style="font-family:sans-serif">'
            f'<div style="font-size:12px">{head}method: {esc(self.method)}; page {self.page + 1}/{self.n_pages} '
            f"of {len(self)} images; static view</div>" + "".join(cells) + "</div>"
        )
