"""Zoo recipe of the sorting policy's base model M0 (``xattr-nb zoo train tinylm_sort_m0``), paper 25.

A :func:`~xattr_nb.models.policy.tiny_gpt2` (2 layers, width 64, 4 heads, character vocabulary
of 13) "pretrained" on the noisy sorting corpus of :class:`~xattr_nb.worlds.sorting.SortTask`
(6 digits; half correct sorts, half near-sorts with 1–3 adjacent swaps): next-token loss on the
response, AdamW, 10 % warm-up then cosine decay. The corpus's mix is what M0 learns: sampled at the
self-rewarding temperature its answers are right about half the time, while its greedy answer
(the mode) is nearly always right. The manifest records both on fresh prompts.
"""

from __future__ import annotations

import time
from typing import Any

from xattr_nb.models import zoo
from xattr_nb.models.policy import char_tokenizer, tiny_gpt2
from xattr_nb.runtime import seed_everything
from xattr_nb.worlds.sorting import SortTask

__all__ = ["M0_CONFIG", "M0_TRAIN", "sort_tokenizer", "train_sort_m0"]

#: Training setting of the shipped checkpoint.
M0_TRAIN: dict[str, Any] = {"length": 6, "n_corpus": 20000, "p_correct": 0.5, "max_swaps": 3, "steps": 800,
                            "batch_size": 64, "lr": 3e-3}  # fmt: skip


def sort_tokenizer(length: int = 6) -> Any:
    """The character tokenizer of the sorting world (``<pad>``, ``<eos>``, digits, ``=``)."""
    return char_tokenizer(SortTask(length=length).alphabet)


def _config() -> dict[str, Any]:
    model = tiny_gpt2(len(sort_tokenizer()))
    return {"arch": "hf", "kwargs": {"model_class": "GPT2LMHeadModel", "config": model.config.to_dict(),
                                     "attn_implementation": "eager"}}  # fmt: skip


M0_CONFIG: dict[str, Any] = _config()


def train_sort_m0(seed: int, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Train M0 on the noisy corpus (``overrides`` change :data:`M0_TRAIN`, for tests)."""
    from xattr_nb.methods.cream import evaluate, lm_train

    k = {**M0_TRAIN, **overrides}
    t0 = time.perf_counter()
    seed_everything(seed)
    task = SortTask(length=int(k["length"]))
    tok = sort_tokenizer(task.length)
    prompts, responses = task.noisy_corpus(int(k["n_corpus"]), p_correct=k["p_correct"], max_swaps=k["max_swaps"],
                                           seed=seed)  # fmt: skip
    model = tiny_gpt2(len(tok), seed=seed)
    lm_train(model, tok, prompts, responses, steps=int(k["steps"]), lr=k["lr"], batch_size=int(k["batch_size"]),
             seed=seed, show_progress=True)  # fmt: skip
    ev = evaluate(model, tok, task, task.prompts(300, seed=seed + 50_000), n_samples=4, seed=seed)
    return model, {**{k_: round(v, 4) for k_, v in ev.items()}, "train_seconds": round(time.perf_counter() - t0, 1)}


zoo.register(
    "tinylm_sort_m0",
    config=M0_CONFIG,
    train=train_sort_m0,
    tokenizer=sort_tokenizer,
    description="tiny GPT-2 (HF GPT2LMHeadModel 2x64, character vocabulary) pretrained on the noisy digit-sorting "
    "corpus (50% correct sorts, 50% near-sorts with 1-3 adjacent swaps): the base model M0 of CREAM (paper 25)",
)
