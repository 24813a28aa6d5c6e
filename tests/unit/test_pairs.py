"""ContrastPairs: shapes checked, rows selected consistently, moved between devices."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.interventions.pairs import ContrastPairs


def _pairs() -> ContrastPairs:
    clean = torch.arange(12).view(3, 4)
    return ContrastPairs(clean, clean + 100, [1, 2, 3], [4, 5, 6], tokens=["a", "b", "c", "d"], texts=["x", "y", "z"])


def test_rows_select_every_field_together():
    p = _pairs()[[2, 0]]
    assert p.clean_ids[:, 0].tolist() == [8, 0] and p.corr_ids[:, 0].tolist() == [108, 100]
    assert p.answer.tolist() == [3, 1] and p.wrong.tolist() == [6, 4] and p.texts == ["z", "x"]
    assert p.tokens == ["a", "b", "c", "d"] and len(p) == 2
    assert len(_pairs()[1]) == 1 and len(_pairs().to("cpu")) == 3


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"corr_ids": torch.zeros(3, 5, dtype=torch.long)}, "corr_ids"),
        ({"answer": [1, 2]}, "answer"),
        ({"clean_mask": torch.ones(2, 4)}, "clean_mask"),
        ({"texts": ["only one"]}, "texts"),
        ({"clean_ids": torch.zeros(3, 4)}, "clean_ids"),
    ],
)
def test_bad_pairs_name_the_field(kw, match):
    base = {"clean_ids": torch.zeros(3, 4, dtype=torch.long), "corr_ids": torch.ones(3, 4, dtype=torch.long),
            "answer": [1, 2, 3], "wrong": [3, 2, 1]}  # fmt: skip
    with pytest.raises(InputError, match=match):
        ContrastPairs(**{**base, **kw})
