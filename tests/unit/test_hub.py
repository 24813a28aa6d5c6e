from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from xattr_nb.checks import InputError
from xattr_nb.models.hub import embed, load_causal_lm, load_classifier, load_encoder
from xattr_nb.models.text import tiny_gpt2, word_tokenizer

WORDS = ["the", "film", "was", "good", "bad", "very", "not"]


@pytest.fixture(scope="module")
def minilm():
    return load_encoder()


@pytest.fixture
def lm_folder(tmp_path):
    tok = word_tokenizer(WORDS)
    model = tiny_gpt2(len(tok), n_layer=1, d_model=16, n_ctx=16, seed=4)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, tok, model


@pytest.fixture
def clf_folder(tmp_path):
    tok = word_tokenizer(WORDS)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        pad_token_id=tok.pad_token_id,
    )
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, tok, model


# ---- MiniLM ------------------------------------------------------------------------------------


def test_embed_is_normalised_and_semantic(minilm):
    tok, model = minilm
    e = embed(
        ["A man is playing a guitar.", "A person plays the guitar.", "Stock prices fell sharply today."], tok, model
    )
    assert e.shape == (3, 384) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    sim = e @ e.T
    assert sim[0, 1] > 0.6 > 0.2 > sim[0, 2]  # paraphrase close, unrelated far


def test_embed_does_not_depend_on_batching(minilm):
    """Mean pooling masks padding: a short text's embedding is the same alone or padded in a batch."""
    tok, model = minilm
    texts = ["short", "a much longer sentence with many more tokens than the first one", "mid length text"]
    torch.testing.assert_close(
        embed(texts, tok, model, batch_size=1), embed(texts, tok, model, batch_size=3), atol=1e-5, rtol=0
    )


def test_embed_matches_manual_mean_pooling(minilm):
    tok, model = minilm
    enc = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state.mean(1)
    torch.testing.assert_close(embed(["hello world"], tok, model), torch.nn.functional.normalize(h, dim=-1))


def test_load_encoder_truncates_layers(minilm):
    tok, model = load_encoder(n_layers=2)
    assert len(model.encoder.layer) == 2 and model.config.num_hidden_layers == 2
    full = embed(["hello world"], *minilm)
    assert not torch.allclose(embed(["hello world"], tok, model), full)


def test_load_encoder_rejects_too_many_layers():
    with pytest.raises(InputError, match="n_layers"):
        load_encoder(n_layers=7)


def test_load_encoder_rejects_zero_layers():
    with pytest.raises(InputError, match="n_layers"):
        load_encoder(n_layers=0)


def test_load_encoder_rejects_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not an existing folder"):
        load_encoder(tmp_path / "nope")


def test_embed_rejects_empty_list(minilm):
    with pytest.raises(InputError, match="non-empty list"):
        embed([], *minilm)


def test_embed_rejects_empty_text(minilm):
    with pytest.raises(InputError, match=r"texts\[1\]"):
        embed(["fine", "  "], *minilm)


def test_embed_rejects_too_long_text(minilm):
    with pytest.raises(InputError, match="max_length=4"):
        embed(["one two three four five six"], *minilm, max_length=4)
    assert embed(["one two three four five six"], *minilm, max_length=4, truncate=True).shape == (1, 384)


def test_embed_rejects_bad_batch_size(minilm):
    with pytest.raises(InputError, match="batch_size"):
        embed(["x"], *minilm, batch_size=0)


def test_embed_rejects_mismatched_tokenizer(minilm):
    tok, _ = minilm
    small = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).bert
    with pytest.raises(InputError, match=r"30522 tokens .* 50 rows"):
        embed(["hello"], tok, small)


# ---- causal LM / classifier by name or folder ---------------------------------------------------


def test_load_causal_lm_from_folder_gives_same_model(lm_folder):
    path, tok, model = lm_folder
    tok2, model2 = load_causal_lm(path)
    ids = torch.tensor([tok("the film was very good")["input_ids"]])
    assert tok2("the film was very good")["input_ids"] == ids[0].tolist()
    out = model2(ids, output_attentions=True)
    torch.testing.assert_close(out.logits, model(ids).logits)
    assert out.attentions[0].shape == (1, 4, 5, 5)
    assert not model2.training


def test_load_causal_lm_rejects_tokenizer_model_mismatch(tmp_path):
    tok = word_tokenizer(WORDS)  # 12 tokens
    tiny_gpt2(8, n_layer=1, d_model=16).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"12 tokens .* 8 rows"):
        load_causal_lm(tmp_path)


def test_load_causal_lm_unknown_name_offline():
    with pytest.raises(InputError, match=r"hub cannot be reached.*local folder"):
        load_causal_lm("no-such-org/no-such-model-xyz", local_files_only=True)


def test_load_causal_lm_rejects_missing_path(tmp_path):
    with pytest.raises(InputError, match="not an existing folder"):
        load_causal_lm(str(tmp_path / "missing"))


def test_load_causal_lm_rejects_empty_name():
    with pytest.raises(InputError, match="name_or_path"):
        load_causal_lm("")


def test_load_causal_lm_rejects_folder_without_model(tmp_path):
    word_tokenizer(WORDS).save_pretrained(tmp_path)
    with pytest.raises(InputError, match="could not load the causal LM"):
        load_causal_lm(tmp_path)


def test_load_classifier_from_folder_gives_same_model(clf_folder):
    path, tok, model = clf_folder
    _, model2 = load_classifier(path)
    ids = torch.tensor([tok("the film was not good")["input_ids"]])
    assert model2.config.num_labels == 3
    torch.testing.assert_close(model2(ids).logits, model(ids).logits)


def test_load_classifier_rejects_head_size_mismatch(clf_folder):
    with pytest.raises(InputError, match="could not load the sequence classifier"):
        load_classifier(clf_folder[0], num_labels=2)


def test_load_classifier_rejects_one_label(clf_folder):
    with pytest.raises(InputError, match="num_labels"):
        load_classifier(clf_folder[0], num_labels=1)


def test_load_classifier_unknown_name_offline():
    with pytest.raises(InputError, match="hub cannot be reached"):
        load_classifier("no-such-model-xyz", local_files_only=True)


def test_pickled_weights_are_refused_safetensors_load(tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    from xattr_nb.checks import InputError
    from xattr_nb.models.hub import from_pretrained_offline

    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    model = BertModel(cfg)
    good, bad = tmp_path / "good", tmp_path / "bad"
    model.save_pretrained(good)
    assert (good / "model.safetensors").is_file()
    loaded = from_pretrained_offline(BertModel.from_pretrained, good, "encoder", True)
    assert torch.equal(loaded.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    cfg.save_pretrained(bad)
    torch.save(model.state_dict(), bad / "pytorch_model.bin")  # a pickle: must never be loaded
    with pytest.raises(InputError, match=r"no \*\.safetensors weights"):
        from_pretrained_offline(BertModel.from_pretrained, bad, "encoder", True)


def test_minilm_weights_are_pinned(tmp_path):
    from xattr_nb.checks import InputError
    from xattr_nb.models.hub import check_minilm_weights, minilm_path

    folder = minilm_path()  # the installed file matches the pin
    assert (folder / "model.safetensors").is_file()
    with pytest.raises(InputError, match=r"has no model\.safetensors"):
        check_minilm_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(InputError, match="not the pinned"):
        check_minilm_weights(tmp_path)
