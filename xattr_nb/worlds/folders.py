"""Real images at paper scale: an ``ImageFolder``-style tree read into the library's convention.

``scale="full"`` notebooks point this at ImageNet's validation set, CUB-200 or another dataset
sorted into ``root/<class>/<image>``; the tests run it on a folder of PNGs they write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xattr_nb.checks import InputError, check_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_image_folder(
    root: str | os.PathLike,
    *,
    size: int = 224,
    per_class: int | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read ``root/<class>/<image>`` as ``(images [N, 3, size, size] in [0, 1], labels [N], class names)``.

    Class ``i`` is the ``i``-th folder of ``classes`` (default: every sub-folder, sorted, which for
    ImageNet's validation set sorted by WordNet id is the standard class index). Each image is
    resized (shorter side to ``size``) and centre-cropped. ``per_class`` keeps a seeded random
    subset of each class (default: all images).
    """
    from PIL import Image

    path = Path(os.fspath(root)).expanduser()
    if not path.is_dir():
        raise InputError(f"`root` must be a folder of class folders; {str(root)!r} is not a folder")
    size = check_int(size, "size", low=8)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    if per_class is not None:
        per_class = check_int(per_class, "per_class", low=1)
    found = sorted(d.name for d in path.iterdir() if d.is_dir())
    names = found if classes is None else [str(c) for c in classes]
    missing = [c for c in names if c not in found]
    if not names or missing:
        raise InputError(f"`classes` must name class folders of {path}; missing {missing}, found {found[:10]}")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(names):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"class folder {path / name} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        if per_class is not None and len(files) > per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        for f in files:
            with Image.open(f) as im:
                im = im.convert("RGB")
                r = size / min(im.size)
                im = im.resize((max(size, round(im.width * r)), max(size, round(im.height * r))), Image.BILINEAR)
                left, top = (im.width - size) // 2, (im.height - size) // 2
                arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
            xs.append(torch.from_numpy(arr).permute(2, 0, 1))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long), names


def read_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file as ``[3, size, size]`` in [0, 1]: RGB, shorter side resized to ``size``
    (bicubic, as CLIP's processor does), centre crop."""
    from PIL import Image

    size = check_int(size, "size", low=8)
    with Image.open(os.fspath(path)) as im:
        im = im.convert("RGB")
        r = size / min(im.size)
        im = im.resize((max(size, round(im.width * r)), max(size, round(im.height * r))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)
