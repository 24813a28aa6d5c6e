"""The one result type of the project: :class:`Attribution`.

Tokens, pixels, regions, patches, tabular features and model components are all scored by the
same type, so the same plots, widgets and metrics serve every method and every paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from xattr_nb.checks import InputError, check_choice, check_tensor
from xattr_nb.runtime import Cost

Kind = Literal["tokens", "pixels", "regions", "patches", "features", "components"]
KINDS: tuple[str, ...] = ("tokens", "pixels", "regions", "patches", "features", "components")
_NDIM = {"tokens": 2, "pixels": 3, "regions": 2, "patches": 3, "features": 2, "components": 2}
_LAYOUT = {
    "tokens": "[B, T]",
    "pixels": "[B, H, W]",
    "regions": "[B, R]",
    "patches": "[B, Hp, Wp]",
    "features": "[B, F]",
    "components": "[B, N]",
}


@dataclass
class Attribution:
    """Scores over the units of a batch of inputs, with what they score and what they cost.

    - ``scores``: float tensor, ``[B, T]`` tokens, ``[B, H, W]`` pixels (channels summed),
      ``[B, R]`` regions, ``[B, Hp, Wp]`` patches, ``[B, F]`` features, ``[B, N]`` components.
    - ``kind``: which of those the scores are.
    - ``method``: the registry name of the method that produced them.
    - ``target``: ``[B]`` the class / token id explained for each example.
    - ``labels``: names of the units: per example for tokens (``list[list[str]]``), shared for
      components and features (``list[str]``); ``None`` for pixels.
    - ``mask``: ``[B, T]`` bool, which token positions are real (padding is ``False``); the text
      metrics use it as the attention mask when none is given.
    - ``cost``: forward and backward passes, **totalled over the batch** (rows through the model:
      one forward of a batch of 4 counts 4), and wall time; ``cost.forward / len(self)`` is the
      cost per example.
    - ``meta``: anything else the method wants to keep (baseline, steps, layer, region masks).
    - ``special``: ``[B, T]`` bool, real tokens that are special (``[CLS]``, ``[SEP]``, ``<bos>``):
      shown, but never erased by the text faithfulness metrics (ERASER's rule).
    """

    scores: torch.Tensor
    kind: Kind
    method: str
    target: torch.Tensor
    cost: Cost = field(default_factory=Cost)
    labels: list[Any] | None = None
    mask: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    special: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, KINDS, "kind")
        self.scores = check_tensor(
            self.scores, "scores", ndim=_NDIM[self.kind], dtype="float", layout=_LAYOUT[self.kind]
        ).detach()
        b = self.scores.shape[0]
        self.target = check_tensor(torch.as_tensor(self.target), "target", shape=(b,), dtype="int", layout="[B]")
        if self.kind == "tokens" and self.labels is not None:
            if len(self.labels) != b:
                raise InputError(f"`labels` must hold one token list per example ({b}); got {len(self.labels)}")
            for i, toks in enumerate(self.labels):
                n = int(self.mask[i].sum()) if self.mask is not None else self.scores.shape[1]
                if len(toks) != n:
                    raise InputError(f"`labels[{i}]` has {len(toks)} tokens but scores have {n} positions")
        if (
            self.kind in ("components", "features")
            and self.labels is not None
            and len(self.labels) != self.scores.shape[1]
        ):
            raise InputError(f"`labels` must name the {self.scores.shape[1]} {self.kind}; got {len(self.labels)} names")
        if self.mask is not None:
            self.mask = check_tensor(
                self.mask, "mask", shape=tuple(self.scores.shape[:2]), dtype="bool", layout="[B, T]"
            )
        if self.special is not None:
            if self.kind != "tokens":
                raise InputError(f"`special` marks tokens; this Attribution scores {self.kind}")
            self.special = check_tensor(
                self.special, "special", shape=tuple(self.scores.shape[:2]), dtype="bool", layout="[B, T]"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, i: int) -> Attribution:
        """The ``i``-th example as a batch of one."""
        if not -len(self) <= i < len(self):
            raise InputError(f"index {i} is out of range for an Attribution of {len(self)} example(s)")
        i = i % len(self)
        labels = self.labels
        if self.kind == "tokens" and labels is not None:
            labels = [labels[i]]
        return replace(
            self,
            scores=self.scores[i : i + 1],
            target=self.target[i : i + 1],
            labels=labels,
            mask=None if self.mask is None else self.mask[i : i + 1],
            special=None if self.special is None else self.special[i : i + 1],
            meta=dict(self.meta),
        )

    def tokens(self, i: int = 0) -> tuple[list[str], torch.Tensor]:
        """The real (unpadded) tokens of example ``i`` and their scores."""
        if self.kind != "tokens":
            raise InputError(f"tokens() needs kind='tokens'; this Attribution scores {self.kind}")
        s = self.scores[i] if self.mask is None else self.scores[i][self.mask[i]]
        toks = self.labels[i] if self.labels is not None else [str(j) for j in range(len(s))]
        return list(toks), s

    def normalized(self, how: str = "maxabs") -> Attribution:
        """Rescale each example: ``maxabs`` to [-1, 1], ``l1`` to unit absolute sum, ``minmax`` to [0, 1]."""
        check_choice(how, ("maxabs", "l1", "minmax"), "how")
        s = self.scores.flatten(1)
        if self.mask is not None:
            s = s.masked_fill(~self.mask, 0.0)
        if how == "maxabs":
            out = s / s.abs().amax(1, keepdim=True).clamp_min(1e-12)
        elif how == "l1":
            out = s / s.abs().sum(1, keepdim=True).clamp_min(1e-12)
        else:
            lo, hi = s.amin(1, keepdim=True), s.amax(1, keepdim=True)
            out = (s - lo) / (hi - lo).clamp_min(1e-12)
        return replace(self, scores=out.view_as(self.scores), meta={**self.meta, "normalized": how})

    def __repr__(self) -> str:
        shape = list(self.scores.shape)
        tgt = self.target.tolist()
        tgt_s = str(tgt) if len(tgt) <= 8 else f"{tgt[:8]}..."
        return f"Attribution(method={self.method!r}, kind={self.kind!r}, scores={shape}, target={tgt_s}, cost=({self.cost}))"
