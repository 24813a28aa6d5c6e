"""Clean/corrupted prompt pairs: the one input type of patching-style experiments.

A pair is a clean prompt and a corrupted twin that differs in one factor (the name the answer
depends on, the fact a question asks about), so that patching an activation from one run into
the other isolates what that factor changes. Activation patching, attribution patching, RelP and
CMA all read this type; paper modules build it from their worlds (IOI, KV-QA).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from xattr_nb.checks import InputError, check_tensor


@dataclass
class ContrastPairs:
    """A batch of clean prompts and their corrupted twins, as token ids.

    - ``clean_ids`` / ``corr_ids`` ``[B, T]``: the two runs, position-aligned (same length ``T``).
    - ``answer`` ``[B]``: the token the clean run should predict; ``wrong`` ``[B]``: the token the
      corruption favours (the metric is usually ``logit(answer) - logit(wrong)``).
    - ``clean_mask`` / ``corr_mask`` ``[B, T]``: attention masks when the batch is padded (``None``:
      every position is real).
    - ``tokens``: a label per position (shared by the batch) or per example; ``texts``: the clean prompts.
    """

    clean_ids: torch.Tensor
    corr_ids: torch.Tensor
    answer: torch.Tensor
    wrong: torch.Tensor
    clean_mask: torch.Tensor | None = None
    corr_mask: torch.Tensor | None = None
    tokens: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clean_ids = check_tensor(self.clean_ids, "clean_ids", ndim=2, dtype="int", layout="[B, T]")
        b, t = self.clean_ids.shape
        self.corr_ids = check_tensor(self.corr_ids, "corr_ids", shape=(b, t), dtype="int", layout="[B, T]")
        self.answer = check_tensor(torch.as_tensor(self.answer), "answer", shape=(b,), dtype="int", layout="[B]")
        self.wrong = check_tensor(torch.as_tensor(self.wrong), "wrong", shape=(b,), dtype="int", layout="[B]")
        for name in ("clean_mask", "corr_mask"):
            m = getattr(self, name)
            if m is not None:
                setattr(self, name, check_tensor(m, name, shape=(b, t), layout="[B, T]"))
        if self.texts and len(self.texts) != b:
            raise InputError(f"`texts` holds {len(self.texts)} prompts but the batch has {b}")

    def __len__(self) -> int:
        return int(self.clean_ids.shape[0])

    def __getitem__(self, rows: Any) -> ContrastPairs:
        """The pairs at ``rows`` (an int, a slice, a list or a tensor of indices)."""
        idx = torch.arange(len(self))[rows].reshape(-1)
        per_example = bool(self.tokens) and isinstance(self.tokens[0], list)
        return replace(
            self,
            clean_ids=self.clean_ids[idx],
            corr_ids=self.corr_ids[idx],
            answer=self.answer[idx],
            wrong=self.wrong[idx],
            clean_mask=None if self.clean_mask is None else self.clean_mask[idx],
            corr_mask=None if self.corr_mask is None else self.corr_mask[idx],
            tokens=[self.tokens[i] for i in idx.tolist()] if per_example else list(self.tokens),
            texts=[self.texts[i] for i in idx.tolist()] if self.texts else [],
        )

    def to(self, device: Any) -> ContrastPairs:
        """The same pairs with every tensor on ``device``."""
        return replace(
            self,
            **{
                k: getattr(self, k).to(device)
                for k in ("clean_ids", "corr_ids", "answer", "wrong", "clean_mask", "corr_mask")
                if getattr(self, k) is not None
            },
        )
