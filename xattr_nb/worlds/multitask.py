"""``multitask_moe``: four digit-list tasks, each asked in six paraphrases, some of them rare.

Every example reads ``[BOS] <instruction> : d1 d2 d3 d4 = o1 o2 o3 o4 [EOS]`` (words separated by
single spaces, one token per word under :func:`~xattr_nb.models.text.word_tokenizer`). The task
*families* (ground truth for routing–task alignment):

- ``copy``: the four digits as they are;
- ``reverse``: in reverse order;
- ``sort``: in ascending order;
- ``add_one``: each digit plus one, modulo 10.

Each family has six instruction paraphrases (:data:`PARAPHRASES`). The first two of each are
*frequent*, the other four *rare*: :func:`multitask_moe` with ``rare_share=0.1`` draws the rare
ones for 10 % of the examples (the imbalanced base-training data of RoMA's small-scale
reproduction); ``rare_share=None`` draws the 24 paraphrases equally often (router fine-tuning and
test sets). Every paraphrase word is in :func:`multitask_vocab`, so a model trained on the
imbalanced data has seen each word, if rarely.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = [
    "FAMILIES",
    "N_DIGITS",
    "N_FREQUENT",
    "PARAPHRASES",
    "SPECIALS",
    "MultitaskData",
    "answer_digits",
    "multitask_moe",
    "multitask_vocab",
]

SPECIALS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")
FAMILIES: tuple[str, ...] = ("copy", "reverse", "sort", "add_one")
N_DIGITS = 4
N_FREQUENT = 2  # the first N_FREQUENT paraphrases of each family are the frequent ones
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "copy": (
        "copy the list", "repeat the digits", "write it again", "say the same numbers", "echo the sequence",
        "duplicate these digits",
    ),
    "reverse": (
        "reverse the list", "write it backwards", "flip the order", "read from the end", "mirror the digits",
        "invert the sequence",
    ),
    "sort": (
        "sort the list", "order the digits", "arrange from small to large", "put them in ascending order",
        "rank the numbers", "smallest first please",
    ),
    "add_one": (
        "add one to each", "increment every digit", "plus one modulo ten", "raise each by one",
        "bump the numbers up", "next digit for each",
    ),
}  # fmt: skip


def answer_digits(family: str, digits: list[int]) -> list[int]:
    """The output digits of task ``family`` on ``digits``."""
    if family not in FAMILIES:
        raise InputError(f"`family` must be one of {list(FAMILIES)}; got {family!r}")
    if family == "copy":
        return list(digits)
    if family == "reverse":
        return list(reversed(digits))
    if family == "sort":
        return sorted(digits)
    return [(d + 1) % 10 for d in digits]


def multitask_vocab() -> list[str]:
    """Specials, digits ``0``–``9``, ``:`` and ``=``, then every paraphrase word (sorted): the id order."""
    words = sorted({w for ps in PARAPHRASES.values() for p in ps for w in p.split()})
    return [*SPECIALS, *[str(d) for d in range(10)], ":", "=", *words]


@dataclasses.dataclass
class MultitaskData(WorldData):
    """``n`` examples of the multitask world.

    - ``texts``: the full sequences (``[BOS] ... [EOS]``); ``ids`` ``[n, T]`` right-padded with
      ``[PAD]`` (id 0) and ``mask`` ``[n, T]`` bool; ``T`` is the longest sequence of this draw.
    - ``prompt_len`` ``[n]``: tokens up to and including ``=``; ``ids[i, prompt_len[i] - 1]`` is
      ``=``, the last prompt token (where RoMA reads routing weights), and the answer occupies
      ``ids[i, prompt_len[i] : prompt_len[i] + 4]``.
    - ``answer`` ``[n, 4]``: the output digits' token ids; ``digits`` ``[n, 4]``: the input digits.
    - ``task`` ``[n]``: family index into :data:`FAMILIES` (ground truth); ``paraphrase`` ``[n]``:
      global paraphrase index ``family * 6 + j``; ``rare`` ``[n]`` bool: ``j >= N_FREQUENT``.
    - ``instructions``: the instruction text of each example (what the task embedder reads).
    """

    texts: list[str]
    instructions: list[str]
    ids: torch.Tensor
    mask: torch.Tensor
    prompt_len: torch.Tensor
    answer: torch.Tensor
    digits: torch.Tensor
    task: torch.Tensor
    paraphrase: torch.Tensor
    rare: torch.Tensor
    vocab: list[str]
    _items: ClassVar[tuple[str, ...]] = (
        "texts", "instructions", "ids", "mask", "prompt_len", "answer", "digits", "task", "paraphrase", "rare",
    )  # fmt: skip

    @staticmethod
    def paraphrase_texts() -> list[str]:
        """The 24 instructions in global paraphrase order."""
        return [p for f in FAMILIES for p in PARAPHRASES[f]]


def multitask_moe(
    n: int, *, rare_share: float | None = 0.1, families: tuple[str, ...] = FAMILIES, seed: int = 0
) -> MultitaskData:
    """Draw ``n`` examples: a family uniformly from ``families``, then one of its paraphrases, then 4 digits.

    ``rare_share``: the probability of a rare paraphrase (spread evenly over the 4 rare ones; the
    frequent two share the rest evenly), or ``None`` for all six equally likely. Deterministic per
    ``seed``.
    """
    n = check_n(n)
    seed = check_seed(seed)
    if rare_share is not None:
        rare_share = check_float(rare_share, "rare_share", low=0.0, high=1.0)
    if isinstance(families, str) or not families or any(f not in FAMILIES for f in families):
        raise InputError(f"`families` must be a non-empty tuple of names from {list(FAMILIES)}; got {families!r}")
    n_para = len(PARAPHRASES[FAMILIES[0]])
    check_int(N_FREQUENT, "N_FREQUENT", low=1, high=n_para - 1)
    if rare_share is None:
        p_para = np.full(n_para, 1.0 / n_para)
    else:
        n_rare = n_para - N_FREQUENT
        p_para = np.array([(1 - rare_share) / N_FREQUENT] * N_FREQUENT + [rare_share / n_rare] * n_rare)
    rng = np.random.default_rng(seed)
    fam_idx = np.array([FAMILIES.index(f) for f in families])[rng.integers(0, len(families), n)]
    para_idx = rng.choice(n_para, size=n, p=p_para)
    digits = rng.integers(0, 10, size=(n, N_DIGITS))
    vocab = multitask_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    texts, instructions, rows, plen, answers = [], [], [], [], []
    for f, j, d in zip(fam_idx, para_idx, digits, strict=True):
        family = FAMILIES[f]
        instr = PARAPHRASES[family][j]
        out = answer_digits(family, d.tolist())
        prompt = ["[BOS]", *instr.split(), ":", *map(str, d.tolist()), "="]
        words = [*prompt, *map(str, out), "[EOS]"]
        texts.append(" ".join(words))
        instructions.append(instr)
        rows.append([index[w] for w in words])
        plen.append(len(prompt))
        answers.append([index[str(o)] for o in out])
    t_max = max(len(r) for r in rows)
    ids = torch.zeros((n, t_max), dtype=torch.long)
    mask = torch.zeros((n, t_max), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r)
        mask[i, : len(r)] = True
    return MultitaskData(
        texts=texts,
        instructions=instructions,
        ids=ids,
        mask=mask,
        prompt_len=torch.as_tensor(plen),
        answer=torch.as_tensor(answers),
        digits=torch.as_tensor(digits),
        task=torch.as_tensor(fam_idx),
        paraphrase=torch.as_tensor(fam_idx * n_para + para_idx),
        rare=torch.as_tensor(para_idx >= N_FREQUENT),
        vocab=vocab,
    )
