"""Surrogate image classifiers of ShapesWorld (shape and colour heads) and their ensemble: the
differentiable discriminators SAGE searches against (spec §6.5 of ``23_sage.md``).

- :class:`SmallCNN` (C1): three stride-2 convolutions on the 32×32 image, two linear heads.
- :class:`ClipMLP` (C2): an MLP on a frozen TinyCLIP's unit image features
  (:func:`xattr_nb.models.clip.encode_image`), two heads. The CLIP is not trained.
- :class:`Ensemble`: the mean of the members' log-probabilities of a head, and "every member
  predicts something other than the target" (SAGE's stopping rule).
- :func:`train_surrogate`: cross-entropy on both heads over rendered images (Adam, seeded).
- :class:`ImageNetEnsemble` / :func:`load_imagenet_ensemble`: the ``scale="full"`` counterpart,
  Hugging Face ``AutoModelForImageClassification`` members (ImageNet classifiers) restricted to a list
  of target class names, with the same ``logprob`` / ``all_wrong`` calls under the one head ``"class"``.

Written by hand: two-head classifiers of this world and a log-prob-averaging ensemble are a few
lines of torch that no installed library offers in this form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.runtime import seed_everything
from xattr_nb.worlds import shapes as _sw

__all__ = ["HEADS", "ClipMLP", "Ensemble", "ImageNetEnsemble", "SmallCNN", "load_imagenet_ensemble", "train_surrogate"]

#: The heads every surrogate has, and their class counts (:data:`~xattr_nb.worlds.shapes.SHAPES`,
#: :data:`~xattr_nb.worlds.shapes.COLORS` order).
HEADS: dict[str, int] = {"shape": len(_sw.SHAPES), "color": len(_sw.COLORS)}


def _check_images(x: Any, name: str = "images") -> torch.Tensor:
    t = check_tensor(x, name, ndim=4, dtype="float", layout="[B, 3, 32, 32] in [0, 1]")
    if tuple(t.shape[1:]) != (3, 32, 32):
        raise InputError(f"`{name}` must be [B, 3, 32, 32]; got {tuple(t.shape)}")
    return t


class SmallCNN(nn.Module):
    """C1: a small CNN with a shape head and a colour head; ``forward`` returns ``{head: logits}``."""

    def __init__(self, width: int = 24):
        super().__init__()
        w = check_int(width, "width", low=1)
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1), nn.SiLU(), nn.Flatten(), nn.Linear(2 * w * 16, 96), nn.SiLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({h: nn.Linear(96, k) for h, k in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(_check_images(images) * 2 - 1)
        return {k: head(h) for k, head in self.heads.items()}


class ClipMLP(nn.Module):
    """C2: an MLP on a frozen TinyCLIP's unit image features, a shape head and a colour head."""

    def __init__(self, clip: nn.Module, hidden: int = 96):
        super().__init__()
        if not hasattr(clip, "vision_model"):
            raise InputError(f"`clip` must be a CLIPModel; got {type(clip).__name__}")
        self.clip = clip
        for p in self.clip.parameters():
            p.requires_grad_(False)
        dim = int(clip.config.projection_dim)
        hid = check_int(hidden, "hidden", low=1)
        self.mlp = nn.Sequential(nn.Linear(dim, hid), nn.SiLU())
        self.heads = nn.ModuleDict({h: nn.Linear(hid, k) for h, k in HEADS.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        from xattr_nb.models.clip import encode_image

        return encode_image(self.clip, _check_images(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.mlp(self.features(images))
        return {k: head(h) for k, head in self.heads.items()}

    def train(self, mode: bool = True) -> ClipMLP:
        super().train(mode)
        self.clip.eval()  # the CLIP stays frozen, in eval mode
        return self


def train_surrogate(
    model: nn.Module,
    images: torch.Tensor,
    shape_ids: torch.Tensor,
    color_ids: torch.Tensor,
    *,
    epochs: int = 4,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> nn.Module:
    """Fit ``model``'s two heads by cross-entropy (their sum) on ``images`` with labels ``shape_ids``
    (into :data:`~xattr_nb.worlds.shapes.SHAPES`) and ``color_ids`` (into COLORS); Adam; returns it in eval mode."""
    x = _check_images(images)
    s = check_tensor(shape_ids, "shape_ids", ndim=1, dtype="int")
    c = check_tensor(color_ids, "color_ids", ndim=1, dtype="int")
    if len(s) != len(x) or len(c) != len(x):
        raise InputError(f"`shape_ids` and `color_ids` must have one label per image ({len(x)})")
    epochs = check_int(epochs, "epochs", low=1)
    batch = check_int(batch, "batch", low=1)
    lr = check_float(lr, "lr", low=0.0)
    seed_everything(check_int(seed, "seed", low=0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            out = model(x[idx])
            loss = F.cross_entropy(out["shape"], s[idx]) + F.cross_entropy(out["color"], c[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Ensemble(nn.Module):
    """The surrogate ensemble ``D = {D_k}``: :meth:`logprob` is the mean over members of
    ``log_softmax(D_k(x)[head])`` (SAGE's surrogate loss, spec §6.2)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not isinstance(members, Sequence) or len(members) == 0:
            raise InputError("`members` must be a non-empty sequence of two-head classifiers")
        self.members = nn.ModuleList(members)

    def member_logprobs(self, images: torch.Tensor, head: str = "shape") -> torch.Tensor:
        """``[K, B, C]``: each member's log-probabilities of ``head``."""
        check_choice(head, tuple(HEADS), "head")
        return torch.stack([F.log_softmax(m(images)[head], dim=-1) for m in self.members])

    def logprob(self, images: torch.Tensor, head: str = "shape") -> torch.Tensor:
        """``[B, C]``: the members' mean log-probabilities of ``head``."""
        return self.member_logprobs(images, head).mean(0)

    def all_wrong(self, images: torch.Tensor, target: torch.Tensor, head: str = "shape") -> torch.Tensor:
        """``[B]`` bool: every member's argmax of ``head`` differs from ``target`` ``[B]``."""
        lp = self.member_logprobs(images, head)
        t = check_tensor(target, "target", ndim=1, dtype="int")
        if len(t) != lp.shape[1]:
            raise InputError(f"`target` must have one class per image ({lp.shape[1]}); got {len(t)}")
        return (lp.argmax(-1) != t.to(lp.device)[None]).all(0)


def _label_ids(id2label: dict[Any, str], classes: Sequence[str], member: str) -> list[int]:
    """The label id of each of ``classes`` in a Hugging Face ``id2label`` (a class matches a label equal to it
    or to one of its comma-separated synonyms, case-insensitive: ImageNet labels read "tabby, tabby cat")."""
    index: dict[str, int] = {}
    for i, label in sorted(((int(k), str(v)) for k, v in id2label.items()), key=lambda kv: kv[0]):
        for name in [label, *label.split(",")]:
            index.setdefault(name.strip().lower(), i)
    out = []
    for c in classes:
        if c.strip().lower() not in index:
            raise InputError(f"`classes`: {c!r} is not a label of the classifier {member} (its labels read e.g. "
                             f"{list(id2label.values())[:3]})")  # fmt: skip
        out.append(index[c.strip().lower()])
    return out


class ImageNetEnsemble(nn.Module):
    """Pretrained image classifiers (:class:`~xattr_nb.models.hub.ImageClassifier`, ImageNet labels) as a
    SAGE ensemble over ``classes`` (target class names, matched to each member's ``id2label``).

    One head, ``"class"`` (:attr:`head_sizes`). :meth:`logprob` ``[B, len(classes)]`` is the members'
    mean log-probability of each target class, the softmax taken over all of a member's labels;
    :meth:`all_wrong` says whether every member's argmax over all its labels differs from the target's
    label. Images ``[B, 3, H, W]`` in ``[0, 1]`` are resized (bilinear, antialiased: differentiable) to each
    member's ``config.image_size`` (224 when it has none)."""

    HEAD = "class"

    def __init__(self, members: Sequence[nn.Module], classes: Sequence[str]):
        super().__init__()
        from xattr_nb.checks import check_texts

        if not isinstance(members, Sequence) or len(members) == 0:
            raise InputError("`members` must be a non-empty sequence of ImageClassifier (load_image_classifier)")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module) or not hasattr(getattr(m, "hf", None), "config"):
                raise InputError(
                    f"`members[{i}]` must be an ImageClassifier (load_image_classifier); got {type(m).__name__}"
                )
        self.classes = check_texts(classes, "classes")
        self.members = nn.ModuleList(members)
        ids = [_label_ids(m.hf.config.id2label, self.classes, f"members[{i}]") for i, m in enumerate(members)]
        self.register_buffer("label_ids", torch.tensor(ids, dtype=torch.long), persistent=False)  # [K, C]
        self.head_sizes = {self.HEAD: len(self.classes)}

    def _logits(self, m: nn.Module, images: torch.Tensor) -> torch.Tensor:
        size = int(getattr(m.hf.config, "image_size", 224) or 224)
        x = images.to(m.mean.device, m.mean.dtype)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return m(x)

    def member_logprobs(self, images: torch.Tensor, head: str = HEAD) -> torch.Tensor:
        """``[K, B, len(classes)]``: each member's log-probabilities of the target classes."""
        check_choice(head, (self.HEAD,), "head")
        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, H, W] in [0, 1]")
        return torch.stack([F.log_softmax(self._logits(m, x), -1)[:, self.label_ids[k]]
                            for k, m in enumerate(self.members)])  # fmt: skip

    def logprob(self, images: torch.Tensor, head: str = HEAD) -> torch.Tensor:
        """``[B, len(classes)]``: the members' mean log-probabilities of the target classes."""
        return self.member_logprobs(images, head).mean(0)

    def predictions(self, images: torch.Tensor) -> torch.Tensor:
        """``[K, B]``: each member's argmax over all its labels (label ids)."""
        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, H, W] in [0, 1]")
        return torch.stack([self._logits(m, x).argmax(-1) for m in self.members])

    def label_names(self, ids: torch.Tensor, member: int = 0) -> list[str]:
        """The label names of label ids of member ``member``."""
        id2label = self.members[check_int(member, "member", low=0, high=len(self.members) - 1)].hf.config.id2label
        return [str(id2label.get(int(i), id2label.get(str(int(i)), int(i)))) for i in ids]

    def all_wrong(self, images: torch.Tensor, target: torch.Tensor, head: str = HEAD) -> torch.Tensor:
        """``[B]`` bool: every member's argmax differs from the label of ``classes[target]`` (``target`` ``[B]``)."""
        check_choice(head, (self.HEAD,), "head")
        pred = self.predictions(images)
        t = check_tensor(target, "target", ndim=1, dtype="int")
        if len(t) != pred.shape[1] or int(t.min()) < 0 or int(t.max()) >= len(self.classes):
            raise InputError(
                f"`target` must hold one index into `classes` per image ({pred.shape[1]}); got {tuple(t.shape)}"
            )
        want = self.label_ids[:, t.to(self.label_ids.device)]  # [K, B]
        return (pred != want.to(pred.device)).all(0)


def load_imagenet_ensemble(
    names: Sequence[str | Any],
    classes: Sequence[str],
    *,
    device: str = "cpu",
    local_files_only: bool | None = None,
    arg: str = "names",
) -> ImageNetEnsemble:
    """An :class:`ImageNetEnsemble` of the ``AutoModelForImageClassification`` checkpoints ``names`` (hub
    names or folders written by ``save_pretrained``; safetensors only) over the target ``classes``.
    Raises :class:`~xattr_nb.checks.InputError` naming ``names[i]`` (``arg``: the caller's name for
    ``names``) when one cannot be loaded."""
    from xattr_nb.models.hub import load_image_classifier

    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or len(names) == 0:
        raise InputError(f"`{arg}` must be a non-empty list of image-classifier names or folders; got {names!r}")
    members = []
    for i, n in enumerate(names):
        try:
            members.append(load_image_classifier(n, device=device, local_files_only=local_files_only))
        except InputError as exc:
            raise InputError(f"`{arg}[{i}]`: {exc}") from exc
        except (RuntimeError, KeyError, TypeError) as exc:
            raise InputError(f"`{arg}[{i}]` {str(n)!r} is not an image classifier: {exc}") from exc
    for p in (q for m in members for q in m.parameters()):
        p.requires_grad_(False)
    return ImageNetEnsemble(members, classes)
