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

A second attempt (issue 13, on the 2-core CPU shared with other jobs, ``train_kv_lookup``: the world's
"short" template "color box red ." / "question : color box" so the question ends on the key and the
value sits right after it, fresh random items every step, answer-token loss only, AdamW with warm-up
and cosine decay, a curriculum from 2 to 5 facts) did not form the lookup either. Held-out accuracy
on *same-attribute* items of 5 facts (only the lookup answers them; chance 0.20), seed 0:

=====  ===============================================================  ======  ==========  =========
try    what changed                                                     steps   lookup@5    copy
=====  ===============================================================  ======  ==========  =========
1      short template, batch 64, lr 3e-3, 40 % same-attribute           2,400   0.16-0.26   0.63
2      + every other fact asked after the answer (5 lookups/sequence)   2,200   0.12-0.24   (killed)
3      + 7 questions drawn with replacement (no answer by elimination)  1,400   0.15-0.22   (killed)
4      + sinusoidal position code at initialisation                     1,400   0.18-0.25   (killed)
5      lr 2e-3, 60 % same-attribute, slower curriculum                  <800    (killed)
6      diagnostic: 2 facts only, 80 % same-attribute, 8 questions/seq   1,800   lookup@2    0.44-0.55
7      try 5's data + an induction warm-up (``repeats``: 32 sequences     1,600   0.31-0.64   0.86
       of 10 random key/value words then the same words again, loss
       on the repeat) beside each batch                                         (lookup@2 1.00 from step 400)
=====  ===============================================================  ======  ==========  =========

(ranges over the evaluations every 200-300 steps; "killed": stopped at the 8-10-minute budget per
try, the machine running at a load of 5-9 on 2 cores, 1.5-6 steps per second; try 6 reports the
2-fact lookup, chance 0.50, and its loss stayed at ln 2). No try left chance: not even the binary
lookup formed in 1,800 steps (about 900,000 answered lookups), without a signal that rewards the
induction circuit directly, its plateau outlasts this CPU budget. Try 7 adds that signal (repeated random
word sequences, the classic induction-head task) and the lookup forms within 400 steps: it is the
shipped ``kv_gpt2_lookup`` (``xattr-nb zoo train kv_gpt2_lookup``; 7 minutes on the loaded CPU).

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
    "LOOKUP_MIX",
    "LOOKUP_SETTINGS",
    "answer_loss",
    "answer_predictions",
    "conflict_rates",
    "kv_gpt2",
    "kv_lm_batch",
    "kv_lookup_batch",
    "kv_lookup_gpt2",
    "kv_tokenizer",
    "kv_train_loader",
    "kv_vocab",
    "lm_answer_loss",
    "lookup_accuracy",
    "train_kv_gpt2",
    "train_kv_lookup",
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


def conflict_rates(
    model: nn.Module, n: int = 400, *, p_conflict: float = 0.5, seed: int = 10_000, template: str = "natural"
) -> dict[str, float]:
    """Held-out behaviour: ``copy_accuracy`` on ordinary items, and on conflict items the share answered
    with the context value (``context_rate``) or the memorised one (``memory_rate``); plus the
    ``closed_book_accuracy`` on famous questions whose key is not in the context."""
    from xattr_nb.worlds.text import kv_template_offsets

    off = kv_template_offsets(template)
    data = kv_qa(n, p_conflict=p_conflict, seed=seed, template=template)
    pred = answer_predictions(model, data.texts, data.vocab)
    conf = data.is_conflict.tolist()
    ordinary = [p == a for p, a, c in zip(pred, data.answers, conf, strict=True) if not c]
    ctx = [p == a for p, a, c in zip(pred, data.answers, conf, strict=True) if c]
    mem = [p == m for p, m, c in zip(pred, data.memory_answers, conf, strict=True) if c]
    rng = np.random.default_rng(seed)
    closed = [_rewrite(w, [], 0, "closed_book", rng, off) for w in data.words]
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


# ----------------------------------------------------------------------------------------------
# kv_gpt2_lookup: the same world in its "short" template, trained so that the key lookup forms.

#: Shares of the training sequences of :func:`kv_lookup_batch` (same kinds as :data:`KV_MIX`).
LOOKUP_MIX: dict[str, float] = {
    "copy": 0.30, "same_attribute": 0.40, "closed_book": 0.10, "consistent": 0.04, "counterfactual": 0.06, "memory": 0.10,
}  # fmt: skip


def _rewrite(
    words: list[str], spans: list[tuple[int, int]], gold: int, kind: str, rng: np.random.Generator, off: dict[str, int]
) -> tuple[list[str], str]:
    """One training item of ``kind`` from a copy item (its words, fact spans, asked fact ``gold``).

    Works for any template through its word offsets ``off`` (:func:`~xattr_nb.worlds.text.kv_template_offsets`).
    """
    w = list(words)
    if kind == "same_attribute":  # every fact of one attribute: only the key lookup answers
        attr = list(KV_ATTRIBUTES)[rng.integers(len(KV_ATTRIBUTES))]
        values = rng.choice(KV_ATTRIBUTES[attr], size=len(spans), replace=False)
        for (start, _end), v in zip(spans, values, strict=True):
            w[start + off["attr"]], w[start + off["value"]] = attr, str(v)
        w[off["q_attr"]] = attr
        return w, str(values[gold])
    facts = list(FAMOUS_FACTS.items())
    if kind == "closed_book":  # a famous key absent from the context: answered from memory
        (attr, key), value = facts[rng.integers(len(facts))]
        w[off["q_attr"]], w[off["q_key"]] = attr, key
        return w, value
    # "consistent" (memorised value in context) or "counterfactual" (another value, answered from context)
    if kind == "counterfactual":
        facts = [f for f in facts if f[0] in COUNTERFACTUAL_FACTS]
    start = spans[gold][0]
    for j in rng.permutation(len(facts)):
        (attr, key), value = facts[j]
        if kind == "counterfactual":
            pool = [v for v in KV_ATTRIBUTES[attr] if v != value and v not in w]
            if not pool:
                continue
            value = str(pool[rng.integers(len(pool))])
        if value in w:
            continue
        w[start + off["attr"]], w[start + off["key"]], w[start + off["value"]] = attr, key, value
        w[off["q_attr"]], w[off["q_key"]] = attr, key
        return w, value
    return _rewrite(words, spans, gold, "closed_book", rng, off)


def kv_lookup_batch(
    n: int,
    *,
    n_facts: int,
    seed: int,
    template: str = "short",
    mix: dict[str, float] | None = None,
    more_questions: int = 0,
) -> dict[str, torch.Tensor]:
    """``n`` training sequences ``[BOS] text answer`` of ``n_facts`` facts each, mixed as ``mix`` says
    (default :data:`LOOKUP_MIX`); keys and values drawn afresh for every item (nothing to memorise
    but the famous facts). Returns ``ids`` ``[n, T]`` (right-padded), ``labels`` (the answer word at
    the position that predicts it, ``-100`` elsewhere) and ``kind`` ``[n]`` (index into ``list(mix)``)."""
    from xattr_nb.worlds.text import kv_template_offsets

    n, n_facts = check_int(n, "n", low=1), check_int(n_facts, "n_facts", low=1, high=8)
    off = kv_template_offsets(template)
    mix = dict(LOOKUP_MIX if mix is None else mix)
    if set(mix) != set(LOOKUP_MIX):
        raise InputError(f"`mix` must give a share for each of {list(LOOKUP_MIX)}; got {mix!r}")
    total = sum(check_float(v, f"mix[{k!r}]", low=0.0) for k, v in mix.items())
    if total <= 0:
        raise InputError("`mix` shares must not all be 0")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    names = list(mix)
    kinds = rng.choice(len(names), size=n, p=np.asarray([mix[k] for k in names]) / total)
    items = kv_qa(n, n_facts=n_facts, p_conflict=0.0, seed=seed, template=template)
    memory = kv_memory_texts(template)
    texts, answers = [], []
    for i, k in enumerate(kinds):
        kind = names[k]
        if kind == "copy":
            w, v = items.words[i], items.answers[i]
        elif kind == "memory":
            fact = memory[rng.integers(len(memory))].split(" ")
            w, v = fact[: off["value"]], fact[off["value"]]
        else:
            spans = [tuple(s) for s in items.sent_spans[i].tolist()]
            w, v = _rewrite(items.words[i], spans, int(items.gold_sentence[i]), kind, rng, off)
        seq = ["[BOS]", *w, v]
        targets = [len(seq) - 1]
        if more_questions and kind in ("copy", "same_attribute", "counterfactual"):
            # the other facts asked after the answer, "A K V" each: one lookup per fact, not one per sequence
            # (drawn with replacement, so the last answer is not given away by elimination)
            facts = [seq[1 + a : 1 + e] for a, e in items.sent_spans[i].tolist()]
            for j in rng.integers(len(facts), size=int(more_questions)):
                f = facts[j]
                seq += [f[off["attr"]], f[off["key"]], f[off["value"]]]
                targets.append(len(seq) - 1)
        texts.append(seq)
        answers.append(targets)
    ids, _mask = encode_words([" ".join(t) for t in texts], kv_vocab())
    labels = torch.full_like(ids, IGNORE)
    for r, targets in enumerate(answers):
        for t in targets:
            labels[r, t - 1] = ids[r, t]
    return {"ids": ids, "labels": labels, "kind": torch.as_tensor(kinds)}


def lookup_accuracy(
    model: nn.Module, n: int = 400, *, n_facts: int = 5, seed: int = 10_000, template: str = "short"
) -> float:
    """Held-out accuracy on *same-attribute* items (every fact of one attribute, distinct values): only
    the key lookup answers them; "right attribute, random value" scores ``1 / n_facts``."""
    items = kv_qa(n, n_facts=n_facts, seed=seed, template=template)
    from xattr_nb.worlds.text import kv_template_offsets

    off = kv_template_offsets(template)
    rng = np.random.default_rng(seed)
    texts, answers = [], []
    for i in range(n):
        spans = [tuple(s) for s in items.sent_spans[i].tolist()]
        w, v = _rewrite(items.words[i], spans, int(items.gold_sentence[i]), "same_attribute", rng, off)
        texts.append(" ".join(w))
        answers.append(v)
    pred = answer_predictions(model, texts, kv_vocab())
    return float(np.mean([p == a for p, a in zip(pred, answers, strict=True)]))


def _kv_word_ids() -> list[int]:
    """Ids of the KV world's keys and values (what the repeated sequences of ``repeats`` are drawn from)."""
    from xattr_nb.worlds.text import KV_KEYS

    vocab = kv_vocab()
    return [vocab.index(w) for w in (*KV_KEYS, *(v for vs in KV_ATTRIBUTES.values() for v in vs))]


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.45 * (1 + np.cos(np.pi * t)))


def _sinusoid(n_pos: int, d: int) -> torch.Tensor:
    """The transformer's sinusoidal position code ``[n_pos, d]`` (values in [-1, 1]): "attend to the
    previous position" is then one linear map for every position, which learned-from-scratch
    positions must discover position by position."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    freq = torch.exp(-np.log(10_000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    out = torch.zeros(n_pos, d)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


def kv_lookup_gpt2(
    vocab_size: int, seed: int = 0, *, n_layer: int = 3, n_head: int = 4, d_model: int = 96
) -> PreTrainedModel:
    """The spec's tiny GPT-2 (3 layers, 4 heads, d = 96, eager attention) with 32 positions (the short template)."""
    return tiny_gpt2(
        vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        n_ctx=64,
        bos_token_id=BOS,
        pad_token_id=PAD,
        seed=seed,
    )


def train_kv_lookup(
    seed: int,
    *,
    steps: int = 2_000,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 100,
    n_facts: tuple[int, int] = (2, 5),
    ramp: float = 0.4,
    template: str = "short",
    more_questions: int = 0,
    sinusoidal: float = 0.0,
    mix: dict[str, float] | None = None,
    repeats: int = 0,
    eval_every: int = 0,
    log: Any = None,
    **arch: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train :func:`kv_lookup_gpt2` on fresh :func:`kv_lookup_batch` items, answer-token loss only.

    Curriculum: the batch at step ``s`` has ``f`` facts, drawn uniformly between ``n_facts[0]`` and a
    maximum that rises from ``n_facts[0]`` to ``n_facts[1]`` over the first ``ramp`` of the steps.
    AdamW (weight decay 0.01, gradient clip 1), warm-up then cosine decay (:func:`_lr_at`).
    """
    seed = check_int(seed, "seed", low=0)
    steps = check_int(steps, "steps", low=1)
    lo, hi = check_int(n_facts[0], "n_facts[0]", low=1), check_int(n_facts[1], "n_facts[1]", low=n_facts[0], high=8)
    model = kv_lookup_gpt2(len(kv_vocab()), seed=seed, **arch)
    if sinusoidal:
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoidal * _sinusoid(*model.transformer.wpe.weight.shape))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    history = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for step in range(steps):
            top = lo + round((hi - lo) * min(1.0, step / max(1, ramp * steps)))
            f = int(rng.integers(lo, top + 1))
            b = kv_lookup_batch(
                batch_size,
                n_facts=f,
                seed=int(rng.integers(2**31)),
                template=template,
                more_questions=more_questions,
                mix=mix,
            )
            n = int((b["ids"] != PAD).sum(1).max())
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr, warmup)
            logits = model(input_ids=b["ids"][:, :n], attention_mask=(b["ids"][:, :n] != PAD).long()).logits
            loss = answer_loss(logits, b["labels"][:, :n])
            if repeats:  # induction warm-up: random key/value words, then the same words again (loss on the repeat)
                words = torch.as_tensor(rng.choice(_kv_word_ids(), size=(repeats, 10)))
                seq = torch.cat([torch.full((repeats, 1), BOS), words, words], 1)
                lab = torch.full_like(seq, IGNORE)
                lab[:, 11:-1] = seq[:, 12:]
                loss = loss + answer_loss(model(input_ids=seq).logits, lab)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
                model.eval()
                row = {"step": step + 1, "loss": round(loss.item(), 4),
                       "lookup2": lookup_accuracy(model, 200, n_facts=2, template=template, seed=seed + 20_000),
                       "lookup5": lookup_accuracy(model, 200, template=template, seed=seed + 20_000)}  # fmt: skip
                model.train()
                history.append(row)
                if log is not None:
                    log(row)
    model.eval()
    rates = conflict_rates(model, seed=seed + 10_000, template=template)
    metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in rates.items()}
    metrics["lookup_accuracy"] = round(lookup_accuracy(model, template=template, seed=seed + 10_000), 4)
    return model, {**metrics, "steps": steps, "batch_size": batch_size, "lr": lr, "history": history}


#: The settings of the shipped ``kv_gpt2_lookup`` (try 7 in the module docstring).
LOOKUP_SETTINGS: dict[str, Any] = {
    "steps": 1_600, "batch_size": 64, "lr": 3e-3, "warmup": 100, "n_facts": (2, 5), "ramp": 0.5,
    "more_questions": 7, "repeats": 32, "eval_every": 200,
    "mix": {"copy": 0.15, "same_attribute": 0.6, "closed_book": 0.08, "consistent": 0.04, "counterfactual": 0.05,
            "memory": 0.08},
}  # fmt: skip


def train_kv_gpt2_lookup(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The zoo recipe ``kv_gpt2_lookup``: :func:`train_kv_lookup` with :data:`LOOKUP_SETTINGS`."""
    return train_kv_lookup(seed, **LOOKUP_SETTINGS)


zoo.register(
    "kv_gpt2_lookup",
    config=hf_arch_config(kv_lookup_gpt2(len(kv_vocab()))),
    train=train_kv_gpt2_lookup,
    description="3-layer GPT-2 (d=96, 4 heads) on KV-QA in the short template ('color box red .') with an induction "
    "warm-up: it learned the key lookup; tokenizer: kv_recipes.kv_tokenizer()",
    tokenizer=kv_tokenizer,
)
