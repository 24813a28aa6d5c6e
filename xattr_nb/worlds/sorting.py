"""Digit sorting: a text task whose reward is exact (CREAM, paper 25).

A prompt is ``L`` random digits followed by ``=`` (``"529271="``); the correct response is the same
digits sorted (``"122579"``). Because the answer is computable, every response has a known quality:

- :meth:`SortTask.reward`: ``r*(p, y) = 1 − lev(y, sorted(p)) / L`` (Levenshtein distance, so one
  adjacent swap costs 2 edits), ``0`` for a malformed response (wrong length or a non-digit);
- :meth:`SortTask.exact`: ``1`` if ``y`` is the sorted string.

:meth:`SortTask.noisy_corpus` is the "web" corpus a base model is pretrained on: a share
``p_correct`` of correct sorts, the rest *near-sorts*, the sorted string with 1 to ``max_swaps``
adjacent swaps of unequal digits (always wrong, close in reward). The reward is the world's own
table, so a judge built from it is an oracle; the notebook uses it only to evaluate and as a
clearly labelled ceiling.

The Levenshtein distance is written by hand (a 7×7 dynamic programme; no edit-distance package
is installed here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xattr_nb.checks import InputError, check_float, check_int

__all__ = ["SortTask", "levenshtein"]

DIGITS = "0123456789"


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between two strings."""
    if not isinstance(a, str) or not isinstance(b, str):
        raise InputError(f"`a` and `b` must be strings; got {type(a).__name__} and {type(b).__name__}")
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class SortTask:
    """Sort ``length`` digits: prompts, targets, the exact reward and the noisy pretraining corpus."""

    length: int = 6
    sep: str = "="

    def __post_init__(self) -> None:
        check_int(self.length, "length", low=2)
        if not isinstance(self.sep, str) or len(self.sep) != 1 or self.sep in DIGITS:
            raise InputError(f"`sep` must be one non-digit character; got {self.sep!r}")

    @property
    def alphabet(self) -> str:
        """Every character a prompt or response uses (the tokenizer's vocabulary, specials aside)."""
        return DIGITS + self.sep

    def prompts(self, n: int, seed: int = 0) -> list[str]:
        """``n`` prompts of ``length`` uniform digits, each ending with ``sep``."""
        check_int(n, "n", low=1)
        rng = np.random.default_rng(check_int(seed, "seed", low=0))
        draws = rng.integers(0, 10, size=(n, self.length))
        return ["".join(DIGITS[d] for d in row) + self.sep for row in draws]

    def _digits(self, prompt: Any) -> str:
        if not isinstance(prompt, str) or len(prompt) != self.length + 1 or not prompt.endswith(self.sep):
            raise InputError(f"`prompt` must be {self.length} digits then {self.sep!r}; got {prompt!r}")
        body = prompt[:-1]
        if not all(c in DIGITS for c in body):
            raise InputError(f"`prompt` must be {self.length} digits then {self.sep!r}; got {prompt!r}")
        return body

    def target(self, prompt: str) -> str:
        """The correct response: the prompt's digits in ascending order."""
        return "".join(sorted(self._digits(prompt)))

    def well_formed(self, response: Any) -> bool:
        """``length`` digits and nothing else."""
        return isinstance(response, str) and len(response) == self.length and all(c in DIGITS for c in response)

    def reward(self, prompt: str, response: str) -> float:
        """``1 − lev(response, target) / length``; ``0`` if the response is malformed."""
        t = self.target(prompt)
        if not isinstance(response, str):
            raise InputError(f"`response` must be a string; got {type(response).__name__}")
        if not self.well_formed(response):
            return 0.0
        return 1.0 - levenshtein(response, t) / self.length

    def exact(self, prompt: str, response: str) -> float:
        """``1.0`` if the response is the sorted string, else ``0.0``."""
        return float(response == self.target(prompt))

    def rewards(self, prompts: list[str], responses: list[list[str]] | list[str]) -> np.ndarray:
        """Exact rewards of many responses: ``[P]`` for one response per prompt, ``[P, N]`` for N."""
        if len(prompts) != len(responses):
            raise InputError(f"`responses` must have one entry per prompt ({len(prompts)}); got {len(responses)}")
        if responses and isinstance(responses[0], str):
            return np.array([self.reward(p, y) for p, y in zip(prompts, responses, strict=True)])
        return np.array([[self.reward(p, y) for y in ys] for p, ys in zip(prompts, responses, strict=True)])

    def near_sort(self, prompt: str, n_swaps: int, rng: np.random.Generator) -> str:
        """The sorted string with ``n_swaps`` adjacent swaps of unequal digits (wrong whenever one is possible)."""
        s = list(self.target(prompt))
        spots = [i for i in range(self.length - 1) if s[i] != s[i + 1]]
        if not spots:
            return "".join(s)
        for _ in range(n_swaps):
            spots = [i for i in range(self.length - 1) if s[i] != s[i + 1]]
            i = int(rng.choice(spots))
            s[i], s[i + 1] = s[i + 1], s[i]
        out = "".join(s)
        if out == self.target(prompt):  # swaps undid each other: one more always breaks the order
            i = int(rng.choice([i for i in range(self.length - 1) if s[i] != s[i + 1]]))
            s[i], s[i + 1] = s[i + 1], s[i]
            out = "".join(s)
        return out

    def noisy_corpus(
        self, n: int, p_correct: float = 0.5, max_swaps: int = 3, seed: int = 0
    ) -> tuple[list[str], list[str]]:
        """``(prompts, responses)``: correct sorts with probability ``p_correct``, else near-sorts
        with 1..``max_swaps`` adjacent swaps (uniform)."""
        check_int(n, "n", low=1)
        check_float(p_correct, "p_correct", low=0.0, high=1.0)
        check_int(max_swaps, "max_swaps", low=1)
        prompts = self.prompts(n, seed=seed)
        rng = np.random.default_rng(seed + 1_000_003)
        responses = []
        for p in prompts:
            if rng.random() < p_correct:
                responses.append(self.target(p))
            else:
                responses.append(self.near_sort(p, int(rng.integers(1, max_swaps + 1)), rng))
        return prompts, responses
