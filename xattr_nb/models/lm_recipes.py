"""Zoo recipes for tiny language models on a text world whose ground truth is known.

``xattr-nb zoo train ioi_gpt2`` / ``ioi_mlm`` run these. Both models read the IOI world of
:func:`xattr_nb.worlds.text.ioi` ("when mary and john went to the store , john gave a drink to" →
"mary"): the next token after the prompt is the indirect object, whose first mention is the
ground-truth evidence (``io_pos``) and whose subject mentions (``s1_pos``, ``s2_pos``) are the
attractors.

- ``ioi_gpt2``: a 2-layer :func:`~xattr_nb.models.text.tiny_gpt2` trained with the full next-token
  loss on ``[BOS] prompt answer [EOS]`` (so it also models the template words); metric: greedy
  answer accuracy on held-out prompts.
- ``ioi_mlm``: a 2-layer ``BertForMaskedLM`` trained to fill 15 % masked words of the same texts,
  the small stand-in for the RoBERTa replacement model ReAGent uses in its paper.

The tokenizer is not stored: :func:`ioi_tokenizer` rebuilds it from the world's vocabulary, word
ids in the same order as :func:`~xattr_nb.worlds.text.encode_words`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel, PreTrainedTokenizerFast

from xattr_nb.checks import InputError, check_int
from xattr_nb.models import zoo
from xattr_nb.models.fit import fit
from xattr_nb.models.text import hf_arch_config, tiny_gpt2, word_tokenizer
from xattr_nb.worlds.text import IOI_NAMES, SPECIALS, IOIData, encode_words, ioi

__all__ = [
    "ioi_held_out_pair",
    "ioi_lm_batch",
    "ioi_pair_items",
    "ioi_tokenizer",
    "ioi_vocab",
    "next_token_loss",
    "tiny_mlm",
    "train_ioi_gpt2",
    "train_ioi_gpt2_4l",
    "train_ioi_mlm",
]

PAD, BOS, EOS, MASK = 0, 2, 3, 4  # positions of "[PAD]", "[BOS]", "[EOS]", "[MASK]" in SPECIALS


def ioi_vocab() -> list[str]:
    """The IOI world's word list (specials first), the id order every IOI model uses."""
    return list(ioi(1, seed=0).vocab)


def ioi_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer for the IOI world (ids = positions in :func:`ioi_vocab`)."""
    vocab = ioi_vocab()
    if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
        raise InputError("the IOI vocabulary must start with the world's SPECIALS")
    return word_tokenizer(vocab[len(SPECIALS) :], specials=SPECIALS)


def ioi_lm_batch(n: int, *, seed: int) -> dict[str, Any]:
    """``n`` IOI items as LM sequences ``[BOS] prompt answer [EOS]`` (right-padded with ``[PAD]``).

    Returns ``ids`` ``[n, T]``, ``prompt_len`` ``[n]`` (tokens before the answer, ``[BOS]``
    included), ``answer`` ``[n]`` (the IO's id) and the world ``data``.
    """
    n = check_int(n, "n", low=1)
    data = ioi(n, seed=seed)
    vocab = data.vocab
    texts = [f"[BOS] {t} {a} [EOS]" for t, a in zip(data.texts, data.answers, strict=True)]
    ids, _ = encode_words(texts, vocab)
    index = {w: i for i, w in enumerate(vocab)}
    answer = torch.as_tensor([index[a] for a in data.answers])
    prompt_len = torch.as_tensor([len(w) + 1 for w in data.words])
    return {"ids": ids, "prompt_len": prompt_len, "answer": answer, "data": data}


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next token (``[PAD]`` targets ignored): the full LM loss."""
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=PAD
    )


def _gpt2(vocab_size: int, seed: int = 0) -> PreTrainedModel:
    return tiny_gpt2(
        vocab_size, n_layer=2, n_head=4, d_model=64, n_ctx=32, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        seed=seed,
    )  # fmt: skip


@torch.no_grad()
def answer_accuracy(model: nn.Module, batch: dict[str, Any]) -> float:
    """Share of prompts whose greedy next token is the indirect object."""
    ids, plen = batch["ids"], batch["prompt_len"]
    logits = model(input_ids=ids).logits
    pred = logits[torch.arange(ids.shape[0]), plen - 1].argmax(-1)
    return float((pred == batch["answer"]).float().mean())


def train_ioi_gpt2(
    seed: int, *, n_train: int = 6000, n_test: int = 500, epochs: int = 12, show_progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the 2-layer GPT-2 on IOI with the full next-token loss; report held-out answer accuracy."""
    train = ioi_lm_batch(n_train, seed=seed)
    test = ioi_lm_batch(n_test, seed=seed + 10_000)
    model = _gpt2(len(train["data"].vocab), seed=seed)
    fit(
        model,
        (train["ids"], train["ids"]),
        epochs=epochs,
        lr=3e-3,
        batch_size=64,
        loss_fn=next_token_loss,
        seed=seed,
        show_progress=show_progress,
        grad_clip=1.0,
    )
    model.eval()
    return model, {"test_answer_accuracy": round(answer_accuracy(model, test), 4), "n_train": n_train}


def tiny_mlm(vocab_size: int, *, seed: int = 0) -> BertForMaskedLM:
    """A 2-layer, 64-d ``BertForMaskedLM`` (dropout off), deterministic from ``seed``."""
    cfg = BertConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=PAD,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(cfg)
    return model.eval()


class _MaskedWords(torch.utils.data.Dataset):
    """Fresh 15 % word masks per access, drawn from a seeded generator (BERT's recipe, all [MASK])."""

    def __init__(self, ids: torch.Tensor, seed: int):
        self.ids, self.gen = ids, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.ids[i]
        real = (x != PAD) & (x != BOS) & (x != EOS)
        m = (torch.rand(x.shape, generator=self.gen) < 0.15) & real
        if not bool(m.any()):
            m[int(real.nonzero()[0])] = True
        y = torch.where(m, x, torch.full_like(x, -100))
        return torch.where(m, torch.full_like(x, MASK), x), (x != PAD).long(), y


def _mlm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


@torch.no_grad()
def mlm_accuracy(model: nn.Module, batch: dict[str, Any], seed: int = 0) -> float:
    """Accuracy of the MLM's argmax on 15 % masked words of held-out texts."""
    ds = _MaskedWords(batch["ids"], seed)
    xs, ms, ys = (torch.stack(t) for t in zip(*(ds[i] for i in range(len(ds))), strict=True))
    pred = model(input_ids=xs, attention_mask=ms).logits.argmax(-1)
    sel = ys != -100
    return float((pred[sel] == ys[sel]).float().mean())


def train_ioi_mlm(
    seed: int, *, n_train: int = 3000, n_test: int = 300, epochs: int = 6, show_progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the tiny masked LM on IOI texts (answer included); report held-out masked-word accuracy."""
    train = ioi_lm_batch(n_train, seed=seed + 1)
    test = ioi_lm_batch(n_test, seed=seed + 20_000)
    model = tiny_mlm(len(train["data"].vocab), seed=seed)
    loader = torch.utils.data.DataLoader(
        _MaskedWords(train["ids"], seed), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    fit(model, loader, epochs=epochs, lr=3e-3, loss_fn=_mlm_loss, seed=seed, show_progress=show_progress)
    model.eval()
    return model, {"test_masked_accuracy": round(mlm_accuracy(model, test), 4), "n_train": n_train}


_V = len(ioi_vocab())
zoo.register(
    "ioi_gpt2",
    config=hf_arch_config(_gpt2(_V)),
    train=train_ioi_gpt2,
    description="2-layer GPT-2 (d=64) on the IOI world, full next-token loss; tokenizer: lm_recipes.ioi_tokenizer()",
    tokenizer=ioi_tokenizer,
)
zoo.register(
    "ioi_mlm",
    config=hf_arch_config(tiny_mlm(_V)),
    train=train_ioi_mlm,
    description="2-layer BertForMaskedLM (d=64) on IOI texts, ReAGent's replacement sampler (RoBERTa stand-in)",
    tokenizer=ioi_tokenizer,
)


# ---------------------------------------------------------------------------------------------- ioi_gpt2_4l (RelP)


def ioi_held_out_pair(a: str, b: str) -> bool:
    """Whether the (unordered) name pair ``{a, b}`` is held out of ``ioi_gpt2_4l``'s training: about
    one pair in five, fixed by the names' positions in ``IOI_NAMES`` (so every name is still seen)."""
    i, j = sorted((IOI_NAMES.index(a), IOI_NAMES.index(b)))
    return (3 * i + j) % 5 == 0


def ioi_pair_items(n: int, *, seed: int, held_out: bool) -> IOIData:
    """``n`` IOI items whose (IO, S) pair is held out (``held_out=True``) or seen in training (``False``)."""
    n = check_int(n, "n", low=1)
    out, draw = [], 0
    while sum(len(d) for d in out) < n:
        data = ioi(2 * n, seed=seed + 7919 * draw)
        keep = [i for i in range(len(data)) if ioi_held_out_pair(data.answers[i], data.wrong[i]) == held_out]
        out.append(data.subset(torch.as_tensor(keep, dtype=torch.long)))
        draw += 1
    rows = [(d, i) for d in out for i in range(len(d))][:n]
    first = out[0]
    fields = {f: [getattr(d, f)[i] for d, i in rows] for f in IOIData._items}
    fields = {f: torch.stack(v) if isinstance(getattr(first, f), torch.Tensor) else v for f, v in fields.items()}
    return IOIData(**fields, vocab=first.vocab)


def _gpt2_4l(vocab_size: int, seed: int = 0) -> PreTrainedModel:
    return tiny_gpt2(
        vocab_size, n_layer=4, n_head=4, d_model=64, d_mlp=256, n_ctx=32, bos_token_id=BOS, eos_token_id=EOS,
        pad_token_id=PAD, seed=seed,
    )  # fmt: skip


def _lm_items(data: IOIData) -> dict[str, torch.Tensor]:
    texts = [f"[BOS] {t} {a} [EOS]" for t, a in zip(data.texts, data.answers, strict=True)]
    ids, _ = encode_words(texts, data.vocab)
    index = {w: i for i, w in enumerate(data.vocab)}
    return {
        "ids": ids,
        "prompt_len": torch.as_tensor([len(w) + 1 for w in data.words]),
        "answer": torch.as_tensor([index[a] for a in data.answers]),
    }


def _answer_plus_lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer token plus 0.1 x the full next-token loss (``y`` = ids | prompt_len)."""
    ids, plen = y[:, :-1], y[:, -1]
    rows = torch.arange(ids.shape[0], device=ids.device)
    answer = nn.functional.cross_entropy(logits[rows, plen - 1], ids[rows, plen])
    return answer + 0.1 * next_token_loss(logits, ids)


def train_ioi_gpt2_4l(
    seed: int,
    *,
    n_train: int = 6400,
    n_test: int = 1000,
    epochs: int = 60,
    weight_decay: float = 0.1,
    show_progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The RelP spec's model: a 4-layer, 4-head, d=64, d_mlp=256 ``gelu_new`` GPT-2 trained on IOI
    prompts of seen name pairs (answer loss + 0.1 x next-token loss, AdamW 3e-3, batch 128); metric:
    greedy answer accuracy on held-out name pairs. The spec's 1,500 steps without weight decay reached
    0.875 on held-out pairs (0.987 on seen ones: it memorised pairs); 60 epochs = 3,000 steps with weight
    decay 0.1 reach 1.0."""
    train = _lm_items(ioi_pair_items(n_train, seed=seed, held_out=False))
    test = _lm_items(ioi_pair_items(n_test, seed=seed + 10_000, held_out=True))
    model = _gpt2_4l(len(ioi_vocab()), seed=seed)
    y = torch.cat([train["ids"], train["prompt_len"][:, None]], 1)
    hist = fit(
        model, (train["ids"], y), epochs=epochs, lr=3e-3, batch_size=128, loss_fn=_answer_plus_lm_loss, seed=seed,
        show_progress=show_progress, grad_clip=1.0, weight_decay=weight_decay,
    )  # fmt: skip
    model.eval()
    metrics = {"held_out_pair_accuracy": round(answer_accuracy(model, test), 4), "n_train": n_train}
    return model, {**metrics, "steps": hist.steps, "train_s": round(hist.wall_s, 1)}


zoo.register(
    "ioi_gpt2_4l",
    config=hf_arch_config(_gpt2_4l(_V)),
    train=train_ioi_gpt2_4l,
    description="4-layer GPT-2 (d=64, d_mlp=256, gelu_new) on IOI, answer + 0.1 LM loss, held-out name pairs (RelP)",
    tokenizer=ioi_tokenizer,
)
