"""Every text faithfulness metric scores a padded batch exactly as it scores each example alone.

Catches three silent errors: a causal LM read at one absolute position for the whole batch (a
short, right-padded prompt was scored at a padding slot), an Attribution's mask not used as the
attention mask (the model attended to padding), and special tokens ([CLS], [SEP]) being erased.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError
from xattr_nb.kernels import real_positions
from xattr_nb.metrics import (
    aopc,
    comprehensiveness,
    soft_comprehensiveness,
    soft_sufficiency,
    sufficiency,
    token_curves,
)

PAD, CLS, SEP, VOCAB = 0, 1, 2, 40
LENGTHS = (5, 9, 7)


def _gpt2() -> GPT2LMHeadModel:  # initializer_range 0.2: outputs that move when a token does
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2, attn_pdrop=0.0, initializer_range=0.2
    )
    cfg.resid_pdrop = cfg.embd_pdrop = 0.0
    return GPT2LMHeadModel(cfg).eval()


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def _batch(seed: int, specials: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T], real mask, special mask, scores (padding scored high, to tempt a bug)."""
    g = torch.Generator().manual_seed(seed)
    t = max(LENGTHS)
    ids = torch.full((len(LENGTHS), t), PAD)
    mask = torch.zeros(len(LENGTHS), t, dtype=torch.bool)
    special = torch.zeros_like(mask)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[b, :n] = True
        if specials:
            ids[b, 0], ids[b, n - 1] = CLS, SEP
            special[b, 0] = special[b, n - 1] = True
    scores = torch.rand(ids.shape, generator=g)
    scores[~mask] = 10.0
    scores[special] = 5.0  # specials outrank every real token: erasing them would be the bug
    return ids, mask, special, scores


METRICS = {
    "comprehensiveness": lambda m, x, a, **k: comprehensiveness(m, x, a, replace_id=PAD, **k),
    "sufficiency": lambda m, x, a, **k: sufficiency(m, x, a, replace_id=PAD, **k),
    "aopc": lambda m, x, a, **k: aopc(m, x, a, replace_id=PAD, **k),
    # Unnormalised: a random tiny model barely moves when every token is zeroed, so 1 - S0 is ~1e-6
    # and the normalisation would amplify float noise; the pieces it divides are what is compared.
    "soft_sufficiency": lambda m, x, a, **k: soft_sufficiency(m, x, a, draws=4, seed=3, normalized=False, **k),
    "soft_comprehensiveness": lambda m, x, a, **k: soft_comprehensiveness(
        m, x, a, draws=4, seed=3, normalized=False, **k
    ),
}


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("arch", ["gpt2", "bert"])
@pytest.mark.parametrize("seed", [0, 1])
def test_padded_batch_equals_each_example_alone(metric: str, arch: str, seed: int) -> None:
    model = _gpt2() if arch == "gpt2" else _bert()
    ids, mask, special, scores = _batch(seed, specials=arch == "bert")
    target = torch.tensor([7, 11, 23]) if arch == "gpt2" else torch.tensor([0, 2, 1])
    fn = METRICS[metric]
    # The Attribution carries its mask and specials; no attention_mask is passed.
    attr = Attribution(scores, "tokens", "m", target, mask=mask, special=special)
    batched = fn(model, ids, attr)
    for b, n in enumerate(LENGTHS):
        alone = Attribution(scores[b : b + 1, :n], "tokens", "m", target[b : b + 1], special=special[b : b + 1, :n])
        want = fn(model, ids[b : b + 1, :n], alone)
        assert batched[b].item() == pytest.approx(want.item(), abs=1e-5), (metric, b)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_token_curves_padded_equal_unpadded(arch: str) -> None:
    model = _gpt2() if arch == "gpt2" else _bert()
    ids, mask, special, scores = _batch(0, specials=arch == "bert")
    tgt = torch.tensor([5 if arch == "gpt2" else 1])
    a = Attribution(scores[:1], "tokens", "m", tgt, mask=mask[:1], special=special[:1])
    padded = token_curves(model, ids[:1], a, replace_id=PAD)
    n = LENGTHS[0]
    alone = Attribution(scores[:1, :n], "tokens", "m", tgt, special=special[:1, :n])
    unpadded = token_curves(model, ids[:1, :n], alone, replace_id=PAD)
    assert torch.allclose(padded.insertion, unpadded.insertion, atol=1e-6)
    assert torch.allclose(padded.deletion, unpadded.deletion, atol=1e-6)


class Spy(torch.nn.Module):
    """Records every batch of ids the metric feeds the wrapped model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []
        self.eval()

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None):
        self.seen.append(input_ids.clone())
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def _assert_specials_kept(seen: list[torch.Tensor], ids: torch.Tensor, special: torch.Tensor) -> None:
    assert len(seen) == ids.shape[0]  # one chunk of erased copies per example, in order
    for b, x in enumerate(seen):
        assert bool((x[:, special[b]] == ids[b, special[b]]).all()), f"example {b}: a special token was erased"


@pytest.mark.parametrize("metric", ["comprehensiveness", "sufficiency", "aopc"])
def test_special_tokens_are_never_erased(metric: str) -> None:
    spy = Spy(_bert())
    ids, mask, special, scores = _batch(2, specials=True)
    METRICS[metric](spy, ids, Attribution(scores, "tokens", "m", torch.tensor([0, 1, 2]), mask=mask, special=special))
    _assert_specials_kept(spy.seen, ids, special)


@pytest.mark.parametrize("metric", ["comprehensiveness", "sufficiency"])
def test_special_tokens_from_attribute_text_are_never_erased(metric: str) -> None:
    from xattr_nb.attribution import attribute_text
    from xattr_nb.attribution.text import encode_texts
    from xattr_nb.models import load_encoder

    tok = load_encoder()[0]
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=2, hidden_dropout_prob=0.0)  # fmt: skip
    spy = Spy(BertForSequenceClassification(cfg).eval())
    texts = ["a short one", "a much longer text to pad the other", "mid length text"]
    enc = encode_texts(spy, tok, texts)
    attr = attribute_text(spy, tok, texts, target=1, method="saliency")
    assert torch.equal(attr.special, enc["special"]) and int(attr.special.sum()) == 6  # [CLS], [SEP] each
    spy.seen.clear()
    METRICS[metric](spy, enc["input_ids"], attr.normalized("minmax"))
    _assert_specials_kept(spy.seen, enc["input_ids"], enc["special"])


def test_real_positions_right_and_left_padding() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert real_positions(right, -1).tolist() == [2, 3]
    assert real_positions(left, -1).tolist() == [3, 3]
    assert real_positions(left, 0).tolist() == [1, 0]
    with pytest.raises(InputError, match="position"):
        real_positions(right, 3)


def test_replace_id_beyond_the_vocabulary_is_refused() -> None:
    ids, mask, _, scores = _batch(0, specials=False)
    a = Attribution(scores, "tokens", "m", torch.tensor([1, 2, 3]), mask=mask)
    with pytest.raises(InputError, match=r"replace_id.*vocabulary has 40"):
        comprehensiveness(_gpt2(), ids, a, replace_id=50_257)
