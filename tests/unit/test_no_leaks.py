"""Contexts and long runs leave the model exactly as they found it, also when they fail.

Every context that changes a model for the length of a ``with`` (hooks, output patches, steering,
LRP mode, the xattr attention swap, eval mode, pass counting, routing overrides) and every long
run that registers hooks internally (activation and attribution patching) is entered, made to fail
midway (an exception, and a KeyboardInterrupt as a user's Ctrl-C), and the model is compared with a
snapshot taken before: parameters and buffers bit for bit, every module's hook dicts, training
flags, and the attention implementation of every config.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import torch
from torch import nn

from xattr_nb.interventions import lrp, patching, steering
from xattr_nb.interventions.hooks import hooks, patch_output
from xattr_nb.kernels import count_passes
from xattr_nb.models import attention, moe
from xattr_nb.models.io import eval_mode
from xattr_nb.models.text import tiny_gpt2

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
              "_load_state_dict_pre_hooks")  # fmt: skip


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "hooks": {n: tuple(len(getattr(m, d, {})) for d in HOOK_DICTS) for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "attn": [getattr(c, "_attn_implementation", None) for c in attention._configs(model)],
        "forward": {n: m.forward for n, m in model.named_modules() if "forward" in vars(m)},
    }


def assert_same(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    changed = [k for k, v in before["state"].items() if not torch.equal(v, after["state"][k])]
    assert not changed, f"parameters/buffers changed: {changed[:5]}"
    leaked = {n: h for n, h in after["hooks"].items() if h != before["hooks"][n]}
    assert not leaked, f"hooks left behind: {leaked}"
    assert after["training"] == before["training"], "training flags changed"
    assert after["grad"] == before["grad"], "requires_grad changed"
    assert after["attn"] == before["attn"], "attention implementation not restored"
    assert after["forward"].keys() == before["forward"].keys(), "a forward was monkeypatched and left"


@pytest.fixture
def gpt2() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_gpt2(20, n_layer=2, n_head=2, d_model=16)
    model.train()  # so that eval_mode has something to restore
    return model


IDS = torch.tensor([[1, 5, 7, 9, 3], [2, 6, 8, 4, 3]])


def _contexts(model: nn.Module) -> dict[str, Callable[[], AbstractContextManager]]:
    block = "transformer.h.0"
    return {
        "hooks": lambda: hooks(model, {block: lambda m, a, o: None}),
        "patch_output": lambda: patch_output(model, block, 0.0),
        "add_vector": lambda: steering.add_vector(model, 0, torch.ones(16)),
        "lrp_mode": lambda: lrp.lrp_mode(model, ah=True),
        "use_xattr_attention": lambda: attention.use_xattr_attention(model, detach_probs=True),
        "attention_patterns": lambda: attention.attention_patterns(model),
        "eval_mode": lambda: eval_mode(model),
        "count_passes": lambda: count_passes(model),
    }


CONTEXTS = list(_contexts(nn.Module()).keys())


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("name", CONTEXTS)
def test_context_restores_the_model_after_a_failure_midway(gpt2, name, exc):
    before = snapshot(gpt2)
    with pytest.raises(exc), _contexts(gpt2)[name]():
        gpt2(IDS)  # the context is live: its hooks or swaps are in use
        raise exc("interrupted midway")
    assert_same(gpt2, before)


@pytest.mark.parametrize("name", CONTEXTS)
def test_context_restores_the_model_after_a_normal_exit(gpt2, name):
    before = snapshot(gpt2)
    with _contexts(gpt2)[name]():
        gpt2(IDS)
    assert_same(gpt2, before)


def test_routing_override_restores_the_moe_after_a_failure():
    torch.manual_seed(0)
    model = moe.moeify_gpt2(tiny_gpt2(20, n_layer=2, n_head=2, d_model=16), n_experts=4, k=2, layers=[1])
    before = snapshot(model)
    with pytest.raises(KeyboardInterrupt), moe.override_routing(model, {1: lambda logits: logits * 0}):
        model(IDS)
        raise KeyboardInterrupt
    assert_same(model, before)


class _Interrupt:
    """A metric that lets ``after`` calls through, then raises like a Ctrl-C inside the run."""

    def __init__(self, after: int, exc: type[BaseException]):
        self.calls, self.after, self.exc = 0, after, exc

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise self.exc("interrupted inside the run")
        return logits[:, -1, 0].mean()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("after", [0, 2])
def test_activation_patching_interrupted_leaves_no_hooks(gpt2, exc, after):
    gpt2.eval()
    before = snapshot(gpt2)
    with pytest.raises(exc):
        patching.activation_patching(gpt2, IDS, IDS.flip(1), _Interrupt(after, exc), max_rows=4)
    assert_same(gpt2, before)


@pytest.mark.parametrize("mode", ["grad", "relp"])
def test_attribution_patching_interrupted_leaves_no_hooks(gpt2, mode):
    gpt2.eval()
    before = snapshot(gpt2)
    with pytest.raises(KeyboardInterrupt):
        patching.attribution_patching(gpt2, IDS, IDS.flip(1), _Interrupt(0, KeyboardInterrupt), mode=mode)
    assert_same(gpt2, before)


def test_the_snapshot_sees_a_leaked_hook_a_flag_and_a_weight(gpt2):
    before = snapshot(gpt2)
    handle = gpt2.transformer.h[0].register_forward_hook(lambda m, a, o: None)
    with pytest.raises(AssertionError, match="hooks left behind"):
        assert_same(gpt2, before)
    handle.remove()
    gpt2.transformer.h[1].eval()
    with pytest.raises(AssertionError, match="training flags"):
        assert_same(gpt2, before)
    gpt2.train()
    with torch.no_grad():
        gpt2.lm_head.weight[0, 0] += 1
    with pytest.raises(AssertionError, match="parameters/buffers changed"):
        assert_same(gpt2, before)
