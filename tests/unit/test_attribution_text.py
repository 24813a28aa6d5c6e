"""Token attribution on tiny random HF BERT classifiers and GPT-2 LMs with a word-level tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from xattr_nb.attribution import attribute, attribute_text
from xattr_nb.checks import InputError

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "a", "big", "red", "home", "fast"]


def word_tokenizer(special: bool = True, extra: int = 0) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer; BERT-style ([CLS] ... [SEP], pad, mask) when ``special``."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if special else ["<unk>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + [f"w{i}" for i in range(extra)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if special else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if special:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="module")
def bert_tok():
    return word_tokenizer()


def tiny_bert(max_positions: int = 12) -> BertForSequenceClassification:
    """A seeded 2-layer, 3-class BERT over WORDS (a plain helper: test_chunking imports it too)."""
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        num_labels=3,
        pad_token_id=0,
        initializer_range=0.3,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def bert_cls():
    return tiny_bert()


@pytest.fixture(scope="module")
def gpt_tok():
    return word_tokenizer(special=False)


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(WORDS) + 2,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=16,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(cfg).eval()


TEXTS = ["the cat sat on the mat", "a big dog ran"]


def _logits_cls(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_lig_bert_classifier_is_complete(bert_cls, bert_tok):
    a = attribute_text(bert_cls, bert_tok, TEXTS, 1, n_steps=64)
    assert a.kind == "tokens" and a.method == "layer_integrated_gradients"
    assert a.labels[0] == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
    assert a.labels[1] == ["[CLS]", "a", "big", "dog", "ran", "[SEP]"]
    assert a.mask.tolist()[1] == [True] * 6 + [False] * 2
    enc = bert_tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = torch.where(mask.bool(), torch.zeros_like(ids), ids)
    base[:, 0] = 2  # [CLS] kept
    base[0, 7], base[1, 5] = 3, 3  # [SEP] kept
    gap = _logits_cls(bert_cls, ids, mask)[:, 1] - _logits_cls(bert_cls, base, mask)[:, 1]
    torch.testing.assert_close(a.scores.sum(1), gap, atol=2e-3, rtol=1e-2)
    assert gap.abs().min() > 1e-2  # a real test: the two sides are not both ~0
    # special tokens and padding keep their ids in the baseline: they score exactly 0
    assert a.scores[0, 0] == 0 and a.scores[0, 7] == 0 and bool((a.scores[1, 5:] == 0).all())
    # captum 0.9 runs the model once on the inputs and once on the baselines to read the embedding
    # layer, then B·k interpolated forwards: B·(k + 2) forwards and B·k backwards.
    assert (a.cost.forward, a.cost.backward) == (2 * (64 + 2), 2 * 64)


def test_padding_does_not_change_scores(bert_cls, bert_tok):
    both = attribute_text(bert_cls, bert_tok, TEXTS, 1, n_steps=16)
    alone = attribute_text(bert_cls, bert_tok, TEXTS[1], 1, n_steps=16)
    torch.testing.assert_close(both.tokens(1)[1], alone.tokens(0)[1], atol=1e-5, rtol=1e-4)


def test_feature_ablation_tokens_equals_manual_replacement(bert_cls, bert_tok):
    a = attribute_text(bert_cls, bert_tok, TEXTS[0], 2, "feature_ablation", baseline="mask")
    ids = bert_tok(TEXTS[0], return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    full = _logits_cls(bert_cls, ids, mask)[0, 2]
    for i in (1, 3, 6):
        cut = ids.clone()
        cut[0, i] = bert_tok.mask_token_id
        torch.testing.assert_close(a.scores[0, i], full - _logits_cls(bert_cls, cut, mask)[0, 2], atol=1e-5, rtol=1e-4)
    assert a.scores[0, 0] == 0  # [CLS] is never replaced
    assert a.meta["baseline_id"] == bert_tok.mask_token_id
    occ = attribute_text(bert_cls, bert_tok, TEXTS[0], 2, "occlusion", baseline="mask", window=1)
    torch.testing.assert_close(occ.scores, a.scores, atol=1e-5, rtol=1e-4)


def _emb_grad(model, ids, mask, fn):
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = fn(model(inputs_embeds=emb, attention_mask=mask).logits)
    out.sum().backward()
    return emb, emb.grad


def test_saliency_and_ixg_tokens_equal_manual_embedding_gradients(bert_cls, bert_tok):
    ids = bert_tok(TEXTS[0], return_tensors="pt")["input_ids"]
    emb, grad = _emb_grad(bert_cls, ids, torch.ones_like(ids), lambda z: z[:, 0])
    sal = attribute_text(bert_cls, bert_tok, TEXTS[0], 0, "saliency")
    ixg = attribute_text(bert_cls, bert_tok, TEXTS[0], 0, "input_x_gradient")
    torch.testing.assert_close(sal.scores[0], grad[0].abs().sum(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ixg.scores[0], (grad * emb)[0].sum(-1), atol=1e-6, rtol=1e-5)
    assert (sal.cost.forward, sal.cost.backward) == (1, 1)


def test_causal_lm_explains_target_token_at_position(gpt, gpt_tok):
    eos = gpt_tok.eos_token_id
    texts = ["the cat sat on the", "a dog"]
    a = attribute_text(gpt, gpt_tok, texts, "mat", baseline=eos, n_steps=64)
    assert a.labels == [["the", "cat", "sat", "on", "the"], ["a", "dog"]]
    mat = gpt_tok.convert_tokens_to_ids("mat")
    assert a.target.tolist() == [mat, mat]
    # completeness against the next-token logit of "mat" at each text's last real token
    for b, t in enumerate(texts):
        ids = gpt_tok(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            f = gpt(input_ids=ids).logits[0, -1, mat] - gpt(input_ids=torch.full_like(ids, eos)).logits[0, -1, mat]
        torch.testing.assert_close(a.tokens(b)[1].sum(), f, atol=2e-3, rtol=1e-2)
    assert a.meta["positions"] == [4, 1]
    # position=1 explains the logits after the second token: later tokens cannot matter (causal)
    p = attribute_text(gpt, gpt_tok, texts[0], mat, "input_x_gradient", position=1)
    assert bool((p.scores[0, 2:] == 0).all()) and bool((p.scores[0, :2] != 0).all())


def test_attribute_on_token_ids_directly(bert_cls, bert_tok):
    enc = bert_tok(TEXTS, padding=True, return_tensors="pt")
    a = attribute(bert_cls, enc["input_ids"], 0, attention_mask=enc["attention_mask"], baseline=0, n_steps=8)
    assert a.kind == "tokens" and a.method == "integrated_gradients" and a.scores.shape == (2, 8)
    assert bool((a.scores[1, 6:] == 0).all())  # padding scores 0


# ----------------------------------------------------------------------------- bad input


def test_bad_empty_text(bert_cls, bert_tok):
    with pytest.raises(InputError, match="empty"):
        attribute_text(bert_cls, bert_tok, ["the cat", "  "], 0)


def test_bad_no_texts(bert_cls, bert_tok):
    with pytest.raises(InputError, match="non-empty list"):
        attribute_text(bert_cls, bert_tok, [], 0)


def test_bad_tokenizer_larger_than_embeddings(bert_cls):
    with pytest.raises(InputError, match="does not match the model"):
        attribute_text(bert_cls, word_tokenizer(extra=5), "the cat", 0)


def test_bad_ids_beyond_embeddings(bert_cls):
    with pytest.raises(InputError, match="embedding rows"):
        attribute(bert_cls, torch.tensor([[2, 99, 3]]), 0)


def test_bad_target_class_out_of_range(bert_cls, bert_tok):
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        attribute_text(bert_cls, bert_tok, "the cat", 3)


def test_bad_target_token_out_of_vocab_range(gpt, gpt_tok):
    with pytest.raises(InputError, match=r"\[0, 14\)"):
        attribute_text(gpt, gpt_tok, "the cat", 14, baseline=1)


def test_bad_text_longer_than_model(bert_cls, bert_tok):
    with pytest.raises(InputError, match=r"at most 12.*nothing is truncated"):
        attribute_text(bert_cls, bert_tok, " ".join(["the"] * 11), 0)


def test_bad_baseline_pad_without_pad_token(gpt, gpt_tok):
    with pytest.raises(InputError, match="no pad token"):
        attribute_text(gpt, gpt_tok, "the cat", "sat")


def test_bad_baseline_name(bert_cls, bert_tok):
    with pytest.raises(InputError, match="'pad', 'mask' or a token id"):
        attribute_text(bert_cls, bert_tok, "the cat", 0, baseline="zero")


def test_bad_baseline_for_method_without_one(bert_cls, bert_tok):
    with pytest.raises(InputError, match="takes no `baseline`"):
        attribute_text(bert_cls, bert_tok, "the cat", 0, "saliency", baseline="mask")


def test_bad_multi_token_target(gpt, gpt_tok):
    with pytest.raises(InputError, match="one target token at a time"):
        attribute_text(gpt, gpt_tok, "the cat", "sat on", baseline=1)


def test_bad_unknown_word_target(gpt, gpt_tok):
    with pytest.raises(InputError, match="not in the tokenizer's vocabulary"):
        attribute_text(gpt, gpt_tok, "the cat", "zebra", baseline=1)


def test_bad_position_out_of_range(gpt, gpt_tok):
    with pytest.raises(InputError, match="position"):
        attribute_text(gpt, gpt_tok, "the cat", "sat", baseline=1, position=2)


def test_bad_not_a_tokenizer(bert_cls):
    with pytest.raises(InputError, match="tokenizer"):
        attribute_text(bert_cls, object(), "the cat", 0)


def test_bad_method_for_tokens(bert_cls, bert_tok):
    with pytest.raises(InputError, match=r"grad_cam.*tokens"):
        attribute_text(bert_cls, bert_tok, "the cat", 0, "grad_cam")


def test_bad_attention_mask_values(bert_cls):
    with pytest.raises(InputError, match="attention_mask"):
        attribute(bert_cls, torch.tensor([[2, 5, 3]]), 0, attention_mask=torch.tensor([[1, 2, 1]]))


# ----------------------------------------------------------------------------- string targets (issue 10, item 6)


@pytest.fixture(scope="module")
def named_cls():
    """The BERT classifier with real class names in its config (id2label), as fine-tuned HF models have."""
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=12,
        id2label={0: "animals", 1: "places", 2: "colours"},
        pad_token_id=0,
        initializer_range=0.3,
    )
    return BertForSequenceClassification(cfg).eval()


def test_classifier_string_target_is_a_class_name(named_cls, bert_tok):
    by_name = attribute_text(named_cls, bert_tok, TEXTS, "places", "saliency")
    by_index = attribute_text(named_cls, bert_tok, TEXTS, 1, "saliency")
    assert by_name.target.tolist() == [1, 1]
    torch.testing.assert_close(by_name.scores, by_index.scores)
    per_text = attribute_text(named_cls, bert_tok, TEXTS, ["colours", "animals"], "saliency")
    assert per_text.target.tolist() == [2, 0]


def test_classifier_string_target_error_quotes_the_string_not_a_token_id(named_cls, bert_tok):
    # "dog" is a word of the tokenizer (id 10): the error must speak of 'dog', the classes, not of 10.
    with pytest.raises(InputError, match=r"`target` 'dog' is not a class.*\['animals', 'places', 'colours'\]") as info:
        attribute_text(named_cls, bert_tok, TEXTS, "dog", "saliency")
    assert "10" not in str(info.value)
    with pytest.raises(InputError, match=r"2 targets but there are 1 texts"):
        attribute_text(named_cls, bert_tok, TEXTS[0], ["places", "animals"], "saliency")


def test_lm_string_target_errors_quote_the_string(gpt, gpt_tok):
    with pytest.raises(InputError, match=r"`target` 'sat on' is 2 tokens \['sat', 'on'\] \(ids \["):
        attribute_text(gpt, gpt_tok, "the cat", "sat on", baseline=1)
    with pytest.raises(InputError, match=r"`target` 'zebra' is not in the tokenizer's vocabulary.*'<unk>', id 0"):
        attribute_text(gpt, gpt_tok, "the cat", "zebra", baseline=1)
    a = attribute_text(gpt, gpt_tok, ["the cat", "a dog"], ["sat", "ran"], "saliency")
    assert a.target.tolist() == gpt_tok.convert_tokens_to_ids(["sat", "ran"])


def test_lm_string_target_through_attribute_points_to_attribute_text(gpt, gpt_tok):
    ids = gpt_tok("the cat", return_tensors="pt")["input_ids"]
    with pytest.raises(InputError, match=r"`target` 'sat' is a string.*attribute_text"):
        attribute(gpt, ids, "sat", "saliency")
