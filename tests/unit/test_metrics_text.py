"""Text faithfulness: ERASER, token curves, AOPC and the soft variants (closed forms on a token-sum model)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.kernels import count_passes
from xattr_nb.metrics import (
    aopc,
    comprehensiveness,
    soft_comprehensiveness,
    soft_sufficiency,
    sufficiency,
    token_curves,
    token_deletion_curve,
)

# ------------------------------------------------------------------ text


class TokenSum(nn.Module):
    """logit[1] = sum of w[id] over attended tokens; logit[0] = 0. Token 0 (the replacement) weighs 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.emb = nn.Embedding(w.shape[0], 2)
        with torch.no_grad():
            self.emb.weight.copy_(torch.stack([w, w], 1))

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        e = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        per_tok = e.mean(-1)
        if attention_mask is not None:
            per_tok = per_tok * attention_mask
        logit = per_tok.sum(1)
        return torch.stack([torch.zeros_like(logit), logit], 1)


VOCAB_W = torch.cat([torch.zeros(1), torch.arange(10, 0, -1).float()])  # token i (1..10) weighs 11 - i
IDS = torch.arange(1, 11)[None]  # weights 10, 9, ..., 1
TRUE_ATTR = VOCAB_W[1:][None].clone()


def test_comprehensiveness_sufficiency_closed_form():
    model = TokenSum(VOCAB_W)
    # default bins 1, 5, 10, 20, 50 % of 10 tokens -> top 1, 1, 1, 2, 5 tokens
    with count_passes(model) as c:
        comp = comprehensiveness(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit")
    assert c.forward == 6  # the full input + one per bin
    assert comp.tolist() == pytest.approx([(10 + 10 + 10 + 19 + 40) / 5])
    suff = sufficiency(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit")
    assert suff.tolist() == pytest.approx([(45 + 45 + 45 + 36 + 15) / 5])
    worst = comprehensiveness(model, IDS, TRUE_ATTR.flip(1), 1, replace_id=0, output="logit")
    assert worst.tolist() == pytest.approx([(1 + 1 + 1 + 3 + 15) / 5])
    # 25 % of 10 tokens rounds up to 3 tokens (every bin erases ceil(q * n), at least one)
    bins = (0.1, 0.25, 0.3)
    per_bin = comprehensiveness(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit", bins=bins, per_bin=True)
    assert per_bin.tolist() == [[10.0, 27.0, 27.0]]


def test_comprehensiveness_attribution_and_padding_never_erased():
    model = TokenSum(VOCAB_W)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])  # second example: last position is padding
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    attr = Attribution(scores, "tokens", "m", torch.tensor([1, 1]), mask=mask)
    comp = comprehensiveness(model, ids, attr, replace_id=0, output="logit", bins=(0.5,))
    # ex 0: top ceil(.5 * 4) = 2 -> tokens 1, 2 weigh 10 + 9; ex 1: top 2 of 3 real -> tokens 7, 6 weigh 4 + 5
    assert comp.tolist() == pytest.approx([19.0, 9.0])


def test_aopc_and_token_curves_closed_form():
    model = TokenSum(VOCAB_W)
    ids = IDS[:, :4]  # weights 10, 9, 8, 7; total 34
    attr = TRUE_ATTR[:, :4]
    drops = [0, 10, 19, 27, 34]
    assert aopc(model, ids, attr, 1, replace_id=0, output="logit").tolist() == pytest.approx([sum(drops) / 5])
    assert aopc(model, ids, attr, 1, replace_id=0, output="logit", k_max=2).tolist() == pytest.approx([29 / 3])
    with count_passes(model) as c:
        cur = token_curves(model, ids, attr, 1, replace_id=0, output="logit")
    assert c.forward == 8 == cur.n_forward  # 2n
    assert cur.deletion.tolist() == [34, 24, 15, 7, 0]
    assert cur.insertion.tolist() == [0, 10, 19, 27, 34]
    area, dele = token_deletion_curve(model, ids, attr, 1, replace_id=0, output="logit")
    assert area.tolist() == [0, 0.25, 0.5, 0.75, 1.0] and dele.tolist() == [34, 24, 15, 7, 0]


def _p1(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def test_soft_metrics_with_binary_importance_equal_hard_erasure():
    model = TokenSum(VOCAB_W / 10)
    ids = IDS[:, :4]  # logits 1.0, 0.9, 0.8, 0.7; full = 3.4
    attr = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # after min-max: keep tokens 0, 1 surely, drop 2, 3 surely
    p_full, p_top, p_rest, p_zero = _p1(3.4), _p1(1.9), _p1(1.5), _p1(0.0)
    s0 = 1 - max(0.0, p_full - p_zero)
    suff_raw = 1 - max(0.0, p_full - p_top)
    comp_raw = max(0.0, p_full - p_rest)
    ns = soft_sufficiency(model, ids, attr, 1, draws=3)
    nc = soft_comprehensiveness(model, ids, attr, 1, draws=3)
    assert ns.tolist() == pytest.approx([max(0.0, suff_raw - s0) / (1 - s0)])
    assert nc.tolist() == pytest.approx([comp_raw / (1 - s0)])
    raw = soft_sufficiency(model, ids, attr, 1, draws=3, normalized=False)
    assert raw.tolist() == pytest.approx([suff_raw])
    hel = soft_comprehensiveness(model, ids, attr, 1, normalized=False, distance="hellinger")
    q_full, q_rest = torch.tensor([1 - p_full, p_full]), torch.tensor([1 - p_rest, p_rest])
    expect = float(((q_full.sqrt() - q_rest.sqrt()) ** 2).sum() / math.sqrt(2))
    assert hel.tolist() == pytest.approx([expect])


def test_soft_metrics_are_seeded():
    model = TokenSum(VOCAB_W / 10)
    attr = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 0.0]])
    a = soft_comprehensiveness(model, IDS, attr, 1, draws=5, seed=3)
    b = soft_comprehensiveness(model, IDS, attr, 1, draws=5, seed=3)
    assert torch.equal(a, b)


def test_soft_requires_embeddings():
    class NoEmb(nn.Module):
        def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
            return torch.zeros(1, 2)

    with pytest.raises(InputError, match="embeddings"):
        soft_sufficiency(NoEmb(), IDS, TRUE_ATTR, 1)


def test_comprehensiveness_rejects_length_mismatch():
    with pytest.raises(InputError, match="attr"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR[:, :5], 1, replace_id=0)


def test_comprehensiveness_rejects_nan_scores():
    bad = TRUE_ATTR.clone()
    bad[0, 2] = float("nan")
    with pytest.raises(InputError, match="attr"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, bad, 1, replace_id=0)


def test_comprehensiveness_rejects_empty_input():
    with pytest.raises(InputError, match="empty"):
        comprehensiveness(TokenSum(VOCAB_W), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0), 1, replace_id=0)


def test_comprehensiveness_requires_target():
    with pytest.raises(InputError, match="target"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR, replace_id=0)


def test_comprehensiveness_rejects_bad_bins():
    with pytest.raises(InputError, match="bins"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR, 1, replace_id=0, bins=(0.0, 0.5))


def test_sufficiency_rejects_pixel_attribution():
    attr = Attribution(torch.rand(1, 2, 5), "pixels", "m", torch.tensor([1]))
    with pytest.raises(InputError, match="tokens"):
        sufficiency(TokenSum(VOCAB_W), IDS, attr, replace_id=0)


def test_sufficiency_rejects_attention_mask_shape():
    with pytest.raises(InputError, match="attention_mask"):
        sufficiency(TokenSum(VOCAB_W), IDS, TRUE_ATTR, 1, replace_id=0, attention_mask=torch.ones(1, 3))


def test_token_curves_rejects_a_batch():
    with pytest.raises(InputError, match="one"):
        token_curves(TokenSum(VOCAB_W), IDS.repeat(2, 1), TRUE_ATTR.repeat(2, 1), 1, replace_id=0)
