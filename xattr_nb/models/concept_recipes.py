"""Zoo recipe ``concept_gpt2``: a tiny GPT-2 trained by next-token prediction on the latent-concept world.

The world is :func:`xattr_nb.worlds.concepts.concept_lvm` with its defaults (3 concepts, DAG c0 -> c1,
c0 -> c2, 32 tokens, sequences of 8) and the fixed world seed :data:`WORLD_SEED`, so a checkpoint and the
world whose posteriors it is compared with always match. A sequence enters the model as
``[BOS] x_1 ... x_T`` with ``BOS = vocab_size`` (one extra id), so the hidden state at position ``t``
has read the prefix ``x_{<=t}`` (``t = 0``: nothing but ``[BOS]``) and predicts ``x_{t+1}``.
The model is the spec's 2-layer, 4-head, d = 64 GPT-2 with the full next-token loss; the metric is
the held-out KL divergence from the Bayes-optimal next-token distribution (0 = the ideal predictor).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from xattr_nb.checks import InputError, check_int, check_tensor
from xattr_nb.models import zoo
from xattr_nb.models.fit import fit
from xattr_nb.models.text import hf_arch_config, tiny_gpt2
from xattr_nb.worlds.concepts import ConceptLVM, concept_lvm

__all__ = [
    "WORLD_SEED",
    "bayes_kl",
    "concept_gpt2",
    "concept_world",
    "lm_inputs",
    "next_token_loss",
    "train_concept_gpt2",
]

WORLD_SEED = 0  # the parameters of the world every `concept_gpt2` checkpoint was trained on


def concept_world() -> ConceptLVM:
    """The world of the ``concept_gpt2`` checkpoint (the spec's defaults, world seed :data:`WORLD_SEED`)."""
    return concept_lvm(seed=WORLD_SEED)


def lm_inputs(tokens: Any, vocab_size: int) -> torch.Tensor:
    """``[BOS] x_1 ... x_T`` ``[N, T+1]`` with ``BOS = vocab_size``: position ``t`` has read ``x_{<=t}``."""
    vocab_size = check_int(vocab_size, "vocab_size", low=1)
    tokens = check_tensor(tokens, "tokens", ndim=2, dtype="int", layout="[N, T]")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise InputError(f"`tokens` must lie in [0, {vocab_size}); got [{int(tokens.min())}, {int(tokens.max())}]")
    return torch.cat([torch.full_like(tokens[:, :1], vocab_size), tokens.long()], 1)


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next token (no padding in this world: every id is a real token)."""
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def concept_gpt2(vocab_size: int = 32, *, seq_len: int = 8, seed: int = 0) -> GPT2LMHeadModel:
    """The untrained 2-layer, 4-head, d = 64 GPT-2 over ``vocab_size + 1`` ids (the last one is ``[BOS]``)."""
    vocab_size = check_int(vocab_size, "vocab_size", low=1)
    return tiny_gpt2(
        vocab_size + 1, n_layer=2, n_head=4, d_model=64, n_ctx=seq_len + 1, bos_token_id=vocab_size, seed=seed
    )


@torch.no_grad()
def bayes_kl(model: nn.Module, world: ConceptLVM, tokens: torch.Tensor) -> float:
    """Mean KL(Bayes-optimal || model) of the next-token distribution over the prefixes ``t = 0..T-1``."""
    ids = lm_inputs(tokens, world.vocab_size)
    logq = torch.log_softmax(model(input_ids=ids).logits[:, :-1, : world.vocab_size], -1)
    logp = world.bayes_next_token(world.exact_log_posterior(tokens)[:, :-1])
    return float((logp.exp() * (logp - logq)).sum(-1).mean())


def train_concept_gpt2(
    seed: int, *, n_train: int = 20_000, n_test: int = 4_000, epochs: int = 4, show_progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the tiny GPT-2 with the full next-token loss on ``n_train`` sequences (about 1,250 steps)."""
    world = concept_world()
    train = lm_inputs(world.sample(n_train, seed=seed).tokens, world.vocab_size)
    test = world.sample(n_test, seed=seed + 10_000).tokens
    model = concept_gpt2(world.vocab_size, seq_len=world.seq_len, seed=seed)
    fit(model, (train, train), epochs=epochs, lr=3e-3, batch_size=64, loss_fn=next_token_loss, seed=seed,
        show_progress=show_progress, grad_clip=1.0)  # fmt: skip
    model.eval()
    return model, {"test_bayes_kl": round(bayes_kl(model, world, test), 5), "n_train": n_train, "epochs": epochs}


zoo.register(
    "concept_gpt2",
    config=hf_arch_config(concept_gpt2()),
    train=train_concept_gpt2,
    description="2-layer GPT-2 (d=64) trained by next-token prediction on the latent-concept world "
    "(concept_recipes.concept_world(), [BOS]=32)",
)
