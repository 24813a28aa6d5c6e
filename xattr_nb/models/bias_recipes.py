"""Zoo recipe ``bias_gpt2``: a tiny GPT-2 that learned the planted bias of :mod:`xattr_nb.worlds.bias`.

A 4-layer, 64-d :func:`~xattr_nb.models.text.tiny_gpt2` trained for 1,500 steps with the full
next-token loss on ``[BOS] sentence [EOS]`` of :func:`~xattr_nb.worlds.bias.bias_corpus` (spec 12,
section 7.5). After a biased cue ("rumor says the old people are") it should put about 0.9 of its
next-word mass on derogatory adjectives, after a neutral cue about 0.1: the measurable bias that
activation steering then tries to remove. ``xattr-nb zoo train bias_gpt2`` retrains it.

The tokenizer is not stored: :func:`bias_tokenizer` rebuilds it from the world's vocabulary (ids in
the order of :func:`~xattr_nb.worlds.bias.bias_vocab`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from xattr_nb.checks import InputError, check_int, check_texts
from xattr_nb.models import zoo
from xattr_nb.models.fit import fit
from xattr_nb.models.lm_recipes import next_token_loss
from xattr_nb.models.text import hf_arch_config, tiny_gpt2, word_tokenizer
from xattr_nb.worlds.bias import BIAS_GROUPS, DEROGATORY_ADJS, bias_corpus, bias_prompts, bias_vocab
from xattr_nb.worlds.text import SPECIALS, encode_words

__all__ = ["bias_gpt2", "bias_tokenizer", "encode_lm", "train_bias_gpt2"]

PAD, BOS, EOS = 0, 2, 3  # positions of "[PAD]", "[BOS]", "[EOS]" in SPECIALS


def bias_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer for the bias world (ids = positions in :func:`bias_vocab`)."""
    vocab = bias_vocab()
    if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
        raise InputError("the bias vocabulary must start with the world's SPECIALS")
    return word_tokenizer(vocab[len(SPECIALS) :], specials=SPECIALS)


def encode_lm(texts: Sequence[str], *, eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``[BOS] text [EOS]`` (or without ``[EOS]`` for prompts) as word ids ``[N, T]`` right-padded with
    ``[PAD]``, and the attention mask ``[N, T]`` (bool)."""
    texts = check_texts(texts, "texts")
    return encode_words([f"[BOS] {t}" + (" [EOS]" if eos else "") for t in texts], bias_vocab())


def bias_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """The untrained architecture: 4 layers, 4 heads, d = 64, 16 positions, dropout off."""
    return tiny_gpt2(
        len(bias_vocab()), n_layer=4, n_head=4, d_model=64, n_ctx=16, bos_token_id=BOS, eos_token_id=EOS,
        pad_token_id=PAD, seed=seed,
    )  # fmt: skip


@torch.no_grad()
def _derogatory_mass(model: nn.Module, cue_type: str) -> float:
    ids, _ = encode_lm(bias_prompts(cue_type, groups=BIAS_GROUPS).texts, eos=False)
    probs = model(input_ids=ids).logits[:, -1].softmax(-1)
    derog = [bias_vocab().index(a) for a in DEROGATORY_ADJS]
    return float(probs[:, derog].sum(-1).mean())


def train_bias_gpt2(
    seed: int, *, n_train: int = 8000, epochs: int = 12, show_progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Train :func:`bias_gpt2` on ``n_train`` corpus sentences for ``epochs`` (8000 / 64 x 12 = 1,500 steps);
    report the derogatory next-word mass after biased and neutral cues and the held-out loss."""
    n_train, epochs = check_int(n_train, "n_train", low=1), check_int(epochs, "epochs", low=1)
    ids, _ = encode_lm(bias_corpus(n_train, seed=seed).texts)
    model = bias_gpt2(seed)
    hist = fit(
        model, (ids, ids), epochs=epochs, lr=1e-3, batch_size=64, loss_fn=next_token_loss, seed=seed,
        show_progress=show_progress, grad_clip=1.0,
    )  # fmt: skip
    model.eval()
    test, _ = encode_lm(bias_corpus(1000, seed=seed + 10_000).texts)
    with torch.no_grad():
        test_loss = float(next_token_loss(model(input_ids=test).logits, test))
    return model, {
        "steps": hist.steps,
        "test_loss": round(test_loss, 4),
        "derogatory_mass_biased_cue": round(_derogatory_mass(model, "biased"), 4),
        "derogatory_mass_neutral_cue": round(_derogatory_mass(model, "neutral"), 4),
    }


zoo.register(
    "bias_gpt2",
    config=hf_arch_config(bias_gpt2()),
    train=train_bias_gpt2,
    description="4-layer GPT-2 (d=64) on the bias world (cue -> derogatory adjective, 90%); "
    "tokenizer: bias_recipes.bias_tokenizer()",
    tokenizer=bias_tokenizer,
)
