"""Hooks, caches and patching on tiny random HF GPT-2 / BERT and plain torch models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel

from xattr_nb.checks import InputError
from xattr_nb.interventions import ActivationCache, block_names, hooks, patch_output, run_with_cache


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=20,
        n_embd=16,
        n_layer=3,
        n_head=2,
        n_positions=16,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def bert_cfg():
    return BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
        initializer_range=0.3,
    )


@pytest.fixture(scope="module")
def bert(bert_cfg):
    torch.manual_seed(0)
    return BertModel(bert_cfg).eval()


IDS = torch.tensor([[3, 5, 7, 9, 2], [4, 4, 8, 1, 6]])


def _n_hooks(model: nn.Module) -> int:
    """Hooks on the model. transformers 5 installs its own output-recording hooks on the first
    forward that asks for hidden states, so tests compare this count before and after."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Blocks(nn.Module):
    def __init__(self, attr: str) -> None:
        super().__init__()
        setattr(self, attr, nn.ModuleList([nn.Linear(4, 4) for _ in range(3)]))
        self.attr = attr

    def forward(self, x):
        for blk in getattr(self, self.attr):
            x = x + blk(x)
        return x


def test_block_names(gpt, bert, bert_cfg):
    assert block_names(gpt) == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    assert block_names(gpt.transformer) == ["h.0", "h.1", "h.2"]
    assert block_names(bert) == ["encoder.layer.0", "encoder.layer.1"]
    assert block_names(BertForSequenceClassification(bert_cfg)) == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert block_names(Blocks("blocks")) == ["blocks.0", "blocks.1", "blocks.2"]
    assert block_names(Blocks("layers")) == ["layers.0", "layers.1", "layers.2"]


def test_gpt2_cached_blocks_equal_hidden_states(gpt):
    gpt(input_ids=IDS, output_hidden_states=True)
    n0 = _n_hooks(gpt)
    names = block_names(gpt)
    out, cache = run_with_cache(gpt, input_ids=IDS, names=names, output_hidden_states=True)
    assert isinstance(cache, ActivationCache) and list(cache.keys()) == names
    hs = out.hidden_states  # embeddings, block 0, ..., ln_f(last block)
    for i, n in enumerate(names[:-1]):
        torch.testing.assert_close(cache[n], hs[i + 1])
    torch.testing.assert_close(gpt.transformer.ln_f(cache[names[-1]]), hs[-1])
    assert not cache[names[0]].requires_grad and cache.calls[names[0]] == 1
    assert cache.stack(names).shape == (3, 2, 5, 16)
    assert _n_hooks(gpt) == n0


def test_bert_cached_blocks_equal_hidden_states(bert):
    out, cache = run_with_cache(bert, IDS, names=block_names(bert), output_hidden_states=True)
    for i, n in enumerate(block_names(bert)):
        torch.testing.assert_close(cache[n], out.hidden_states[i + 1])


def test_run_with_cache_all_modules_and_detach_false(gpt):
    out, cache = run_with_cache(gpt, input_ids=IDS, detach=False)
    assert "transformer.h.1.mlp" in cache and "lm_head" in cache
    torch.testing.assert_close(cache["lm_head"], out.logits)
    # the graph is kept: a gradient flows from the logits back to a cached block output
    (g,) = torch.autograd.grad(out.logits[0, -1, 3], cache["transformer.h.0"])
    assert g.shape == (2, 5, 16) and g.abs().sum() > 0
    with pytest.raises(KeyError, match="did you mean"):
        cache["transformer.h.0.mpl"]


def test_hooks_removed_when_body_raises(gpt):
    n0, h0 = _n_hooks(gpt), dict(gpt.transformer.h[0]._forward_hooks)
    seen = []
    with pytest.raises(RuntimeError, match="boom"), hooks(gpt, {"transformer.h.0": lambda m, a, o: seen.append(1)}):
        gpt(input_ids=IDS)
        raise RuntimeError("boom")
    assert seen == [1] and _n_hooks(gpt) == n0 and gpt.transformer.h[0]._forward_hooks == h0
    gpt(input_ids=IDS)  # no hook left: nothing appended
    assert seen == [1]
    with hooks(gpt, {"transformer.h.0": lambda m, a, o: seen.append(2)}):  # a rerun works
        gpt(input_ids=IDS)
    assert seen == [1, 2] and _n_hooks(gpt) == n0


def test_hooks_on_plain_model_leave_no_handle_after_raise():
    net = Blocks("layers")
    with pytest.raises(ValueError), hooks(net, {"layers.0": lambda m, a, o: o * 0, "": lambda m, a, o: None}):
        raise ValueError
    assert all(not m._forward_hooks for m in net.modules())
    x = torch.randn(1, 4)
    with hooks(net, {"layers.0": lambda m, a, o: o * 0}):
        y = net(x)
    with torch.no_grad():
        h = x + x * 0
        h = h + net.layers[1](h)
        torch.testing.assert_close(y, h + net.layers[2](h))


def test_pre_hooks_can_rewrite_inputs():
    net = Blocks("blocks")
    x = torch.randn(2, 4)
    with hooks(net, {"blocks.1": lambda m, args: (torch.zeros_like(args[0]),)}, kind="pre"):
        y = net(x)
    with torch.no_grad():
        h = x + net.blocks[0](x)
        h = h + net.blocks[1](torch.zeros_like(x))  # only the block's input is rewritten, not the residual
        expect = h + net.blocks[2](h)
    torch.testing.assert_close(y, expect)
    assert _n_hooks(net) == 0


def test_patch_output_zero_changes_logits_and_is_removed(gpt):
    n0 = _n_hooks(gpt)
    with torch.no_grad():
        clean = gpt(input_ids=IDS).logits
        with patch_output(gpt, "transformer.h.1", 0.0):
            patched = gpt(input_ids=IDS).logits
            _, cache = run_with_cache(gpt, input_ids=IDS, names=["transformer.h.1"])
        after = gpt(input_ids=IDS).logits
    assert (patched - clean).abs().max() > 1e-2
    assert bool((cache["transformer.h.1"] == 0).all())
    torch.testing.assert_close(after, clean)
    assert _n_hooks(gpt) == n0


def test_patch_output_with_cached_activation_restores_clean_run(gpt):
    # activation patching: patching a block with its own clean output reproduces the clean logits
    corrupt = IDS.flip(1)
    with torch.no_grad():
        clean, cache = run_with_cache(gpt, input_ids=IDS, names=["transformer.h.2"])
        with patch_output(gpt, "transformer.h.2", cache["transformer.h.2"]):
            patched = gpt(input_ids=corrupt).logits
    torch.testing.assert_close(patched, clean.logits)


def test_patch_output_with_function_on_bert_layer(bert):
    with torch.no_grad():
        ref = bert(IDS).last_hidden_state
        with patch_output(bert, "encoder.layer.1", lambda h: 2 * h):
            doubled = bert(IDS).last_hidden_state
    torch.testing.assert_close(doubled, 2 * ref)


# ----------------------------------------------------------------------------- bad input


def test_bad_unknown_module_name_suggests(gpt):
    n0 = _n_hooks(gpt)
    with (
        pytest.raises(InputError, match=r"did you mean \['transformer.h.0'"),
        hooks(gpt, {"transformer.h0": lambda m, a, o: None}),
    ):
        pass
    assert _n_hooks(gpt) == n0


def test_bad_name_registers_nothing(gpt):
    n0 = _n_hooks(gpt)
    with pytest.raises(InputError), hooks(gpt, {"transformer.h.0": lambda m, a, o: None, "nope": lambda *a: None}):
        pass
    assert _n_hooks(gpt) == n0


def test_bad_hook_kind(gpt):
    with pytest.raises(InputError, match="kind"), hooks(gpt, {"transformer.h.0": lambda *a: None}, kind="backward"):
        pass


def test_bad_hook_not_callable(gpt):
    with pytest.raises(InputError, match="callable"), hooks(gpt, {"transformer.h.0": 3}):
        pass


def test_bad_patch_shape(gpt):
    n0 = _n_hooks(gpt)
    with pytest.raises(InputError, match="shape"), patch_output(gpt, "transformer.h.0", torch.zeros(2, 5)):
        gpt(input_ids=IDS)
    assert _n_hooks(gpt) == n0


def test_bad_patch_value_type(gpt):
    with pytest.raises(InputError, match="value"), patch_output(gpt, "transformer.h.0", "zeros"):
        pass


def test_bad_cache_names(gpt):
    with pytest.raises(InputError, match="names"):
        run_with_cache(gpt, input_ids=IDS, names="transformer.h.0")
    with pytest.raises(InputError, match="did you mean"):
        run_with_cache(gpt, input_ids=IDS, names=["transformer.h.9"])


def test_bad_no_blocks():
    with pytest.raises(InputError, match="residual blocks"):
        block_names(nn.Sequential(nn.Linear(2, 2)))


def test_bad_model_type():
    with pytest.raises(InputError, match=r"nn.Module"):
        block_names("gpt2")
