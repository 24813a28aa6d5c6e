from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from xattr_nb.checks import InputError
from xattr_nb.models.text import EncoderClassifier, check_tokenizer_matches, tiny_gpt2, word_tokenizer
from xattr_nb.models.vision import build

WORDS = ["Mary", "John", "gave", "a", "book", "to", "."]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(WORDS)


def tiny_bert(vocab_size: int, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(cfg).eval()


# ---- word_tokenizer ------------------------------------------------------------------------------


def test_word_tokenizer_ids_specials_then_words(tok):
    assert [tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert tok.convert_tokens_to_ids(WORDS) == list(range(5, 5 + len(WORDS)))
    assert len(tok) == 5 + len(WORDS)


def test_word_tokenizer_round_trip_and_unknown(tok):
    ids = tok("Mary gave a book to John.")["input_ids"]
    assert ids == [5, 7, 8, 9, 10, 6, 11]
    assert tok.decode(ids) == "Mary gave a book to John ."
    assert tok("[BOS] Mary gave Bob")["input_ids"] == [2, 5, 7, 1]  # specials recognised, Bob unknown


def test_word_tokenizer_pads_with_pad_id(tok):
    enc = tok(["Mary gave", "Mary gave a book"], padding=True)
    assert enc["input_ids"][0] == [5, 7, 0, 0]
    assert enc["attention_mask"][0] == [1, 1, 0, 0]


def test_word_tokenizer_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = "[BOS] John gave a book to Mary . [EOS]"
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back.mask_token == "[MASK]" and back.pad_token_id == 0


def test_word_tokenizer_extra_specials():
    t = word_tokenizer(["x"], specials=("<p>", "<u>", "<b>", "<e>", "<m>", "[SEP]"))
    assert t("x [SEP] x")["input_ids"] == [6, 5, 6]
    assert "[SEP]" in t.all_special_tokens


def test_word_tokenizer_rejects_empty():
    with pytest.raises(InputError, match="non-empty list"):
        word_tokenizer([])


def test_word_tokenizer_rejects_duplicates():
    with pytest.raises(InputError, match="repeated: \\['a'\\]"):
        word_tokenizer(["a", "b", "a"])


def test_word_tokenizer_rejects_word_clashing_with_special():
    with pytest.raises(InputError, match="repeated: \\['pad'\\]"):
        word_tokenizer(["pad", "x"], specials=("pad", "unk", "bos", "eos", "mask"))


def test_word_tokenizer_rejects_word_the_pretokenizer_splits():
    with pytest.raises(InputError, match="don't"):
        word_tokenizer(["don't"])


def test_word_tokenizer_rejects_blank_word():
    with pytest.raises(InputError, match=r"words\[1\]"):
        word_tokenizer(["a", " "])


def test_word_tokenizer_rejects_too_few_specials():
    with pytest.raises(InputError, match="at least 5"):
        word_tokenizer(["a"], specials=("<pad>", "<unk>"))


# ---- tiny_gpt2 -----------------------------------------------------------------------------------


def test_tiny_gpt2_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_gpt2(20, seed=1)
    after = torch.rand(3)
    b, c = tiny_gpt2(20, seed=1), tiny_gpt2(20, seed=2)
    assert torch.equal(after, expected)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["transformer.wte.weight"], sc["transformer.wte.weight"])


def test_tiny_gpt2_returns_causal_attention_probs(tok):
    model = tiny_gpt2(len(tok), n_layer=2, n_head=4, d_model=32, n_ctx=16, bos_token_id=tok.bos_token_id)
    ids = torch.tensor([tok("[BOS] Mary gave a book")["input_ids"]])
    out = model(ids, output_attentions=True)
    assert out.logits.shape == (1, 5, len(tok))
    assert len(out.attentions) == 2
    att = out.attentions[0]
    assert att.shape == (1, 4, 5, 5)
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 4, 5))
    assert torch.all(att.triu(diagonal=1) == 0)  # causal: no attention to the future
    assert model.config.attn_pdrop == 0 and model.config.resid_pdrop == 0 and model.config.embd_pdrop == 0
    assert model.config.bos_token_id == tok.bos_token_id


def test_tiny_gpt2_rebuilds_from_registry():
    m = build({"arch": "tiny_gpt2", "kwargs": {"vocab_size": 12, "n_layer": 1, "d_model": 16, "seed": 3}})
    ref = tiny_gpt2(12, n_layer=1, d_model=16, seed=3)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in m.state_dict().items())


def test_tiny_gpt2_rejects_d_model_not_multiple_of_heads():
    with pytest.raises(InputError, match="multiple of `n_head`"):
        tiny_gpt2(10, d_model=30, n_head=4)


def test_tiny_gpt2_rejects_zero_vocab():
    with pytest.raises(InputError, match="vocab_size"):
        tiny_gpt2(0)


def test_tiny_gpt2_rejects_special_id_outside_vocab():
    with pytest.raises(InputError, match="bos_token_id"):
        tiny_gpt2(10, bos_token_id=10)


# ---- check_tokenizer_matches ---------------------------------------------------------------------


def test_check_tokenizer_matches_accepts_fitting_pair(tok):
    check_tokenizer_matches(tiny_gpt2(len(tok), n_layer=1, d_model=16), tok)
    check_tokenizer_matches(tiny_gpt2(len(tok) + 4, n_layer=1, d_model=16), tok)  # padded vocabulary is fine


def test_check_tokenizer_matches_rejects_larger_tokenizer(tok):
    with pytest.raises(InputError, match=f"{len(tok)} tokens .* 8 rows"):
        check_tokenizer_matches(tiny_gpt2(8, n_layer=1, d_model=16), tok)


def test_check_tokenizer_matches_rejects_inconsistent_config(tok):
    model = tiny_gpt2(len(tok), n_layer=1, d_model=16)
    model.config.vocab_size = 50
    with pytest.raises(InputError, match=r"config\.vocab_size is 50 .* 12 rows"):
        check_tokenizer_matches(model, tok)


def test_check_tokenizer_matches_rejects_non_model(tok):
    with pytest.raises(InputError, match="get_input_embeddings"):
        check_tokenizer_matches(torch.nn.Linear(2, 2), tok)


def test_check_tokenizer_matches_rejects_non_tokenizer():
    with pytest.raises(InputError, match="tokenizer"):
        check_tokenizer_matches(tiny_gpt2(8, n_layer=1, d_model=16), {"a": 1})


# ---- EncoderClassifier ---------------------------------------------------------------------------


def test_encoder_classifier_mean_pooling_ignores_padding(tok):
    torch.manual_seed(0)
    model = EncoderClassifier(tiny_bert(len(tok)), 3).eval()
    ids = torch.tensor([tok("Mary gave a book")["input_ids"]])
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    out = model(ids)
    assert out.shape == (1, 3)
    torch.testing.assert_close(model(padded, mask), out)
    hidden = model.encoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(model.features(ids), hidden.mean(1))


def test_encoder_classifier_cls_pooling(tok):
    model = EncoderClassifier(tiny_bert(len(tok)), 2, pooling="cls").eval()
    ids = torch.tensor([[2, 5, 7]])
    torch.testing.assert_close(model.features(ids), model.encoder(input_ids=ids).last_hidden_state[:, 0])


def test_encoder_classifier_layer_ig_is_complete(tok):
    """captum's LayerIntegratedGradients on get_input_embeddings(): attributions sum to f(x) - f(baseline)."""
    from captum.attr import LayerIntegratedGradients

    torch.manual_seed(0)
    model = EncoderClassifier(tiny_bert(len(tok)), 2).eval()
    assert model.get_input_embeddings() is model.encoder.embeddings.word_embeddings
    ids = torch.tensor([tok("Mary gave a book")["input_ids"]])
    base = torch.full_like(ids, tok.pad_token_id)
    lig = LayerIntegratedGradients(model, model.get_input_embeddings())
    attr = lig.attribute(ids, base, target=1, n_steps=200)
    gap = model(ids)[0, 1] - model(base)[0, 1]
    torch.testing.assert_close(attr.sum(), gap.detach(), atol=5e-3, rtol=0)


def test_encoder_classifier_freeze_encoder(tok):
    model = EncoderClassifier(tiny_bert(len(tok)), 2, freeze_encoder=True)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert model.training and model.head.training and not model.encoder.training


def test_encoder_classifier_rebuilds_from_arch_config(tok):
    model = EncoderClassifier(tiny_bert(len(tok)), 4)
    rebuilt = build(model.arch_config)
    assert isinstance(rebuilt, EncoderClassifier) and rebuilt.n_classes == 4
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_encoder_classifier_rejects_one_class(tok):
    with pytest.raises(InputError, match="n_classes"):
        EncoderClassifier(tiny_bert(len(tok)), 1)


def test_encoder_classifier_rejects_unknown_pooling(tok):
    with pytest.raises(InputError, match="pooling"):
        EncoderClassifier(tiny_bert(len(tok)), 2, pooling="max")


def test_encoder_classifier_rejects_non_hf_encoder():
    with pytest.raises(InputError, match="encoder"):
        EncoderClassifier(torch.nn.Linear(3, 3), 2)


def test_encoder_classifier_rejects_float_ids(tok):
    with pytest.raises(InputError, match="integer"):
        EncoderClassifier(tiny_bert(len(tok)), 2)(torch.zeros(1, 3))


def test_encoder_classifier_rejects_mask_shape(tok):
    with pytest.raises(InputError, match="attention_mask"):
        EncoderClassifier(tiny_bert(len(tok)), 2)(torch.tensor([[5, 6, 7]]), torch.ones(1, 2))


def test_encoder_classifier_rejects_ids_outside_vocab(tok):
    with pytest.raises(InputError, match=r"\[0, 12\)"):
        EncoderClassifier(tiny_bert(len(tok)), 2)(torch.tensor([[5, 12]]))


# ---- EncoderClassifier takes inputs_embeds (issue 10, item 7) -------------------------------------


def test_encoder_classifier_inputs_embeds_equals_input_ids(tok):
    torch.manual_seed(0)
    model = EncoderClassifier(tiny_bert(len(tok)), 3).eval()
    ids = torch.tensor([tok("Mary gave a book")["input_ids"] + [0, 0], tok("John gave a book to Mary")["input_ids"]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    emb = model.get_input_embeddings()(ids)
    with torch.no_grad():
        torch.testing.assert_close(
            model(inputs_embeds=emb, attention_mask=mask), model(input_ids=ids, attention_mask=mask)
        )
        torch.testing.assert_close(model(inputs_embeds=emb), model(ids))


def test_encoder_classifier_needs_exactly_one_of_ids_and_embeds(tok):
    model = EncoderClassifier(tiny_bert(len(tok)), 2).eval()
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(InputError, match=r"exactly one of `input_ids`.*`inputs_embeds`.*got both"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))
    with pytest.raises(InputError, match=r"exactly one.*got neither"):
        model()
    with pytest.raises(InputError, match=r"`inputs_embeds` must be \[B, T, 16\]"):
        model(inputs_embeds=torch.zeros(1, 3, 8))


def test_encoder_classifier_works_with_soft_metrics(tok):
    from xattr_nb.attribution import attribute
    from xattr_nb.metrics import soft_comprehensiveness, soft_sufficiency

    torch.manual_seed(0)
    model = EncoderClassifier(tiny_bert(len(tok)), 2).eval()
    ids = torch.tensor([tok("Mary gave a book to John")["input_ids"]])
    a = attribute(model, ids, 1, "saliency")
    ns = soft_sufficiency(model, ids, a, draws=3)
    nc = soft_comprehensiveness(model, ids, a, draws=3)
    assert ns.shape == (1,) and nc.shape == (1,) and bool(torch.isfinite(ns).all() and torch.isfinite(nc).all())
