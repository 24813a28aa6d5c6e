"""Templated text tasks whose evidence is known word by word.

Every text is lower-case words separated by single spaces, so a word-level tokenizer built from
``task.vocab`` and a WordPiece tokenizer (MiniLM) both read it. The gold evidence is given twice:
as word indices (``gold_words[i]``, for word-level models) and as character spans
(``gold_chars[i]``, ``(start, end)`` with ``text[start:end]`` the word), which
:func:`gold_token_mask` maps onto any tokenizer's tokens through ``return_offsets_mapping``.

Tasks (all seeded, deterministic per seed):

- :func:`ioi`: indirect-object identification, "when mary and john went to the store , john
  gave a drink to" → "mary"; gold = the indirect object's first mention; with a corrupted
  counterpart for activation patching.
- :func:`kv_qa`: extractive key-value QA over fact sentences; gold = the answer value and its
  fact sentence; optional knowledge-conflict items against memorised "famous" facts.
- :func:`topics`: topic classification with confusable class pairs; gold = the class's
  discriminative words (shared pair words and fillers are not evidence).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int, check_int_range, check_numeric
from xattr_nb.worlds.base import WorldData, check_n, check_names, check_seed

__all__ = [
    "FAMOUS_FACTS",
    "IOI_NAMES",
    "IOI_TEMPLATES",
    "KV_ATTRIBUTES",
    "KV_KEYS",
    "KV_TEMPLATES",
    "SPECIALS",
    "TOPIC_PAIRS",
    "IOIData",
    "KVData",
    "TextData",
    "TopicData",
    "encode_words",
    "gold_token_mask",
    "ioi",
    "join_words",
    "kv_memory_texts",
    "kv_qa",
    "kv_template_offsets",
    "topics",
    "word_char_spans",
    "world_vocab",
]

SPECIALS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")


# ----------------------------------------------------------------------------------------------
# Spans and tokens.


def word_char_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character span of each single-space-separated word of ``text``."""
    if not isinstance(text, str):
        raise InputError(f"`text` must be a str; got {type(text).__name__}")
    spans, pos = [], 0
    for w in text.split(" "):
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return spans


def gold_token_mask(offsets: Any, char_spans: Any) -> torch.Tensor:
    """Which tokens overlap the gold character spans.

    ``offsets``: a tokenizer's ``offset_mapping`` (``return_offsets_mapping=True``), ``[T, 2]`` for
    one text or ``[B, T, 2]`` for a batch (tensor, array or nested lists). ``char_spans``: a list of
    ``(start, end)`` pairs, or one such list per text for a batch. A token is gold when its
    character range is non-empty and intersects a span; special and padding tokens have empty
    ranges ``(0, 0)`` and are never gold. Returns a bool tensor ``[T]`` or ``[B, T]``.
    """
    off = check_numeric(offsets, "offsets", ndim=(2, 3), dtype="int", layout="[T, 2] or [B, T, 2]")
    if off.shape[-1] != 2:
        raise InputError(f"`offsets` must end in a dimension of 2 (start, end); got shape {tuple(off.shape)}")
    single = off.ndim == 2
    spans_b = [char_spans] if single else char_spans
    if not isinstance(spans_b, Sequence) or len(spans_b) != (1 if single else off.shape[0]):
        raise InputError(f"`char_spans` must hold one list of (start, end) per text; got {char_spans!r}")
    off_b = off[None] if single else off
    out = torch.zeros(off_b.shape[:2], dtype=torch.bool)
    for b, spans in enumerate(spans_b):
        start, end = off_b[b, :, 0], off_b[b, :, 1]
        for sp in spans:
            if len(sp) != 2 or int(sp[0]) >= int(sp[1]):
                raise InputError(f"`char_spans` entries must be (start, end) with start < end; got {sp!r}")
            out[b] |= (end > start) & (start < int(sp[1])) & (end > int(sp[0]))
    return out[0] if single else out


def encode_words(
    texts: Sequence[str], vocab: Sequence[str], *, pad: str = "[PAD]"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-level ids ``[N, T]`` (right-padded with ``pad``) and attention mask ``[N, T]`` bool.

    Every word must be in ``vocab`` (no silent ``[UNK]``): build the vocabulary from ``task.vocab``.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise InputError("`texts` must be a non-empty list of strings")
    if not all(isinstance(t, str) for t in texts):
        raise InputError("`texts` must be a non-empty list of strings")
    if isinstance(vocab, str) or not isinstance(vocab, Sequence) or not all(isinstance(w, str) for w in vocab):
        raise InputError(f"`vocab` must be a list of words; got {type(vocab).__name__}")
    index = {w: i for i, w in enumerate(vocab)}
    if pad not in index:
        raise InputError(f"`pad` token {pad!r} is not in `vocab`")
    rows = []
    for i, t in enumerate(texts):
        ws = t.split(" ")
        miss = [w for w in ws if w not in index]
        if miss:
            raise InputError(f"`texts[{i}]` has words not in `vocab`: {miss[:5]}")
        rows.append([index[w] for w in ws])
    t_max = max(len(r) for r in rows)
    ids = torch.full((len(rows), t_max), index[pad], dtype=torch.long)
    mask = torch.zeros((len(rows), t_max), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def world_vocab(*pools: Any) -> list[str]:
    """A world's word list: :data:`SPECIALS`, then every word of the ``pools`` (strings or templates split
    on spaces, ``{slot}`` placeholders skipped), deduplicated and sorted."""
    words: list[str] = []
    seen = set(SPECIALS)
    for pool in pools:
        for item in pool:
            for w in str(item).split():
                if w.startswith("{") or w in seen:
                    continue
                seen.add(w)
                words.append(w)
    return [*SPECIALS, *sorted(words)]


@dataclasses.dataclass
class TextData(WorldData):
    """Fields every text task has: ``texts``, their ``words``, gold evidence as word indices
    (``gold_words``) and character spans (``gold_chars``), and the task's full word ``vocab``
    (specials first, then every word the generator can emit, sorted)."""

    texts: list[str]
    words: list[list[str]]
    gold_words: list[list[int]]
    gold_chars: list[list[tuple[int, int]]]
    vocab: list[str]
    _items: ClassVar[tuple[str, ...]] = ("texts", "words", "gold_words", "gold_chars")


def join_words(words: list[list[str]], gold: list[list[int]]) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Texts (each row's ``words`` joined by spaces) and the character spans of the gold word indices ``gold``."""
    if not isinstance(words, (list, tuple)) or not all(
        isinstance(w, (list, tuple)) and all(isinstance(x, str) for x in w) for w in words
    ):
        raise InputError("`words` must be a list of word lists (strings)")
    if not isinstance(gold, (list, tuple)) or len(gold) != len(words):
        raise InputError(f"`gold` must hold one list of word indices per row of `words` ({len(words)})")
    texts = [" ".join(w) for w in words]
    chars = []
    for t, g in zip(texts, gold, strict=True):
        spans = word_char_spans(t)
        chars.append([spans[j] for j in g])
    return texts, chars


# ----------------------------------------------------------------------------------------------
# IOI.

IOI_NAMES: tuple[str, ...] = (
    "mary", "john", "tom", "james", "anna", "paul", "sarah", "mark",
    "emma", "david", "lisa", "peter", "kate", "simon", "laura", "george",
)  # fmt: skip
IOI_PLACES: tuple[str, ...] = ("store", "park", "school", "garden", "office", "station")
IOI_OBJECTS: tuple[str, ...] = ("drink", "book", "ball", "gift", "key", "letter")
#: {X} and {Y} are the first two names (IO/S order set by the form), {S} the repeated subject.
IOI_TEMPLATES: tuple[str, ...] = (
    "when {X} and {Y} went to the {place} , {S} gave a {obj} to",
    "after {X} and {Y} went to the {place} , {S} gave a {obj} to",
    "then , {X} and {Y} had a long day at the {place} . {S} gave a {obj} to",
    "while {X} and {Y} were working at the {place} , {S} handed a {obj} to",
)


@dataclasses.dataclass
class IOIData(TextData):
    """IOI prompts. ``answers`` = the indirect object (IO), ``wrong`` = the subject (S).

    Word positions ``[N]`` long: ``io_pos`` (IO's mention), ``s1_pos`` and ``s2_pos`` (S's two
    mentions), ``end_pos`` (the last word, where the answer is predicted). ``forms`` is "ABBA"
    (IO first) or "BABA" (S first). ``gold_words`` = ``[io_pos]``. ``corrupted_texts`` have the
    same length and positions; with ``corruption="swap"`` IO and S are exchanged everywhere, so
    the corrupted answer is the clean wrong name (``corrupted_answers``); with ``"abc"`` all
    names are replaced by three fresh ones and ``corrupted_answers`` is the new name at IO.
    """

    answers: list[str]
    wrong: list[str]
    io_pos: torch.Tensor
    s1_pos: torch.Tensor
    s2_pos: torch.Tensor
    end_pos: torch.Tensor
    forms: list[str]
    corrupted_texts: list[str]
    corrupted_answers: list[str]
    _items: ClassVar[tuple[str, ...]] = (
        *TextData._items, "answers", "wrong", "io_pos", "s1_pos", "s2_pos", "end_pos", "forms",
        "corrupted_texts", "corrupted_answers",
    )  # fmt: skip


def ioi(
    n: int,
    *,
    names: Sequence[str] = IOI_NAMES,
    forms: Sequence[str] = ("ABBA", "BABA"),
    corruption: str = "swap",
    seed: int = 0,
) -> IOIData:
    """``n`` IOI prompts; forms alternate (balanced), templates, names, places, objects uniform.

    ``names`` restricts the name pool (pass disjoint pools for held-out evaluation; at least 2,
    or 5 for ``corruption="abc"``).
    """
    n = check_n(n)
    names = check_names(names, IOI_NAMES, "names")
    forms = check_names(forms, ("ABBA", "BABA"), "forms")
    if corruption not in ("swap", "abc"):
        raise InputError(f"`corruption` must be 'swap' or 'abc'; got {corruption!r}")
    need = 5 if corruption == "abc" else 2
    if len(names) < need:
        raise InputError(f"`names` needs at least {need} names for corruption={corruption!r}; got {len(names)}")
    rng = np.random.default_rng(check_seed(seed))
    words, corr_words, gold, ans, wrong, fs, cans = [], [], [], [], [], [], []
    pos = {"io": [], "s1": [], "s2": [], "end": []}
    for i in range(n):
        form = forms[i % len(forms)]
        tmpl = IOI_TEMPLATES[rng.integers(len(IOI_TEMPLATES))]
        pick = rng.choice(len(names), size=need, replace=False)
        io, s = names[pick[0]], names[pick[1]]
        place, obj = IOI_PLACES[rng.integers(len(IOI_PLACES))], IOI_OBJECTS[rng.integers(len(IOI_OBJECTS))]
        x, y = (io, s) if form == "ABBA" else (s, io)
        toks = tmpl.split(" ")
        ix, iy, i_s = toks.index("{X}"), toks.index("{Y}"), toks.index("{S}")

        def fill(x_, y_, s_, toks=toks):
            rep = {"{X}": x_, "{Y}": y_, "{S}": s_, "{place}": place, "{obj}": obj}  # noqa: B023
            return [rep.get(t, t) for t in toks]

        w = fill(x, y, s)
        if corruption == "swap":
            swap = {io: s, s: io}
            cw = [swap.get(t, t) for t in w]
            cans.append(s)
        else:
            c_io, c_s = names[pick[2]], names[pick[3]]
            cx, cy = (c_io, c_s) if form == "ABBA" else (c_s, c_io)
            cw = fill(cx, cy, names[pick[4]])
            cans.append(c_io)
        words.append(w)
        corr_words.append(cw)
        p_io, p_s1 = (ix, iy) if form == "ABBA" else (iy, ix)
        pos["io"].append(p_io)
        pos["s1"].append(p_s1)
        pos["s2"].append(i_s)
        pos["end"].append(len(w) - 1)
        gold.append([p_io])
        ans.append(io)
        wrong.append(s)
        fs.append(form)
    texts, chars = join_words(words, gold)
    return IOIData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=world_vocab(IOI_TEMPLATES, IOI_NAMES, IOI_PLACES, IOI_OBJECTS),
        answers=ans,
        wrong=wrong,
        io_pos=torch.as_tensor(pos["io"]),
        s1_pos=torch.as_tensor(pos["s1"]),
        s2_pos=torch.as_tensor(pos["s2"]),
        end_pos=torch.as_tensor(pos["end"]),
        forms=fs,
        corrupted_texts=[" ".join(c) for c in corr_words],
        corrupted_answers=cans,
    )


# ----------------------------------------------------------------------------------------------
# Key-value QA.

KV_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown"),
    "size": ("big", "small", "tiny", "huge", "long", "short"),
    "material": ("wood", "metal", "glass", "paper", "stone", "plastic"),
    "weight": ("heavy", "light", "solid", "hollow", "dense", "soft"),
}
KV_KEYS: tuple[str, ...] = (
    "box",
    "lamp",
    "cup",
    "chair",
    "table",
    "door",
    "bag",
    "coin",
    "shoe",
    "hat",
    "pen",
    "clock",
)
#: Facts a model can memorise from :func:`kv_memory_texts`; conflict items contradict them.
FAMOUS_FACTS: dict[tuple[str, str], str] = {
    ("color", "sun"): "yellow",
    ("color", "grass"): "green",
    ("color", "snow"): "white",
    ("size", "whale"): "huge",
    ("size", "ant"): "tiny",
    ("material", "window"): "glass",
}
_FACT = "the {attr} of {key} is {value} ."
_QUESTION = "question : what is the {attr} of {key} ? answer :"
#: The KV-QA templates: (fact, question). ``"natural"`` (the default) reads "the color of box is red ."
#: and asks "question : what is the color of box ? answer :"; ``"short"`` writes each fact as
#: "color box red ." (the value right after its key) and asks "question : color box", so the question
#: ends on the key. Both use the same words (one vocabulary, one tokenizer).
KV_TEMPLATES: dict[str, tuple[str, str]] = {
    "natural": (_FACT, _QUESTION),
    "short": ("{attr} {key} {value} .", "question : {attr} {key}"),
}


def kv_template_offsets(template: str = "natural") -> dict[str, int]:
    """Word offsets of a KV-QA template: ``attr``/``key``/``value`` from a fact's first word, and
    ``q_attr``/``q_key`` from the end of the question (negative), e.g. natural: value 5, q_key -4."""
    if template not in KV_TEMPLATES:
        raise InputError(f"`template` must be one of {list(KV_TEMPLATES)}; got {template!r}")
    fact, question = (t.split(" ") for t in KV_TEMPLATES[template])
    q = len(question)
    return {
        "attr": fact.index("{attr}"), "key": fact.index("{key}"), "value": fact.index("{value}"),
        "q_attr": question.index("{attr}") - q, "q_key": question.index("{key}") - q, "fact_len": len(fact),
    }  # fmt: skip


def kv_memory_texts(template: str = "natural") -> list[str]:
    """The famous facts as context-free sentences, e.g. "the color of sun is yellow ."."""
    kv_template_offsets(template)
    fact = KV_TEMPLATES[template][0]
    return [fact.format(attr=a, key=k, value=v) for (a, k), v in FAMOUS_FACTS.items()]


@dataclasses.dataclass
class KVData(TextData):
    """Key-value QA items. ``answers`` = the queried value, the next word after the text.

    ``sent_spans`` ``[N, n_facts, 2]`` long: word ``[start, end)`` of each fact sentence (its
    final "." included); ``sent_chars`` ``[N, n_facts, 2]`` the same in characters;
    ``gold_sentence`` ``[N]`` which fact is asked; ``answer_pos`` ``[N]`` the value's word index
    (also ``gold_words``). ``is_conflict`` ``[N]`` bool: the asked key is famous and the context
    gives it a value that differs from ``memory_answers`` (``""`` for ordinary items).
    ``corrupted_texts``: the asked value in the context replaced by another value of the same
    attribute (``corrupted_answers``), all else equal.
    """

    answers: list[str]
    sent_spans: torch.Tensor
    sent_chars: torch.Tensor
    gold_sentence: torch.Tensor
    answer_pos: torch.Tensor
    is_conflict: torch.Tensor
    memory_answers: list[str]
    corrupted_texts: list[str]
    corrupted_answers: list[str]
    _items: ClassVar[tuple[str, ...]] = (
        *TextData._items, "answers", "sent_spans", "sent_chars", "gold_sentence", "answer_pos", "is_conflict",
        "memory_answers", "corrupted_texts", "corrupted_answers",
    )  # fmt: skip


def kv_qa(n: int, *, n_facts: int = 5, p_conflict: float = 0.0, seed: int = 0, template: str = "natural") -> KVData:
    """``n`` items of ``n_facts`` fact sentences "the A of K is V ." then a question about one.

    Keys are distinct within an item and so are values (the answer word occurs once in the
    context). With probability ``p_conflict`` the asked fact is a famous key (from
    :data:`FAMOUS_FACTS`) with a *different* value, the knowledge-conflict case. ``template``
    picks the wording (:data:`KV_TEMPLATES`); the random draws do not depend on it.
    """
    off = kv_template_offsets(template)
    fact_t, question_t = KV_TEMPLATES[template]
    n = check_n(n)
    n_facts = check_int(n_facts, "n_facts", low=1, high=len(KV_KEYS))
    p_conflict = check_float(p_conflict, "p_conflict", low=0.0, high=1.0)
    rng = np.random.default_rng(check_seed(seed))
    attrs = list(KV_ATTRIBUTES)
    famous = list(FAMOUS_FACTS)
    words, gold, ans, spans, gsent, conflict, mem, corr, cans = [], [], [], [], [], [], [], [], []
    for _ in range(n):
        keys = list(rng.choice(KV_KEYS, size=n_facts, replace=False))
        fact_attrs = [attrs[j] for j in rng.integers(len(attrs), size=n_facts)]
        q = int(rng.integers(n_facts))
        is_c = bool(rng.uniform() < p_conflict)
        memory = ""
        if is_c:
            a, k = famous[rng.integers(len(famous))]
            keys[q], fact_attrs[q], memory = k, a, FAMOUS_FACTS[(a, k)]
        used: set[str] = {memory} if memory else set()
        values = []
        for a in fact_attrs:
            pool = [v for v in KV_ATTRIBUTES[a] if v not in used]
            v = pool[rng.integers(len(pool))]
            used.add(v)
            values.append(v)
        w: list[str] = []
        sp = []
        for a, k, v in zip(fact_attrs, keys, values, strict=True):
            start = len(w)
            w += fact_t.format(attr=a, key=k, value=v).split(" ")
            sp.append((start, len(w)))
        w += question_t.format(attr=fact_attrs[q], key=keys[q]).split(" ")
        a_pos = sp[q][0] + off["value"]  # "the A of K is V ." -> V is word 5
        pool = [v for v in KV_ATTRIBUTES[fact_attrs[q]] if v not in used]
        if not pool:  # every other value of the attribute is in the context: corrupt to the memorised one
            pool = [v for v in KV_ATTRIBUTES[fact_attrs[q]] if v not in values]
        new_v = pool[rng.integers(len(pool))]
        cw = list(w)
        cw[a_pos] = new_v
        words.append(w)
        gold.append([a_pos])
        ans.append(values[q])
        spans.append(sp)
        gsent.append(q)
        conflict.append(is_c)
        mem.append(memory)
        corr.append(" ".join(cw))
        cans.append(new_v)
    texts, chars = join_words(words, gold)
    sent_chars = []
    for t, sp in zip(texts, spans, strict=True):
        ws = word_char_spans(t)
        sent_chars.append([(ws[a][0], ws[b - 1][1]) for a, b in sp])
    return KVData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=world_vocab([_FACT, _QUESTION], *KV_ATTRIBUTES.values(), KV_ATTRIBUTES, KV_KEYS, [k for _, k in famous]),
        answers=ans,
        sent_spans=torch.as_tensor(spans, dtype=torch.long),
        sent_chars=torch.as_tensor(sent_chars, dtype=torch.long),
        gold_sentence=torch.as_tensor(gsent, dtype=torch.long),
        answer_pos=torch.as_tensor([g[0] for g in gold], dtype=torch.long),
        is_conflict=torch.as_tensor(conflict, dtype=torch.bool),
        memory_answers=mem,
        corrupted_texts=corr,
        corrupted_answers=cans,
    )


# ----------------------------------------------------------------------------------------------
# Topic classification with confusable pairs.

#: Each pair of confusable classes: (class, its discriminative words) ×2 and the words they share.
TOPIC_PAIRS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("sport", ("match", "goal", "league", "referee", "stadium", "season"),
     "fitness", ("gym", "workout", "muscle", "cardio", "stretching", "weights"),
     ("training", "coach", "exercise", "strong")),
    ("finance", ("stock", "bank", "loan", "investor", "portfolio", "dividend"),
     "economy", ("inflation", "unemployment", "recession", "growth", "policy", "trade"),
     ("market", "money", "rates", "prices")),
    ("cooking", ("recipe", "oven", "bake", "kitchen", "chef", "sauce"),
     "nutrition", ("vitamin", "protein", "diet", "fiber", "minerals", "healthy"),
     ("food", "meal", "eat", "dish")),
)  # fmt: skip
TOPIC_FILLERS: tuple[str, ...] = (
    "the", "a", "today", "people", "new", "said", "about", "some", "this", "week",
    "many", "with", "very", "and", "for", "was", "they", "news", "story", "local",
)  # fmt: skip
TOPIC_CHANNELS: tuple[str, str] = ("app", "phone")


@dataclasses.dataclass
class TopicData(TextData):
    """Topic texts. ``labels`` ``[N]`` long into ``classes``; ``roles[i][j]`` is ``"disc"``,
    ``"shared"``, ``"spurious"`` or ``"filler"`` for word j; ``gold_words`` = the "disc" positions.
    ``discriminative[c]`` / ``shared[c]`` list each class's own words and its pair's shared words.
    ``channel_agrees`` ``[N]`` bool: the spurious channel word matches the class's usual one
    (all False without ``spurious``)."""

    labels: torch.Tensor
    classes: tuple[str, ...]
    roles: list[list[str]]
    discriminative: dict[str, tuple[str, ...]]
    shared: dict[str, tuple[str, ...]]
    channel_agrees: torch.Tensor
    _items: ClassVar[tuple[str, ...]] = (*TextData._items, "labels", "roles", "channel_agrees")


TOPIC_CLASSES: tuple[str, ...] = tuple(c for p in TOPIC_PAIRS for c in (p[0], p[2]))


def topics(
    n: int,
    *,
    classes: Sequence[str] = TOPIC_CLASSES,
    n_words: int = 10,
    n_disc: tuple[int, int] = (1, 2),
    n_shared: tuple[int, int] = (1, 2),
    spurious: float | None = None,
    seed: int = 0,
) -> TopicData:
    """``n`` texts of ``n_words`` words: ``n_disc`` discriminative words of the class, ``n_shared``
    words shared with its confusable sibling, fillers, in a random order (counts uniform in the
    inclusive ranges; words drawn without repetition). Labels are balanced over ``classes``.

    ``spurious=rho`` adds one channel word ("app" for the first class of each pair, "phone" for
    the second) with probability ``rho``, the other channel word otherwise: ``rho=0.9`` plants a
    shortcut, ``0.5`` none, ``0.1`` an adversarial flip. The channel word is never gold.
    """
    n = check_n(n)
    classes = check_names(classes, TOPIC_CLASSES, "classes")
    n_words = check_int(n_words, "n_words", low=2, high=64)
    for name, rng_ in (("n_disc", n_disc), ("n_shared", n_shared)):
        check_int_range(rng_, name, low=0, high=4)
    if n_disc[0] < 1:
        raise InputError(f"`n_disc` must have low >= 1 so every text holds evidence; got {n_disc!r}")
    rho = None if spurious is None else check_float(spurious, "spurious", low=0.0, high=1.0)
    if n_disc[1] + n_shared[1] + (rho is not None) > n_words:
        raise InputError(f"`n_words`={n_words} is too small for n_disc={n_disc}, n_shared={n_shared} and the channel")
    disc, shared, first = {}, {}, {}
    for c1, d1, c2, d2, sh in TOPIC_PAIRS:
        disc[c1], disc[c2] = d1, d2
        shared[c1] = shared[c2] = sh
        first[c1], first[c2] = True, False
    rng = np.random.default_rng(check_seed(seed))
    labels = rng.permutation(np.arange(n) % len(classes))
    words, roles, gold, agrees = [], [], [], []
    for k in labels:
        c = classes[k]
        nd = int(rng.integers(n_disc[0], n_disc[1] + 1))
        ns = int(rng.integers(n_shared[0], n_shared[1] + 1))
        items = [(w, "disc") for w in rng.choice(disc[c], size=nd, replace=False)]
        items += [(w, "shared") for w in rng.choice(shared[c], size=ns, replace=False)]
        agree = False
        if rho is not None:
            agree = bool(rng.uniform() < rho)
            usual = TOPIC_CHANNELS[0] if first[c] else TOPIC_CHANNELS[1]
            other = TOPIC_CHANNELS[1] if first[c] else TOPIC_CHANNELS[0]
            items.append((usual if agree else other, "spurious"))
        n_fill = n_words - len(items)
        fill = rng.choice(TOPIC_FILLERS, size=n_fill, replace=n_fill > len(TOPIC_FILLERS))
        items += [(w, "filler") for w in fill]
        order = rng.permutation(len(items))
        w = [str(items[j][0]) for j in order]
        r = [items[j][1] for j in order]
        words.append(w)
        roles.append(r)
        gold.append([j for j, role in enumerate(r) if role == "disc"])
        agrees.append(agree)
    texts, chars = join_words(words, gold)
    return TopicData(
        texts=texts,
        words=words,
        gold_words=gold,
        gold_chars=chars,
        vocab=world_vocab(*disc.values(), *(p[4] for p in TOPIC_PAIRS), TOPIC_FILLERS, TOPIC_CHANNELS),
        labels=torch.as_tensor(labels, dtype=torch.long),
        classes=classes,
        roles=roles,
        discriminative={c: disc[c] for c in classes},
        shared={c: shared[c] for c in classes},
        channel_agrees=torch.as_tensor(agrees, dtype=torch.bool),
    )
