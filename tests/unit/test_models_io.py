"""The model adapter seam (xattr_nb.models.io): logits, device, model checks, eval mode, token checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from xattr_nb.checks import InputError
from xattr_nb.models.io import (
    check_model,
    check_token_inputs,
    device_of,
    eval_mode,
    input_embeddings,
    logits_of,
    max_positions,
)


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    return GPT2LMHeadModel(cfg).eval()


# ----------------------------------------------------------------------------- logits_of

LOGITS = torch.arange(6.0).view(2, 3)


@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        (LOGITS,),
        (LOGITS, torch.zeros(2, 4)),
        [LOGITS, "hidden states"],
        SequenceClassifierOutput(logits=LOGITS),
        {"logits": LOGITS, "loss": None},
    ],
    ids=["tensor", "1-tuple", "tuple", "list", "hf-output", "mapping"],
)
def test_logits_of_accepted_outputs(output):
    assert logits_of(output) is LOGITS


def test_logits_of_hf_model_output_and_tuple_output(gpt2):
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        out = gpt2(input_ids=ids)
        tup = gpt2(input_ids=ids, return_dict=False)
    assert logits_of(out).shape == (1, 3, 11)
    assert isinstance(tup, tuple)
    torch.testing.assert_close(logits_of(tup), logits_of(out))


def test_logits_of_ndim():
    assert logits_of((LOGITS,), ndim=2) is LOGITS
    with pytest.raises(InputError, match=r"logits \[B, T, V\] \(a language model\); got shape \(2, 3\)"):
        logits_of(LOGITS, ndim=3)
    with pytest.raises(InputError, match=r"logits \[B, C\] \(a classifier\); got shape \(6,\)"):
        logits_of(LOGITS.flatten(), ndim=2)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (None, "got NoneType"),
        (3.0, "got float"),
        ((), "got an empty tuple"),
        ([], "got an empty list"),
        (("logits", LOGITS), "tuple whose first element is str"),
        ({"scores": LOGITS}, "got dict"),
        (BaseModelOutput(last_hidden_state=LOGITS), "got BaseModelOutput"),
        (LOGITS.numpy(), "got ndarray"),
    ],
    ids=["none", "float", "empty-tuple", "empty-list", "tuple-of-str", "dict-without-logits", "hf-no-logits", "numpy"],
)
def test_logits_of_rejects(output, message):
    with pytest.raises(InputError, match=message):
        logits_of(output)


# ----------------------------------------------------------------------------- check_model


def test_check_model_returns_the_module():
    m = nn.Linear(2, 2)
    assert check_model(m) is m


@pytest.mark.parametrize(
    "bad", [None, lambda x: x, torch.zeros(2), "gpt2", nn.Linear], ids=["none", "function", "tensor", "str", "class"]
)
def test_check_model_rejects(bad):
    with pytest.raises(InputError, match=r"`net` must be a torch.nn.Module; got"):
        check_model(bad, "net")


# ----------------------------------------------------------------------------- device_of


class _BuffersOnly(nn.Module):
    def __init__(self, device: str = "cpu"):
        super().__init__()
        self.register_buffer("scale", torch.ones(3, device=device))

    def forward(self, x):
        return x * self.scale


def test_device_of_parameters_buffers_and_neither():
    assert device_of(nn.Linear(2, 2)) == torch.device("cpu")
    assert device_of(nn.Sequential(nn.ReLU(), nn.Identity())) == torch.device("cpu")  # no parameters, no buffers
    assert device_of(_BuffersOnly("meta")) == torch.device("meta")  # a buffer is read when there is no parameter
    lin = nn.Linear(2, 2, device="meta")
    assert device_of(lin) == torch.device("meta")


def test_device_of_rejects_non_modules():
    with pytest.raises(InputError, match=r"torch\.nn\.Module"):
        device_of(torch.zeros(3))


# ----------------------------------------------------------------------------- eval_mode


def _mixed() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(4), nn.ReLU()))
    net.train()
    net[2][0].eval()  # one submodule the caller froze
    return net


def _flags(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_eval_mode_sets_eval_and_restores_each_submodule_flag():
    net = _mixed()
    before = _flags(net)
    with eval_mode(net) as m:
        assert m is net
        assert not any(_flags(net))
    assert _flags(net) == before
    assert net.training and not net[2][0].training and net[2][1].training


def test_eval_mode_restores_flags_when_the_body_raises():
    net = _mixed()
    before = _flags(net)
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert _flags(net) == before


def test_eval_mode_keeps_an_eval_model_in_eval_and_a_train_submodule_training():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).eval()
    net[1].train()  # a submodule left in training mode under an eval model
    with eval_mode(net):
        assert not net[1].training
    assert not net.training and net[1].training


def test_eval_mode_warns_only_when_asked_and_in_training():
    net = _mixed()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with eval_mode(net):  # warn=False (the default) is silent
            pass
        with eval_mode(net.eval(), warn=True):  # an eval model never warns
            pass
    net.train()
    with pytest.warns(UserWarning, match="training mode"), eval_mode(net, warn=True):
        pass
    assert net.training


def test_eval_mode_rejects_non_modules():
    with pytest.raises(InputError, match=r"torch\.nn\.Module"), eval_mode("model"):
        pass


# ----------------------------------------------------------------------------- token models


def test_input_embeddings_and_max_positions(gpt2):
    assert input_embeddings(gpt2) is gpt2.transformer.wte
    assert max_positions(gpt2) == 8
    assert max_positions(nn.Linear(2, 2)) is None
    with pytest.raises(InputError, match="get_input_embeddings"):
        input_embeddings(nn.Linear(2, 2))


def test_check_token_inputs_default_mask(gpt2):
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    mask = check_token_inputs(gpt2, ids, None)
    assert mask.dtype == torch.long and bool((mask == 1).all()) and mask.shape == ids.shape
    bool_mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(check_token_inputs(gpt2, ids, bool_mask), bool_mask.long())


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (torch.tensor([[1, 11]]), None, r"must lie in \[0, 11\)"),
        (torch.tensor([[-1, 2]]), None, r"must lie in \[0, 11\)"),
        (torch.ones(1, 9, dtype=torch.long), None, "9 positions but the model takes at most 8"),
        (torch.tensor([1, 2]), None, "input_ids"),
        (torch.tensor([[1.0, 2.0]]), None, "input_ids"),
        (torch.tensor([[1, 2]]), torch.tensor([[1.0, 1.0]]), "0 \\(padding\\) and 1"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 2]]), "0 \\(padding\\) and 1"),
        (torch.tensor([[1, 2]]), torch.tensor([[0, 0]]), "no real token"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]), "attention_mask"),
    ],
    ids=["beyond-vocab", "negative", "too-long", "1-d", "float-ids", "float-mask", "mask-2", "empty-row", "mask-shape"],
)
def test_check_token_inputs_rejects(gpt2, ids, mask, message):
    with pytest.raises(InputError, match=message):
        check_token_inputs(gpt2, ids, mask)
