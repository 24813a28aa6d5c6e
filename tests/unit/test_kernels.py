"""Kernels: region partitions, cumulative reveal masks, token masking and masked token scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.kernels import (
    batched_forward,
    check_regions,
    compose_masked,
    compose_token_masked,
    count_passes,
    cumulative_keep,
    grid_regions,
    masked_scores,
    masked_token_scores,
)


class TokenSum(nn.Module):
    """Classifier whose logit for class c is the sum of w[c, id] over attended tokens."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(weights)  # [C, V]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        per_tok = self.w[:, input_ids].permute(1, 2, 0)  # [B, T, C]
        if attention_mask is not None:
            per_tok = per_tok * attention_mask.unsqueeze(-1)
        return per_tok.sum(1)


class TokenLM(nn.Module):
    """LM whose next-token logits at position t are the one-hot of the token at t (an echo)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return nn.functional.one_hot(input_ids, self.vocab).float() * self.scale  # [B, T, V]


# ------------------------------------------------------------------ regions


def test_grid_regions_partition_and_order():
    g = grid_regions(4, 6, 2, 3)
    assert g.shape == (6, 4, 6) and g.dtype == torch.bool
    assert torch.equal(g.sum(0), torch.ones(4, 6, dtype=torch.long))  # disjoint and covering
    assert g.sum((1, 2)).tolist() == [4] * 6
    # region 4 = grid row 1, column 1 -> rows 2..3, columns 2..3
    assert g[4, 2:, 2:4].all() and int(g[4].sum()) == 4


def test_grid_regions_uneven_still_covers():
    g = grid_regions(5, 7, 2, 3)
    assert torch.equal(g.sum(0), torch.ones(5, 7, dtype=torch.long))
    sizes = g.sum((1, 2))
    assert int(sizes.sum()) == 35 and int(sizes.max() - sizes.min()) <= 5


def test_grid_regions_rejects_more_rows_than_pixels():
    with pytest.raises(InputError, match="rows"):
        grid_regions(3, 3, 4, 1)


def test_check_regions_rejects_overlap():
    g = grid_regions(4, 4, 2, 2)
    g[0, 2, 2] = True
    with pytest.raises(InputError, match="overlap"):
        check_regions(g)


def test_check_regions_rejects_gap():
    g = grid_regions(4, 4, 2, 2)
    g[3, 3, 3] = False
    with pytest.raises(InputError, match="uncovered"):
        check_regions(g)


def test_check_regions_rejects_float_masks():
    with pytest.raises(InputError, match="regions"):
        check_regions(grid_regions(4, 4, 2, 2).float())


def test_cumulative_keep_reveals_in_order():
    g = grid_regions(2, 2, 2, 2)  # four single pixels
    keep = cumulative_keep(g, torch.tensor([3, 0, 2, 1]))
    assert keep.shape == (5, 2, 2)
    assert keep.flatten(1).tolist() == [
        [False, False, False, False],
        [False, False, False, True],
        [True, False, False, True],
        [True, False, True, True],
        [True, True, True, True],
    ]


def test_cumulative_keep_rejects_non_permutation():
    with pytest.raises(InputError, match="permutation"):
        cumulative_keep(grid_regions(2, 2, 2, 2), torch.tensor([0, 0, 1, 2]))


def test_cumulative_keep_rejects_wrong_length():
    with pytest.raises(InputError, match="permutation"):
        cumulative_keep(grid_regions(2, 2, 2, 2), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------ image masking (lead's kernels, kept)


def test_masked_scores_counts_passes_and_matches_compose():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = torch.rand(3, 4, 4)
    keep = cumulative_keep(grid_regions(4, 4, 2, 2), torch.arange(4))
    with count_passes(model) as c:
        s = masked_scores(model, x, keep, 2, batch_size=2, output="logit")
    assert c.forward == 5
    expected = batched_forward(model, compose_masked(x, keep))[:, 2]
    assert torch.allclose(s, expected)


# ------------------------------------------------------------------ tokens


def test_compose_token_masked_scalar_and_per_position():
    ids = torch.tensor([5, 6, 7])
    keep = torch.tensor([[True, False, True], [False, False, False]])
    assert compose_token_masked(ids, keep, 0).tolist() == [[5, 0, 7], [0, 0, 0]]
    repl = torch.tensor([1, 2, 3])
    assert compose_token_masked(ids, keep, repl).tolist() == [[5, 2, 7], [1, 2, 3]]


def test_compose_token_masked_rejects_length_mismatch():
    with pytest.raises(InputError, match="keep"):
        compose_token_masked(torch.tensor([1, 2, 3]), torch.ones(2, 4, dtype=torch.bool), 0)


def test_compose_token_masked_rejects_float_keep():
    with pytest.raises(InputError, match="keep"):
        compose_token_masked(torch.tensor([1, 2, 3]), torch.ones(2, 3), 0)


def test_compose_token_masked_rejects_negative_replace_id():
    with pytest.raises(InputError, match="replace_id"):
        compose_token_masked(torch.tensor([1, 2, 3]), torch.ones(2, 3, dtype=torch.bool), -1)


def test_masked_token_scores_classifier_closed_form_and_pass_count():
    w = torch.zeros(2, 10)
    w[1, 3], w[1, 4], w[1, 5] = 1.0, 2.0, 4.0  # token 0 (the replacement) weighs nothing
    model = TokenSum(w)
    ids = torch.tensor([3, 4, 5])
    keep = torch.tensor([[True, True, True], [False, True, True], [True, False, False], [False, False, False]])
    with count_passes(model) as c:
        s = masked_token_scores(model, ids, keep, 1, replace_id=0, output="logit", batch_size=3)
    assert c.forward == 4
    assert s.tolist() == [7.0, 6.0, 1.0, 0.0]


def test_masked_token_scores_respects_attention_mask():
    w = torch.zeros(2, 10)
    w[1, 3], w[1, 4] = 1.0, 2.0
    s = masked_token_scores(
        TokenSum(w),
        torch.tensor([3, 4]),
        torch.ones(1, 2, dtype=torch.bool),
        1,
        replace_id=0,
        attention_mask=torch.tensor([1, 0]),
        output="logit",
    )
    assert s.tolist() == [1.0]


def test_masked_token_scores_lm_reads_position():
    model = TokenLM(8)
    ids = torch.tensor([2, 5, 6])
    keep = torch.tensor([[True, True, True], [True, True, False]])
    # echo LM: logits at the last position are one-hot(last token) -> logit of 6 is 1, then 0 once replaced
    s = masked_token_scores(model, ids, keep, 6, replace_id=0, output="logit")
    assert s.tolist() == [1.0, 0.0]
    s1 = masked_token_scores(model, ids, keep, 5, replace_id=0, output="logit", position=1)
    assert s1.tolist() == [1.0, 1.0]
    p = masked_token_scores(model, ids, keep[:1], 6, replace_id=0, output="prob")
    assert torch.allclose(p, torch.tensor([torch.e / (torch.e + 7)]))


def test_masked_token_scores_rejects_target_out_of_range():
    with pytest.raises(InputError, match="target"):
        masked_token_scores(TokenLM(8), torch.tensor([1, 2]), torch.ones(1, 2, dtype=torch.bool), 8, replace_id=0)


def test_masked_token_scores_rejects_position_out_of_range():
    with pytest.raises(InputError, match="position"):
        masked_token_scores(
            TokenLM(8), torch.tensor([1, 2]), torch.ones(1, 2, dtype=torch.bool), 1, replace_id=0, position=2
        )


def test_masked_token_scores_rejects_attention_mask_shape():
    with pytest.raises(InputError, match="attention_mask"):
        masked_token_scores(
            TokenLM(8),
            torch.tensor([1, 2]),
            torch.ones(1, 2, dtype=torch.bool),
            1,
            replace_id=0,
            attention_mask=torch.ones(3),
        )


def test_masked_token_scores_rejects_bad_output():
    with pytest.raises(InputError, match="output"):
        masked_token_scores(
            TokenLM(8), torch.tensor([1, 2]), torch.ones(1, 2, dtype=torch.bool), 1, replace_id=0, output="softmax"
        )


def test_masked_token_scores_rejects_float_ids():
    with pytest.raises(InputError, match="input_ids"):
        masked_token_scores(TokenLM(8), torch.tensor([1.0, 2.0]), torch.ones(1, 2, dtype=torch.bool), 1, replace_id=0)
