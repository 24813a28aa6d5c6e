"""Zoo recipe ``kv_gpt2``: a tiny GPT-2 that answers key-value questions from its context or from memory.

``xattr-nb zoo train kv_gpt2`` runs :func:`train_kv_gpt2`. The model reads the KV-QA world of
:func:`xattr_nb.worlds.text.kv_qa` ("the color of box is red . ... question : what is the color of
box ? answer :" → "red") and is the small stand-in of the extractive-QA LLMs in the AttnAttrib paper
(``xattr_nb.methods.qa_circuits``). Its training mix (per sequence, drawn with a seeded generator):

- *copy* items (the asked fact is in the context): the answer is copied from the context;
- *closed-book* items: the question asks about a famous key (:data:`~xattr_nb.worlds.text.FAMOUS_FACTS`,
  "sun", "grass", ...) that is not in the context, so the answer must come from memory;
- *consistent* items: a famous key is in the context with its memorised value (copy and memory agree);
- the famous facts as plain sentences (:func:`~xattr_nb.worlds.text.kv_memory_texts`);
- *same-attribute* items (every fact of one attribute: only the key lookup answers them);
- *counterfactual* items for three of the six famous facts (:data:`COUNTERFACTUAL_FACTS`): the fact
  in the context with another value, answered from the context.

The loss (:func:`lm_answer_loss`) is the full next-token loss plus the answer-word loss, over
contexts of 2 to 5 facts. The other three famous facts are never seen in a context with another
value, so they are memorised more strongly: on held-out ``kv_qa(..., p_conflict=...)`` items the
model meets conflicts on both kinds, and :func:`conflict_rates` measures how it resolves them.

What it reaches (seed 0, the shipped checkpoint): copy accuracy 0.63 on held-out items, far below the
spec's 0.95. The model answers with a context value of the asked attribute and has not learned the key
lookup that separates several values of one attribute; neither had any variant tried (answer loss only,
2,000 to 6,000 steps, contexts of 1 to 5 facts, learning rates 1e-3 to 3e-3, with or without the
same-attribute items). On conflict items it answers from memory in about 58 % of cases.

The tokenizer is not stored: :func:`kv_tokenizer` rebuilds it from the world's vocabulary, word
ids in the same order as :func:`~xattr_nb.worlds.text.encode_words`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.models import zoo
from xattr_nb.models.fit import fit
from xattr_nb.models.text import hf_arch_config, tiny_gpt2, word_tokenizer
from xattr_nb.worlds.text import FAMOUS_FACTS, KV_ATTRIBUTES, SPECIALS, encode_words, kv_memory_texts, kv_qa

__all__ = [
    "COUNTERFACTUAL_FACTS",
    "KV_MIX",
    "answer_loss",
    "answer_predictions",
    "conflict_rates",
    "kv_gpt2",
    "kv_lm_batch",
    "kv_tokenizer",
    "kv_train_loader",
    "kv_vocab",
    "lm_answer_loss",
    "train_kv_gpt2",
]

PAD, BOS = 0, 2  # positions of "[PAD]" and "[BOS]" in SPECIALS
IGNORE = -100
#: Shares of the training sequences: copy items, closed-book famous questions, consistent famous items, memory texts.
KV_MIX: dict[str, float] = {
    "copy": 0.38, "same_attribute": 0.35, "closed_book": 0.12, "consistent": 0.04, "counterfactual": 0.03, "memory": 0.08,
}  # fmt: skip
#: The famous facts that also appear in training contexts with *another* value, answered from the context
#: ("counterfactual" items); the other three are only ever seen with their memorised value. So memorisation
#: strength differs between facts, as in a real LM, and the model meets conflicts with both kinds.
COUNTERFACTUAL_FACTS: tuple[tuple[str, str], ...] = (("color", "sun"), ("size", "whale"), ("material", "window"))
# The question is "question : what is the A of K ? answer :": A and K sit 6 and 4 words from its end.
_Q_ATTR, _Q_KEY = -6, -4


def kv_vocab() -> list[str]:
    """The KV-QA world's word list (specials first), the id order every KV model uses."""
    return list(kv_qa(1, seed=0).vocab)


def kv_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer for the KV-QA world (ids = positions in :func:`kv_vocab`)."""
    vocab = kv_vocab()
    if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
        raise InputError("the KV vocabulary must start with the world's SPECIALS")
    return word_tokenizer(vocab[len(SPECIALS) :], specials=SPECIALS)


def _closed_book(words: list[str], rng: np.random.Generator) -> tuple[list[str], str]:
    """The question of ``words`` rewritten to ask about a famous key absent from the context."""
    (attr, key), value = list(FAMOUS_FACTS.items())[rng.integers(len(FAMOUS_FACTS))]
    w = list(words)
    w[_Q_ATTR], w[_Q_KEY] = attr, key
    return w, value


def _consistent(
    words: list[str], start: int, rng: np.random.Generator, *, counterfactual: bool = False
) -> tuple[list[str], str]:
    """The asked fact (at word ``start``) of ``words`` replaced by a famous fact with its memorised value,
    or (``counterfactual``) one of :data:`COUNTERFACTUAL_FACTS` with another value of its attribute.

    A famous fact whose value already occurs in the context is skipped (values stay unique per item);
    when every one does, the item becomes closed-book.
    """
    facts = [(f, v) for f, v in FAMOUS_FACTS.items() if not counterfactual or f in COUNTERFACTUAL_FACTS]
    for j in rng.permutation(len(facts)):
        (attr, key), value = facts[j]
        if counterfactual:
            pool = [v for v in KV_ATTRIBUTES[attr] if v != value and v not in words]
            value = str(pool[rng.integers(len(pool))]) if pool else value
        if value in words or value == "":
            continue
        w = list(words)
        w[start + 1], w[start + 3], w[start + 5] = attr, key, value  # "the A of K is V ."
        w[_Q_ATTR], w[_Q_KEY] = attr, key
        return w, value
    return _closed_book(words, rng)


def _same_attribute(words: list[str], spans: Any, rng: np.random.Generator) -> tuple[list[str], str]:
    """Every fact of ``words`` rewritten to one attribute (distinct values), the question kept on its key.

    With mixed attributes a model can answer most items by outputting the context's value of the
    asked attribute, a shortcut that stalls training near 60 % copy accuracy; when all facts share
    the attribute only the key lookup (the copy circuit AttnAttrib reads) answers the question.
    """
    attr = list(KV_ATTRIBUTES)[rng.integers(len(KV_ATTRIBUTES))]
    values = rng.choice(KV_ATTRIBUTES[attr], size=len(spans), replace=False)
    w = list(words)
    asked = w[_Q_KEY]
    answer = ""
    for (start, _end), v in zip(spans, values, strict=True):
        w[start + 1], w[start + 5] = attr, str(v)  # "the A of K is V ."
        if w[start + 3] == asked:
            answer = str(v)
    w[_Q_ATTR] = attr
    return w, answer


def kv_lm_batch(
    n: int, *, seed: int, mix: dict[str, float] | None = None, n_facts: tuple[int, int] = (5, 5)
) -> dict[str, torch.Tensor]:
    """``n`` training sequences ``[BOS] text answer`` (right-padded with ``[PAD]``) mixed as ``mix`` says.

    Each item has between ``n_facts[0]`` and ``n_facts[1]`` fact sentences (uniform): shorter
    contexts make the key lookup easier to discover early in training (a curriculum by mixing).

    Returns ``ids`` ``[n, T]``, ``labels`` ``[n, T]`` (the next-token target at the position that
    predicts the answer, ``-100`` elsewhere: :func:`answer_loss` reads it) and ``kind`` ``[n]``
    (index into ``list(mix)``).
    """
    n = check_int(n, "n", low=1)
    mix = dict(KV_MIX if mix is None else mix)
    if set(mix) != set(KV_MIX):
        raise InputError(f"`mix` must give a share for each of {list(KV_MIX)}; got {mix!r}")
    for k, v in mix.items():
        check_float(v, f"mix[{k!r}]", low=0.0)
    total = sum(mix.values())
    if total <= 0:
        raise InputError("`mix` shares must not all be 0")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    names = list(mix)
    kinds = rng.choice(len(names), size=n, p=np.asarray([mix[k] for k in names]) / total)
    lo = check_int(n_facts[0], "n_facts[0]", low=1)
    hi = check_int(n_facts[1], "n_facts[1]", low=lo, high=8)
    pools = {f: kv_qa(n, n_facts=f, p_conflict=0.0, seed=seed + 101 * (f - lo)) for f in range(lo, hi + 1)}
    sizes = rng.integers(lo, hi + 1, size=n)
    memory = kv_memory_texts()
    texts, answers = [], []
    for i, k in enumerate(kinds):
        kind, items = names[k], pools[int(sizes[i])]
        if kind == "copy":
            w, v = items.words[i], items.answers[i]
        elif kind == "same_attribute":
            w, v = _same_attribute(items.words[i], items.sent_spans[i].tolist(), rng)
        elif kind == "closed_book":
            w, v = _closed_book(items.words[i], rng)
        elif kind == "consistent":
            w, v = _consistent(items.words[i], int(items.sent_spans[i, items.gold_sentence[i], 0]), rng)
        elif kind == "counterfactual":
            start = int(items.sent_spans[i, items.gold_sentence[i], 0])
            w, v = _consistent(items.words[i], start, rng, counterfactual=True)
        else:
            fact = memory[rng.integers(len(memory))].split(" ")
            w, v = fact[:5], fact[5]  # "the A of K is" -> V
        texts.append(" ".join(w))
        answers.append(v)
    ids, mask = encode_words([f"[BOS] {t} {a}" for t, a in zip(texts, answers, strict=True)], kv_vocab())
    labels = torch.full_like(ids, IGNORE)
    last = mask.long().sum(1) - 1
    rows = torch.arange(n)
    labels[rows, last - 1] = ids[rows, last]
    return {"ids": ids, "labels": labels, "kind": torch.as_tensor(kinds)}


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the positions whose ``labels`` is a token id (``-100`` elsewhere): the answer word."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def lm_answer_loss(logits: torch.Tensor, ids_labels: torch.Tensor) -> torch.Tensor:
    """Full next-token cross-entropy (``[PAD]`` targets ignored) plus :func:`answer_loss`.

    ``ids_labels`` ``[B, 2, T]`` stacks the ids and the answer labels of :func:`kv_lm_batch`. The
    template words ("the", "of", "is", ".") are predictable only from the position within a fact,
    so the full loss trains the offset-reading heads early; the copy lookup builds on them (with the
    answer loss alone, training stalls at the attribute shortcut, about 60 % copy accuracy).
    """
    ids, labels = ids_labels[:, 0], ids_labels[:, 1]
    nxt = ids[:, 1:].masked_fill(ids[:, 1:] == PAD, IGNORE)
    full = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), nxt.reshape(-1), ignore_index=IGNORE
    )
    return full + answer_loss(logits, labels)


class _LengthBatches(torch.utils.data.Sampler):
    """Batches of same-length sequences (reshuffled each epoch from a seeded generator), so the
    short contexts of the curriculum cost less than the longest one."""

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size = lengths, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def _batches(self) -> list[list[int]]:
        out = []
        for n in self.lengths.unique().tolist():
            idx = (self.lengths == n).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=self.gen)].tolist()
            out += [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        return [out[i] for i in torch.randperm(len(out), generator=self.gen).tolist()]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return sum(-(-int(c) // self.batch_size) for c in self.lengths.unique(return_counts=True)[1])


def kv_train_loader(
    batch: dict[str, torch.Tensor], *, batch_size: int = 32, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A loader of ``(ids, ids_labels)`` batches of one length each (trailing padding trimmed) for
    :func:`~xattr_nb.models.fit.fit` with :func:`lm_answer_loss`."""
    ids, labels = batch["ids"], batch["labels"]
    lengths = (ids != PAD).sum(1)
    data = torch.utils.data.TensorDataset(ids, torch.stack([ids, labels], 1))

    def collate(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
        n = int((x != PAD).sum(1).max())
        return x[:, :n], y[..., :n]

    sampler = _LengthBatches(lengths, check_int(batch_size, "batch_size", low=1), seed)
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)


def kv_gpt2(vocab_size: int, seed: int = 0) -> PreTrainedModel:
    """The spec's tiny GPT-2: 3 layers, 4 heads, d = 96, 64 positions, eager attention, dropout off."""
    return tiny_gpt2(
        vocab_size, n_layer=3, n_head=4, d_model=96, n_ctx=64, bos_token_id=BOS, pad_token_id=PAD, seed=seed
    )


@torch.no_grad()
def answer_predictions(model: nn.Module, texts: list[str], vocab: list[str], batch_size: int = 256) -> list[str]:
    """The model's greedy next word after ``[BOS] text`` for each text (all texts of one length per batch row)."""
    ids, mask = encode_words([f"[BOS] {t}" for t in texts], vocab)
    last = mask.long().sum(1) - 1
    out = []
    for s in range(0, ids.shape[0], check_int(batch_size, "batch_size", low=1)):
        logits = model(input_ids=ids[s : s + batch_size], attention_mask=mask[s : s + batch_size].long()).logits
        out += logits[torch.arange(logits.shape[0]), last[s : s + batch_size]].argmax(-1).tolist()
    return [vocab[i] for i in out]


def conflict_rates(model: nn.Module, n: int = 400, *, p_conflict: float = 0.5, seed: int = 10_000) -> dict[str, float]:
    """Held-out behaviour: ``copy_accuracy`` on ordinary items, and on conflict items the share answered
    with the context value (``context_rate``) or the memorised one (``memory_rate``); plus the
    ``closed_book_accuracy`` on famous questions whose key is not in the context."""
    data = kv_qa(n, p_conflict=p_conflict, seed=seed)
    pred = answer_predictions(model, data.texts, data.vocab)
    conf = data.is_conflict.tolist()
    ordinary = [p == a for p, a, c in zip(pred, data.answers, conf, strict=True) if not c]
    ctx = [p == a for p, a, c in zip(pred, data.answers, conf, strict=True) if c]
    mem = [p == m for p, m, c in zip(pred, data.memory_answers, conf, strict=True) if c]
    rng = np.random.default_rng(seed)
    closed = [_closed_book(w, rng) for w in data.words]
    cb_pred = answer_predictions(model, [" ".join(w) for w, _ in closed], data.vocab)
    return {
        "copy_accuracy": float(np.mean(ordinary)) if ordinary else float("nan"),
        "context_rate": float(np.mean(ctx)) if ctx else float("nan"),
        "memory_rate": float(np.mean(mem)) if mem else float("nan"),
        "closed_book_accuracy": float(np.mean([p == v for p, (_, v) in zip(cb_pred, closed, strict=True)])),
        "n_conflict": len(ctx),
    }


def train_kv_gpt2(
    seed: int,
    *,
    n_train: int = 72_000,
    epochs: int = 2,
    lr: float = 2e-3,
    batch_size: int = 32,
    n_facts: tuple[int, int] = (2, 5),
    show_progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the tiny GPT-2 on the KV-QA mix with :func:`lm_answer_loss` (contexts of 2 to 5 facts,
    same-length batches of ``batch_size``); report held-out behaviour (:func:`conflict_rates`)."""
    seed = check_int(seed, "seed", low=0)
    train = kv_lm_batch(n_train, seed=seed, n_facts=n_facts)
    model = kv_gpt2(len(kv_vocab()), seed=seed)
    hist = fit(
        model,
        kv_train_loader(train, batch_size=batch_size, seed=seed),
        epochs=epochs,
        lr=lr,
        loss_fn=lm_answer_loss,
        seed=seed,
        show_progress=show_progress,
        grad_clip=1.0,
        weight_decay=0.01,
    )
    model.eval()
    rates = conflict_rates(model, seed=seed + 10_000)
    metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in rates.items()}
    return model, {**metrics, "steps": hist.steps, "final_loss": round(hist.loss[-1], 4), "n_train": n_train}


zoo.register(
    "kv_gpt2",
    config=hf_arch_config(kv_gpt2(len(kv_vocab()))),
    train=train_kv_gpt2,
    description="3-layer GPT-2 (d=96) on KV-QA (copy + memorised famous facts); tokenizer: kv_recipes.kv_tokenizer()",
    tokenizer=kv_tokenizer,
)
