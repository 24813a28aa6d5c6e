"""One scale switch per modality: the small model a notebook trains or ships, or the paper's.

Every notebook's ``scale`` parameter goes through these, so ``-p scale full`` swaps the tiny
checkpoint for the paper's model in one place and every method module receives the same pair:

- :func:`load_lm` returns :class:`LoadedLM` ``(model, tokenizer)`` (always in that order): at
  ``scale="cpu"`` a zoo checkpoint with the tokenizer its recipe builds (``retrain=True`` reruns the
  recipe at ``seed``), at ``scale="full"`` a causal LM by Hugging Face name or local folder
  (:func:`~xattr_nb.models.hub.load_causal_lm`, eager attention, a pad token).
- :func:`load_image_model` returns an image classifier: a zoo checkpoint, or a Hugging Face
  image classifier by name or folder (:func:`~xattr_nb.models.hub.load_image_classifier`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import nn

from xattr_nb.checks import InputError, check_choice, check_int

SCALES: tuple[str, ...] = ("cpu", "full")


class LoadedLM(NamedTuple):
    """A language model and its tokenizer, in this order everywhere."""

    model: nn.Module
    tokenizer: Any


def _small(name: str, *, retrain: bool, seed: int, device: str) -> nn.Module:
    import xattr_nb.models.zoo as zoo

    if retrain:
        recipes = zoo.recipes()
        if name not in recipes:
            raise InputError(f"`small` {name!r} has no zoo recipe to retrain; known: {sorted(recipes)}")
        model = recipes[name].train(check_int(seed, "seed", low=0))[0]
        return model.to(device).eval()
    return zoo.load(name, device=device)


def load_lm(
    scale: str = "cpu",
    *,
    small: str,
    full: str = "gpt2",
    retrain: bool = False,
    seed: int = 0,
    device: str = "cpu",
    attn_implementation: str = "eager",
) -> LoadedLM:
    """``(model, tokenizer)`` of the zoo language model ``small`` (``scale="cpu"``) or of ``full``.

    A full-scale tokenizer without a pad token (GPT-2, Llama) gets its EOS as pad, so batches pad.
    """
    check_choice(scale, SCALES, "scale")
    if scale == "full":
        from xattr_nb.models.hub import load_causal_lm

        tok, model = load_causal_lm(full, device=device, attn_implementation=attn_implementation)
        if getattr(tok, "pad_token_id", None) is None and getattr(tok, "eos_token", None) is not None:
            tok.pad_token = tok.eos_token
        return LoadedLM(model.eval(), tok)
    import xattr_nb.models.zoo as zoo

    return LoadedLM(_small(small, retrain=retrain, seed=seed, device=device), zoo.tokenizer(small))


def load_image_model(
    scale: str = "cpu",
    *,
    small: str,
    full: str = "microsoft/resnet-18",
    retrain: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> nn.Module:
    """The zoo image classifier ``small`` (``scale="cpu"``) or the Hugging Face classifier ``full``."""
    check_choice(scale, SCALES, "scale")
    if scale == "full":
        from xattr_nb.models.hub import load_image_classifier

        return load_image_classifier(full, device=device)
    return _small(small, retrain=retrain, seed=seed, device=device)
