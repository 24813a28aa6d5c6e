"""One scale switch per modality: the zoo model at scale='cpu', the paper's (a local stand-in here) at 'full'."""

from __future__ import annotations

import pytest
import torch
from transformers import ResNetConfig, ResNetForImageClassification

from xattr_nb.checks import InputError
from xattr_nb.models import zoo
from xattr_nb.models.loaders import LoadedLM, load_image_model, load_lm
from xattr_nb.models.text import tiny_gpt2, word_tokenizer


def test_load_lm_small_is_the_zoo_model_with_its_recipe_tokenizer():
    lm = load_lm("cpu", small="ioi_gpt2_4l")
    assert isinstance(lm, LoadedLM) and lm.model is lm[0] and lm.tokenizer is lm[1]
    assert not lm.model.training
    assert len(lm.tokenizer) <= lm.model.get_input_embeddings().num_embeddings
    ref = zoo.load("ioi_gpt2_4l")
    ids = lm.tokenizer("[BOS] then", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.equal(lm.model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_load_lm_full_reads_a_local_folder_and_sets_a_pad_token(tmp_path):
    tok = word_tokenizer(["a", "b", "c"])
    tok.pad_token = None  # as GPT-2's: no pad token
    model = tiny_gpt2(len(tok), n_layer=1, d_model=16, n_ctx=16, seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = load_lm("full", small="ioi_gpt2", full=str(tmp_path))
    assert lm.tokenizer.pad_token == "[EOS]" and lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(lm.model(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-6)


def test_load_image_model_small_and_full(tmp_path):
    cnn = load_image_model("cpu", small="shapes_cnn")
    assert not cnn.training and cnn(torch.rand(2, 3, 32, 32)).shape[0] == 2
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], num_labels=3)
    ResNetForImageClassification(cfg).save_pretrained(tmp_path)
    full = load_image_model("full", small="shapes_cnn", full=str(tmp_path))
    assert full(torch.rand(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: load_lm("gpu", small="ioi_gpt2"), "scale"),
        (lambda: load_lm("cpu", small="nosuch"), "nosuch"),
        (lambda: load_lm("cpu", small="nosuch", retrain=True), "small"),
        (lambda: zoo.tokenizer("shapes_cnn"), "no tokenizer"),
        (lambda: load_image_model("huge", small="shapes_cnn"), "scale"),
    ],
)
def test_loaders_reject_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()
