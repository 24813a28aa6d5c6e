"""Zoo recipe ``multitask_moe_gpt2``: a 4-layer MoE GPT-2 trained on the imbalanced multitask world.

``xattr-nb zoo train multitask_moe_gpt2`` runs :func:`train_multitask_moe`: a
:func:`~xattr_nb.models.text.tiny_gpt2` (4 layers, d = 64, 4 heads) whose every MLP is a
:class:`~xattr_nb.models.moe.TopKMoEMLP` (8 experts, top-2, expert width 64), trained, all
parameters, on :func:`~xattr_nb.worlds.multitask.multitask_moe` with 90 % frequent paraphrases.
Loss: cross-entropy of the four answer digits under teacher forcing, plus a small Switch load-balancing
term so that experts do not collapse. Metrics: held-out exact match on frequent and rare paraphrases.
The tokenizer is not stored: :func:`multitask_tokenizer` rebuilds it from the world's vocabulary.

The answer helpers (:func:`answer_targets`, :func:`answer_loss`, :func:`exact_match`) are shared with
:mod:`xattr_nb.methods.roma`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from xattr_nb.checks import InputError, check_tensor
from xattr_nb.models import zoo
from xattr_nb.models.fit import fit
from xattr_nb.models.moe import load_balance_loss, moe_arch_config, moeify_gpt2
from xattr_nb.models.text import tiny_gpt2, word_tokenizer
from xattr_nb.worlds.multitask import N_DIGITS, SPECIALS, MultitaskData, multitask_moe, multitask_vocab

__all__ = [
    "IGNORE",
    "answer_loss",
    "answer_targets",
    "exact_match",
    "multitask_moe_gpt2",
    "multitask_tokenizer",
    "train_multitask_moe",
]

IGNORE = -100
BASE_SIZES = {"n_train": 6000, "n_test": 960, "epochs": 10}


def multitask_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer for the multitask world (ids = positions in :func:`multitask_vocab`)."""
    vocab = multitask_vocab()
    return word_tokenizer(vocab[len(SPECIALS) :], specials=SPECIALS)


def multitask_moe_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """The untrained architecture: 4-layer GPT-2 (d = 64), every MLP an 8-expert top-2 MoE (width 64)."""
    model = tiny_gpt2(
        len(multitask_vocab()), n_layer=4, n_head=4, d_model=64, n_ctx=20, bos_token_id=2, eos_token_id=3,
        pad_token_id=0, seed=seed,
    )  # fmt: skip
    return moeify_gpt2(model, n_experts=8, k=2, d_ff=64, seed=seed)


def answer_targets(data: MultitaskData) -> torch.Tensor:
    """Next-token targets ``[n, T]``: the answer digit at the 4 positions that predict one, ``IGNORE`` elsewhere."""
    ids = data.ids
    tgt = torch.full_like(ids, IGNORE)
    rows = torch.arange(ids.shape[0])
    for j in range(N_DIGITS):
        tgt[rows, data.prompt_len - 1 + j] = ids[rows, data.prompt_len + j]
    return tgt


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the answer digits (``targets`` from :func:`answer_targets`)."""
    logits = check_tensor(logits, "logits", ndim=3, dtype="float", finite=False, layout="[B, T, V]")
    targets = check_tensor(targets, "targets", shape=tuple(logits.shape[:2]), dtype="int", layout="[B, T]")
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def exact_match(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example, True when the argmax at every answer position is the target digit (teacher forcing)."""
    logits = check_tensor(logits, "logits", ndim=3, dtype="float", finite=False, layout="[B, T, V]")
    targets = check_tensor(targets, "targets", shape=tuple(logits.shape[:2]), dtype="int", layout="[B, T]")
    scored = targets != IGNORE
    if bool((scored.sum(1) == 0).any()):
        raise InputError("`targets` has a row with no answer position")
    return ((logits.argmax(-1) == targets) | ~scored).all(1)


@torch.no_grad()
def _accuracy(model: nn.Module, data: MultitaskData, rows: torch.Tensor) -> float:
    ok = exact_match(
        model(input_ids=data.ids[rows], attention_mask=data.mask[rows].long()).logits, answer_targets(data)[rows]
    )
    return round(float(ok.float().mean()), 4)


def train_multitask_moe(
    seed: int,
    *,
    n_train: int = BASE_SIZES["n_train"],
    n_test: int = BASE_SIZES["n_test"],
    epochs: int = BASE_SIZES["epochs"],
    balance_weight: float = 0.01,
    show_progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train every parameter on imbalanced data (rare paraphrases 10 %); report balanced held-out exact match."""
    train = multitask_moe(n_train, rare_share=0.1, seed=seed)
    test = multitask_moe(n_test, rare_share=None, seed=seed + 10_000)
    model = multitask_moe_gpt2(seed)
    fit(
        model,
        (train.ids, answer_targets(train)),
        epochs=epochs,
        lr=3e-3,
        batch_size=64,
        loss_fn=answer_loss,
        extra_loss=lambda m, inputs, y, logits: balance_weight * load_balance_loss(m),
        seed=seed,
        show_progress=show_progress,
        grad_clip=1.0,
    )
    model.eval()
    metrics = {
        "test_exact_match_frequent": _accuracy(model, test, ~test.rare),
        "test_exact_match_rare": _accuracy(model, test, test.rare),
        "n_train": n_train,
    }
    return model, metrics


zoo.register(
    "multitask_moe_gpt2",
    config=moe_arch_config(multitask_moe_gpt2()),
    train=train_multitask_moe,
    description="4-layer MoE GPT-2 (d=64, 8 experts top-2) on the imbalanced multitask world (RoMA); "
    "tokenizer: moe_recipes.multitask_tokenizer()",
    tokenizer=multitask_tokenizer,
)
