"""LAQuer (Hirsch et al., ACL 2025): localize a highlighted span of a generated sentence to the
minimal source spans that support it.

The paper's framework has two stages: (1) start from a coarse attribution of the output
sentence (the source sentences it cites), (2) *localize* it to the user's highlight: rewrite the
highlight as a standalone fact (decontextualize), then pick the source spans that support exactly
that fact. The paper localizes with a prompted LLM (GPT-4o) and with LLM internal representations.

At small scale we have no instruct LLM, so this module implements the spec's stand-ins on the
offline MiniLM encoder (a [recon] of the paper's methods, not its exact algorithms):

- :func:`localize_sentence`: the coarse baseline, return the cited sentences whole;
- :func:`localize_lexical`: content-word overlap (with a character edit ratio to break ties),
  the repo's lexical alignment idea, blind to paraphrase;
- :func:`localize_embed` ("LAQuer-embed", the LLM method's stand-in): MiniLM cosine between the
  fact and each candidate clause, top-1, then greedily add clauses while they raise the recall of
  the fact's (synonym-normalized) content words and their cosine stays >= ``tau``;
- :func:`localize_internals` ("LAQuer-internals"): encode sources and output jointly, match each
  highlighted token to the source token with the most similar last-layer state, return the
  clauses holding the matches (hidden-state matching, as in "Peering into the Mind").

The one entry point :func:`explain` localizes one highlight with any of these methods and returns
an :class:`~xattr_nb.attribution.Attribution` over the words of the searched source sentences
(1 = returned), the spans in ``meta["spans"]``; :func:`evaluate` scores every method on every
highlight of a data set.

*An oracle to keep in mind.* LAQuer-embed's greedy step measures recall of the fact's content
words after mapping paraphrases onto source words with the world's own synonym table
(:data:`SYNONYMS`); the lexical baseline does not get that table, and LAQuer-internals uses none.
A comparison of embed with lexical therefore mixes "meaning" with that oracle. The AIS proxy of
:func:`span_metrics` is word coverage of the gold clause, not entailment.

The data come from :func:`grounded_facts`, a seeded world whose gold supporting clause is known
for every highlight (:mod:`xattr_nb.worlds.facts`). At full scale :func:`llm_localize`
runs the paper's instruction on a causal LM loaded with
``xattr_nb.models.load_lm("full", ...)``, and :func:`map_spans` maps its answer back onto the
sources (exact search, then a fuzzy fallback), as the paper's code does.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_text, check_texts
from xattr_nb.models import embed
from xattr_nb.models.io import device_of
from xattr_nb.models.text import check_tokenizer_matches
from xattr_nb.runtime import Cost, progress
from xattr_nb.worlds.facts import (
    NAMES,
    RELATIONS,
    STOPWORDS,
    SYNONYMS,
    VALUES,
    GroundedFactsData,
    Instance,
    Span,
    grounded_facts,
)
from xattr_nb.worlds.text import word_char_spans

__all__ = [
    "ABLATIONS",
    "NAMES",
    "RELATIONS",
    "STOPWORDS",
    "SYNONYMS",
    "VALUES",
    "EmbeddingCache",
    "GroundedFactsData",
    "Instance",
    "Span",
    "batch_token_matches",
    "candidate_units",
    "candidates",
    "content_words",
    "decontextualize",
    "evaluate",
    "explain",
    "greedy_select",
    "grounded_facts",
    "highlight_text",
    "llm_localize",
    "localize_embed",
    "localize_internals",
    "localize_lexical",
    "localize_sentence",
    "map_spans",
    "match_figure",
    "shared_value",
    "span_metrics",
    "span_text",
    "token_matches",
    "word_mask",
]

# ----------------------------------------------------------------------------------------------
# Steps.


def _check_instance(inst: Any) -> Instance:
    if not isinstance(inst, Instance):
        raise InputError(f"`inst` must be a laquer.Instance (from grounded_facts); got {type(inst).__name__}")
    return inst


def _check_k(inst: Instance, k: Any) -> int:
    return check_int(k, "k", low=0, high=len(inst.highlights) - 1)


def candidate_units(words: Sequence[str]) -> list[tuple[int, int]]:
    """Split one sentence into clause-like units: break at "," and "." (dropped) and before "who".

    ``alice , who lives in paris , works as a baker .`` → ``alice`` / ``who lives in paris`` /
    ``works as a baker``, as word spans ``[start, end)``. These are LAQuer's candidate source spans.
    """
    if isinstance(words, str) or not isinstance(words, Sequence) or len(words) == 0:
        raise InputError("`words` must be a non-empty list of words (one sentence)")
    units, start = [], 0
    for i, w in enumerate([*words, "."]):
        if w in (",", ".") or (w == "who" and i > start):
            if i > start:
                units.append((start, i))
            start = i + 1 if w in (",", ".") else i
    return units


def _sentences(inst: Instance, setting: str) -> list[tuple[int, int]]:
    """The source sentences a method searches: the cited ones (two-stage) or all of them (e2e)."""
    if setting == "two_stage":
        return list(inst.coarse)
    return [(d, s) for d, doc in enumerate(inst.sources) for s in range(len(doc))]


def candidates(inst: Instance, setting: str = "two_stage") -> list[Span]:
    """Candidate source units: in the cited sentences (``"two_stage"``, the paper's default) or in
    every sentence of every document (``"e2e"``, the paper's end-to-end setting)."""
    inst = _check_instance(inst)
    check_choice(setting, ("two_stage", "e2e"), "setting")
    sents = _sentences(inst, setting)
    return [(d, s, a, b) for d, s in sents for a, b in candidate_units(inst.sources[d][s])]


def span_text(inst: Instance, span: Span) -> str:
    """The words of a source span joined by spaces."""
    d, s, a, b = span
    return " ".join(_check_instance(inst).sources[d][s][a:b])


def highlight_text(inst: Instance, k: int) -> str:
    """The words of highlight ``k`` in the output, e.g. ``resides in paris``."""
    a, b = _check_instance(inst).highlights[_check_k(inst, k)]
    return " ".join(inst.output[a:b])


def decontextualize(subject: str, highlight: str) -> str:
    """Rule-based decontextualization (the spec's stand-in for the paper's LLM rewrite): prefix the
    highlight with the output's subject, so ``resides in paris`` becomes ``alice resides in paris``."""
    return f"{check_text(subject, 'subject').strip()} {check_text(highlight, 'highlight').strip()}"


def content_words(words: Sequence[str] | str, *, normalize: bool = False) -> set[str]:
    """The words that carry content (not in :data:`STOPWORDS`); with ``normalize`` each paraphrase
    word is mapped to its source relation word by :data:`SYNONYMS` (``resides`` → ``lives``)."""
    if isinstance(words, str):
        words = words.split()
    if not isinstance(words, Sequence):
        raise InputError(f"`words` must be a string or a list of words; got {type(words).__name__}")
    out = {w for w in words if w not in STOPWORDS}
    return {SYNONYMS.get(w, w) for w in out} if normalize else out


class EmbeddingCache:
    """MiniLM sentence embeddings cached by text, so each distinct text is encoded once.

    ``cache(texts)`` returns ``[len(texts), hidden]`` (L2-normalised: cosine = dot product);
    ``cache.n_encoded`` counts the texts sent through the encoder (the spec's forward budget).
    """

    def __init__(self, tokenizer: Any, model: Any, batch_size: int = 128) -> None:
        check_tokenizer_matches(model, tokenizer)
        self.tokenizer, self.model = tokenizer, model
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self._store: dict[str, torch.Tensor] = {}
        self.n_encoded = 0

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(list(texts) if not isinstance(texts, str) else texts, "texts")
        missing = list(dict.fromkeys(t for t in texts if t not in self._store))
        if missing:
            emb = embed(missing, self.tokenizer, self.model, self.batch_size, show_progress=False)
            self._store.update(zip(missing, emb, strict=True))
            self.n_encoded += len(missing)
        return torch.stack([self._store[t] for t in texts])


def greedy_select(
    order: Sequence[int], unit_words: Sequence[set[str]], fact_words: set[str], eligible: Sequence[bool]
) -> list[int]:
    """LAQuer-style greedy span selection (hand-written; no library has it).

    Take the first unit of ``order`` (the best-scored), then walk the rest in order and add a unit
    when it is ``eligible`` (e.g. cosine >= tau) and it raises the recall of ``fact_words``
    (the fact's content words covered by the union of the chosen units). Returns unit indices.
    """
    order = list(order)
    if not order:
        raise InputError("`order` must rank at least one candidate unit")
    if len(unit_words) != len(eligible):
        raise InputError(f"`unit_words` ({len(unit_words)}) and `eligible` ({len(eligible)}) must have equal length")
    if any(not isinstance(i, (int, np.integer)) or not 0 <= i < len(unit_words) for i in order):
        raise InputError(f"`order` must hold indices into `unit_words` (0..{len(unit_words) - 1}); got {order}")
    chosen = [order[0]]
    covered = set(unit_words[order[0]]) & fact_words
    for i in order[1:]:
        gain = (unit_words[i] & fact_words) - covered
        if eligible[i] and gain:
            chosen.append(i)
            covered |= gain
    return chosen


def localize_sentence(inst: Instance, k: int) -> list[Span]:
    """The coarse baseline: the cited sentences, whole (all non-punctuation words)."""
    inst = _check_instance(inst)
    _check_k(inst, k)
    return [(d, s, 0, len(inst.sources[d][s])) for d, s in inst.coarse]


def _normalized(text: str) -> str:
    """``text`` with each paraphrase word mapped onto its source word by :data:`SYNONYMS`."""
    return " ".join(SYNONYMS.get(w, w) for w in text.split())


def localize_lexical(inst: Instance, k: int, *, setting: str = "two_stage", synonyms: bool = False) -> list[Span]:
    """Lexical alignment: rank units by exact content-word overlap with the decontextualized fact
    (ties broken by ``difflib``'s character edit ratio, the repo's edit-distance flavour), then
    :func:`greedy_select` with "eligible" = shares at least one word. Blind to paraphrase.

    ``synonyms=True`` is the oracle control: the fact's words are first mapped onto the source
    words with the world's own synonym table (:data:`SYNONYMS`, the table LAQuer-embed's greedy
    step uses by default), so ``resides`` matches ``lives``."""
    inst = _check_instance(inst)
    if not isinstance(synonyms, bool):
        raise InputError(f"`synonyms` must be True or False; got {synonyms!r}")
    fact = decontextualize(inst.subject, highlight_text(inst, k))
    if synonyms:
        fact = _normalized(fact)
    cands = candidates(inst, setting)
    fw = content_words(fact)
    uw = [content_words(span_text(inst, c)) for c in cands]
    score = [
        (len(u & fw), difflib.SequenceMatcher(None, fact, span_text(inst, c)).ratio())
        for u, c in zip(uw, cands, strict=True)
    ]
    order = sorted(range(len(cands)), key=lambda i: (-score[i][0], -score[i][1], i))
    return [cands[i] for i in greedy_select(order, uw, fw, [s[0] > 0 for s in score])]


def localize_embed(
    inst: Instance,
    k: int,
    cache: EmbeddingCache,
    *,
    tau: float = 0.5,
    setting: str = "two_stage",
    synonyms: bool = True,
) -> tuple[list[Span], torch.Tensor]:
    """LAQuer-embed [recon]: MiniLM cosine between the fact ``f(h)`` and every candidate unit; keep
    the top-1, then add units (best first) whose cosine >= ``tau`` while they raise the recall of
    the fact's synonym-normalized content words. Returns the spans and the cosines of all candidates.

    ``synonyms=False`` is the oracle ablation: the recall test counts the fact's content words as
    written (no :data:`SYNONYMS` table), so only MiniLM's cosine knows that ``resides`` means ``lives``."""
    inst = _check_instance(inst)
    if not isinstance(cache, EmbeddingCache):
        raise InputError(f"`cache` must be an EmbeddingCache; got {type(cache).__name__}")
    if not isinstance(synonyms, bool):
        raise InputError(f"`synonyms` must be True or False; got {synonyms!r}")
    tau = check_float(tau, "tau", low=-1.0, high=1.0)
    fact = decontextualize(inst.subject, highlight_text(inst, k))
    cands = candidates(inst, setting)
    texts = [span_text(inst, c) for c in cands]
    e = cache([fact, *texts])
    sims = e[1:] @ e[0]
    order = torch.argsort(sims, descending=True, stable=True).tolist()
    uw = [content_words(t, normalize=synonyms) for t in texts]
    chosen = greedy_select(order, uw, content_words(fact, normalize=synonyms), (sims >= tau).tolist())
    return [cands[i] for i in chosen], sims


def _joint_text(inst: Instance, sents: Sequence[tuple[int, int]]) -> tuple[str, list[tuple[int, int, int, int, int]]]:
    """Sources joined by spaces, and for each word ``(char start, char end, doc, sent, word)``."""
    words, where = [], []
    for d, s in sents:
        for j, w in enumerate(inst.sources[d][s]):
            words.append(w)
            where.append((d, s, j))
    text = " ".join(words)
    return text, [(a, b, *w) for (a, b), w in zip(word_char_spans(text), where, strict=True)]


def token_matches(inst: Instance, tokenizer: Any, model: Any, *, setting: str = "two_stage") -> dict[str, Any]:
    """Encode ``[sources] [SEP] [output]`` jointly with the encoder and compare last-layer states.

    Returns ``sim`` ``[output tokens, source tokens]`` (cosine), ``out_word`` (the output word of
    each output token), ``src_word`` (``(doc, sent, word)`` of each source token) and the token
    strings; special tokens and punctuation are left out. One forward per instance
    (:func:`batch_token_matches` runs many instances in padded batches).
    """
    return batch_token_matches([inst], tokenizer, model, setting=setting)[0]


def batch_token_matches(
    insts: Sequence[Instance], tokenizer: Any, model: Any, *, setting: str = "two_stage", batch_size: int = 32
) -> list[dict[str, Any]]:
    """:func:`token_matches` for every instance of ``insts``, encoded in padded batches of
    ``batch_size`` (one forward per batch: many tiny forwards cost far more on a busy CPU)."""
    if isinstance(insts, Instance) or not isinstance(insts, Sequence) or len(insts) == 0:
        raise InputError("`insts` must be a non-empty list of laquer.Instance")
    insts = [_check_instance(i) for i in insts]
    check_choice(setting, ("two_stage", "e2e"), "setting")
    check_tokenizer_matches(model, tokenizer)
    batch_size = check_int(batch_size, "batch_size", low=1)
    device = device_of(model)
    out: list[dict[str, Any]] = []
    for b0 in range(0, len(insts), batch_size):
        chunk = insts[b0 : b0 + batch_size]
        joint = [_joint_text(inst, _sentences(inst, setting)) for inst in chunk]
        out_texts = [" ".join(inst.output) for inst in chunk]
        enc = tokenizer(
            [j[0] for j in joint], out_texts, return_offsets_mapping=True, padding=True, return_tensors="pt"
        )  # fmt: skip
        offsets = enc.pop("offset_mapping").tolist()
        with torch.inference_mode():
            hid = model(**{k: v.to(device) for k, v in enc.items()}).last_hidden_state.float().cpu()
        hid = torch.nn.functional.normalize(hid, dim=-1)
        for b, ((_, src_words), out_text) in enumerate(zip(joint, out_texts, strict=True)):
            out.append(_matches_of(enc, b, offsets[b], hid[b], tokenizer, src_words, word_char_spans(out_text)))
    return out


def _matches_of(
    enc: Any, b: int, offsets: list[list[int]], h: torch.Tensor, tokenizer: Any, src_words: list, out_spans: list
) -> dict[str, Any]:
    seq = enc.sequence_ids(b)
    toks = tokenizer.convert_ids_to_tokens(enc["input_ids"][b])
    src_idx, src_w, out_idx, out_w = [], [], [], []
    for t, (sid, (a, _)) in enumerate(zip(seq, offsets, strict=True)):
        if sid is None or toks[t] in STOPWORDS:
            continue
        if sid == 0:
            w = next(x for x in src_words if x[0] <= a < x[1])
            src_idx.append(t)
            src_w.append(w[2:])
        else:
            out_idx.append(t)
            out_w.append(next(j for j, (s0, s1) in enumerate(out_spans) if s0 <= a < s1))
    return {
        "sim": h[out_idx] @ h[src_idx].T,
        "out_word": out_w,
        "src_word": src_w,
        "out_tokens": [toks[t] for t in out_idx],
        "src_tokens": [toks[t] for t in src_idx],
    }


def localize_internals(inst: Instance, k: int, matches: dict[str, Any], *, setting: str = "two_stage") -> list[Span]:
    """LAQuer-internals [recon]: each content token of highlight ``k`` points to its most similar
    source token (from :func:`token_matches`); return the candidate units that contain a match."""
    inst = _check_instance(inst)
    a, b = inst.highlights[_check_k(inst, k)]
    if not isinstance(matches, dict) or "sim" not in matches:
        raise InputError("`matches` must be the dict returned by token_matches(inst, ...)")
    rows = [i for i, w in enumerate(matches["out_word"]) if a <= w < b and inst.output[w] not in STOPWORDS]
    if not rows:
        raise InputError(f"highlight {k} has no content token in `matches` (was it built for this instance?)")
    hit = {matches["src_word"][j] for j in matches["sim"][rows].argmax(1).tolist()}
    return [
        c for c in candidates(inst, setting) if any(d == c[0] and s == c[1] and c[2] <= w < c[3] for d, s, w in hit)
    ]


def word_mask(
    inst: Instance, spans: Sequence[Span], sents: Sequence[tuple[int, int]] | None = None
) -> tuple[list[str], np.ndarray]:
    """The words of sentences ``sents`` (default: the cited ones) and a 0/1 score per word: 1 where
    ``spans`` select it. Feeds token views (:class:`xattr_nb.widgets.TokenHeatmap`)."""
    inst = _check_instance(inst)
    sents = inst.coarse if sents is None else list(sents)
    pos = _positions(inst, spans)
    words = [w for d, s in sents for w in inst.sources[d][s]]
    mask = np.array([float((d, s, j) in pos) for d, s in sents for j in range(len(inst.sources[d][s]))])
    return words, mask


def _positions(inst: Instance, spans: Sequence[Span]) -> set[tuple[int, int, int]]:
    return {(d, s, j) for d, s, a, b in spans for j in range(a, b) if inst.sources[d][s][j] not in (",", ".")}


def span_metrics(inst: Instance, k: int, spans: Sequence[Span]) -> dict[str, float]:
    """Score a localization of highlight ``k`` against its gold clause, in source words
    (punctuation excluded): ``length``, ``precision``, ``recall``, ``f1``, and ``ais`` = 1 when the
    spans hold >= 90% of the gold clause's content words (the spec's AIS proxy), else 0."""
    inst = _check_instance(inst)
    k = _check_k(inst, k)
    for s in spans:
        if not (isinstance(s, tuple) and len(s) == 4):
            raise InputError(f"`spans` must be (doc, sent, start, end) tuples; got {s!r}")
    pred, gold = _positions(inst, spans), _positions(inst, [inst.gold[k]])
    gold_content = {p for p in gold if inst.sources[p[0]][p[1]][p[2]] not in STOPWORDS}
    tp = len(pred & gold)
    prec = tp / len(pred) if pred else 0.0
    rec = tp / len(gold)
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    ais = float(len(pred & gold_content) >= 0.9 * len(gold_content))
    return {"length": float(len(pred)), "precision": prec, "recall": rec, "f1": f1, "ais": ais}


METHODS = ("sentence", "lexical", "embed", "internals")
#: The synonym-oracle ablations: lexical overlap *with* the world's synonym table, LAQuer-embed *without* it.
ABLATIONS = ("lexical_syn", "embed_nosyn")


def _localize(
    inst: Instance,
    k: int,
    method: str,
    *,
    tokenizer: Any = None,
    model: Any = None,
    cache: EmbeddingCache | None = None,
    tau: float = 0.5,
    setting: str = "two_stage",
    llm: Any = None,
) -> list[Span]:
    """The spans ``method`` returns for highlight ``k`` (the dispatch behind :func:`explain`)."""
    if method == "sentence":
        return localize_sentence(inst, k)
    if method in ("lexical", "lexical_syn"):
        return localize_lexical(inst, k, setting=setting, synonyms=method == "lexical_syn")
    if method in ("embed", "embed_nosyn"):
        if cache is None:
            if tokenizer is None or model is None:
                raise InputError(f"method='{method}' needs `cache` or both `tokenizer` and `model`")
            cache = EmbeddingCache(tokenizer, model)
        return localize_embed(inst, k, cache, tau=tau, setting=setting, synonyms=method == "embed")[0]
    if method == "llm":
        return llm_localize(inst, k, *_check_llm(llm), setting=setting)
    if tokenizer is None or model is None:
        raise InputError("method='internals' needs `tokenizer` and `model`")
    return localize_internals(inst, k, token_matches(inst, tokenizer, model, setting=setting), setting=setting)


def _check_llm(llm: Any) -> tuple[Any, Any]:
    if not isinstance(llm, tuple) or len(llm) != 2:
        raise InputError("method 'llm' needs `llm=(model, tokenizer)`: the LoadedLM of xattr_nb.models.load_lm")
    return llm[0], llm[1]


def explain(
    inst: Instance,
    k: int,
    method: str = "embed",
    *,
    tokenizer: Any = None,
    model: Any = None,
    cache: EmbeddingCache | None = None,
    tau: float = 0.5,
    setting: str = "two_stage",
    llm: Any = None,
) -> Attribution:
    """Entry point: localize highlight ``k`` of ``inst`` with ``method`` (``METHODS``, ``ABLATIONS``
    or ``"llm"``).

    Returns an :class:`Attribution` of kind ``"tokens"`` over the words of the searched source
    sentences (the cited ones in the two-stage setting, every sentence in ``"e2e"``), scored 1 where
    the localization selects a word and 0 elsewhere; ``meta`` holds the ``spans``
    ``(doc, sent, start, end)``, the ``highlight``, the decontextualized ``fact`` and the
    ``setting``; ``target`` is ``[k]``. ``cost.forward`` counts encoder (or LLM) forwards: texts
    newly encoded for ``"embed"``, one joint forward for ``"internals"``, one generation for ``"llm"``.

    ``"embed"`` needs ``cache`` (or ``tokenizer`` and ``model`` to build one); ``"internals"``
    needs ``tokenizer`` and ``model`` (the MiniLM from :func:`xattr_nb.models.load_encoder`);
    ``"llm"`` needs ``llm=(model, tokenizer)`` (the ``LoadedLM`` of :func:`xattr_nb.models.load_lm`).
    """
    inst = _check_instance(inst)
    k = _check_k(inst, k)
    check_choice(method, (*METHODS, *ABLATIONS, "llm"), "method")
    check_choice(setting, ("two_stage", "e2e"), "setting")
    if method in ("embed", "embed_nosyn") and cache is None and tokenizer is not None and model is not None:
        cache = EmbeddingCache(tokenizer, model)
    before = cache.n_encoded if isinstance(cache, EmbeddingCache) else 0
    t0 = time.perf_counter()
    spans = _localize(
        inst, k, method, tokenizer=tokenizer, model=model, cache=cache, tau=tau, setting=setting, llm=llm
    )  # fmt: skip
    wall = time.perf_counter() - t0
    new = (cache.n_encoded - before) if cache is not None else 0
    forwards = {"embed": new, "embed_nosyn": new, "internals": 1, "llm": 1}
    sents = _sentences(inst, setting)
    words, scores = word_mask(inst, spans, sents)
    return Attribution(
        scores=torch.as_tensor(scores, dtype=torch.float32)[None],
        kind="tokens",
        method=f"laquer.{method}",
        target=torch.tensor([k]),
        cost=Cost(forward=forwards.get(method, 0), wall_s=wall),
        labels=[words],
        meta={
            "spans": spans,
            "sentences": sents,
            "highlight": highlight_text(inst, k),
            "fact": decontextualize(inst.subject, highlight_text(inst, k)),
            "setting": setting,
        },
    )


def evaluate(
    data: GroundedFactsData,
    methods: Sequence[str] = METHODS,
    *,
    tokenizer: Any = None,
    model: Any = None,
    cache: EmbeddingCache | None = None,
    tau: float = 0.5,
    setting: str = "two_stage",
    llm: Any = None,
    show_progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Every method on every highlight of ``data``: ``{method: {metric: [n_highlights] array}}``.

    MiniLM work is shared: one :class:`EmbeddingCache` across all facts and units (each distinct
    text is encoded once) and one joint forward per instance for the internals. ``"llm"`` (the
    paper's LLM method, :func:`llm_localize`) needs ``llm=(tokenizer, causal_lm)``. The synonym-oracle
    ablations of :data:`ABLATIONS` (``"lexical_syn"``, ``"embed_nosyn"``) are accepted as methods too.
    """
    if not isinstance(data, GroundedFactsData) or len(data) == 0:
        raise InputError("`data` must be a non-empty GroundedFactsData (from grounded_facts)")
    if isinstance(methods, str) or not methods:
        raise InputError(f"`methods` must be a non-empty list of names from {[*METHODS, *ABLATIONS, 'llm']}")
    for m in methods:
        check_choice(m, (*METHODS, *ABLATIONS, "llm"), "methods")
    if "llm" in methods:
        _check_llm(llm)
    embeds = "embed" in methods or "embed_nosyn" in methods
    needs_model = (embeds and cache is None) or "internals" in methods
    if needs_model and (tokenizer is None or model is None):
        raise InputError("methods 'embed'/'internals' need `tokenizer` and `model` (or `cache` for 'embed')")
    if embeds and cache is None:
        cache = EmbeddingCache(tokenizer, model)
    if embeds:  # every fact and unit text in a few large batches, not one small forward per highlight
        cache(
            [decontextualize(i.subject, highlight_text(i, k)) for i in data.instances for k in range(len(i.highlights))]
            + [span_text(i, c) for i in data.instances for c in candidates(i, setting)]
        )  # fmt: skip
    all_matches = (
        batch_token_matches(data.instances, tokenizer, model, setting=setting) if "internals" in methods else None
    )
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    bar = progress(data.instances, desc=f"localize ({setting})", unit="instance", disable=not show_progress)
    for n, inst in enumerate(bar):
        matches = None if all_matches is None else all_matches[n]
        for k in range(len(inst.highlights)):
            for m in methods:
                if m in ("embed", "embed_nosyn"):
                    spans = localize_embed(inst, k, cache, tau=tau, setting=setting, synonyms=m == "embed")[0]  # type: ignore[arg-type]
                elif m == "internals":
                    spans = localize_internals(inst, k, matches, setting=setting)  # type: ignore[arg-type]
                else:
                    spans = _localize(inst, k, m, setting=setting, llm=llm)
                rows[m].append(span_metrics(inst, k, spans))
    return {m: {key: np.array([r[key] for r in rs]) for key in rs[0]} for m, rs in rows.items()}


def shared_value(data: GroundedFactsData) -> np.ndarray:
    """For every highlight of ``data`` (in :func:`evaluate`'s order), whether both clauses of its
    cited sentence end in the same value, so that only the relation word tells the gold clause from
    the other one (the highlights that word overlap without paraphrase knowledge cannot resolve)."""
    if not isinstance(data, GroundedFactsData) or len(data) == 0:
        raise InputError("`data` must be a non-empty GroundedFactsData (from grounded_facts)")
    out = []
    for inst in data.instances:
        for k in range(len(inst.highlights)):
            d, s = inst.coarse[k]
            clauses = candidate_units(inst.sources[d][s])[1:]
            ends = {inst.sources[d][s][b - 1] for _, b in clauses}
            out.append(len(clauses) > 1 and len(ends) == 1)
    return np.array(out, dtype=bool)


def match_figure(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    boxes: Any = None,
    dots: Any = None,
    title: str | None = None,
    cbar_label: str = "cosine",
    cmap: str = "viridis",
    cell: tuple[float, float] = (0.7, 0.5),
) -> Any:
    """A similarity matrix ``[R, C]`` (facts or highlight tokens × source units or tokens) with the
    cells a localization picks outlined (``boxes``, bool ``[R, C]``, red) and reference cells marked
    (``dots``, bool ``[R, C]``, white: the gold clause); displayed in a notebook and returned."""
    from matplotlib.patches import Rectangle

    from xattr_nb import plots

    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or not np.isfinite(m).all():
        raise InputError(f"`matrix` must be a finite [R, C] array; got shape {m.shape}")
    r, c = m.shape
    if len(row_labels) != r or len(col_labels) != c:
        raise InputError(f"`row_labels` ({len(row_labels)}) and `col_labels` ({len(col_labels)}) must match {m.shape}")
    marks = {}
    for name, v in (("boxes", boxes), ("dots", dots)):
        if v is not None:
            v = np.asarray(v, dtype=bool)
            if v.shape != m.shape:
                raise InputError(f"`{name}` must have the shape of `matrix` {m.shape}; got {v.shape}")
            marks[name] = v
    with plots.style():
        fig = plots.figure(max(3.5, cell[0] * c + 2.5), max(1.8, cell[1] * r + 1.3))
        ax = fig.add_subplot()
        im = ax.imshow(m, cmap=cmap, aspect="auto")
        ax.grid(False)
        for i, j in zip(*np.nonzero(marks.get("boxes", np.zeros_like(m, dtype=bool))), strict=True):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        for i, j in zip(*np.nonzero(marks.get("dots", np.zeros_like(m, dtype=bool))), strict=True):
            ax.plot(j, i, "o", color="white", ms=4)
        ax.set_xticks(range(c), list(col_labels), rotation=35 if c < 15 else 90, ha="right" if c < 15 else "center",
                      fontsize=7)  # fmt: skip
        ax.set_yticks(range(r), list(row_labels), fontsize=8)
        fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.9)
        if title:
            ax.set_title(title)
    return plots.show(fig)


# ----------------------------------------------------------------------------------------------
# Full scale: the paper's LLM method on a local instruct model.

INSTRUCTION = (
    "Below are source sentences and a fact. Copy, word for word, the shortest spans of the sources that "
    "together fully support the fact. Separate spans with ';'. Do not paraphrase and do not add anything.\n"
)


def map_spans(text: str, spans: Sequence[str], *, min_ratio: float = 0.6) -> list[tuple[int, int] | None]:
    """Character offsets ``(start, end)`` of each LLM-copied span in ``text``.

    Exact substring search first (the first occurrence); else a fuzzy fallback, as the paper's code
    does with diff-match-patch: the window of ``text`` of the span's length with the best
    ``difflib`` ratio, kept when the ratio >= ``min_ratio`` (``None`` otherwise). Fuzzy matches can
    attach to the wrong occurrence of repeated text: check them.
    """
    text = check_text(text, "text")
    if isinstance(spans, str) or not isinstance(spans, Sequence):
        raise InputError("`spans` must be a list of strings")
    min_ratio = check_float(min_ratio, "min_ratio", low=0.0, high=1.0)
    out: list[tuple[int, int] | None] = []
    for i, s in enumerate(spans):
        s = check_text(s, f"spans[{i}]").strip()
        at = text.find(s)
        if at >= 0:
            out.append((at, at + len(s)))
            continue
        best, where = 0.0, None
        for a in range(0, max(1, len(text) - len(s) + 1)):
            r = difflib.SequenceMatcher(None, s, text[a : a + len(s)], autojunk=False).ratio()
            if r > best:
                best, where = r, (a, min(len(text), a + len(s)))
        if where is not None and best >= min_ratio:
            a, b = where  # trim the window's edge spaces: the span starts and ends on a character
            a += len(text[a:b]) - len(text[a:b].lstrip())
            b -= len(text[a:b]) - len(text[a:b].rstrip())
            out.append((a, b))
        else:
            out.append(None)
    return out


def llm_localize(
    inst: Instance, k: int, model: Any, tokenizer: Any, *, max_new_tokens: int = 48, setting: str = "two_stage"
) -> list[Span]:
    """The paper's LLM method (scale="full"): prompt a causal LM (``model, tokenizer`` in the order
    of :class:`xattr_nb.models.LoadedLM`) with the instruction, the candidate
    source sentences and the decontextualized fact; greedy-decode; split the answer on ';'; map each
    span back with :func:`map_spans`; return the candidate units the mapped characters overlap."""
    inst = _check_instance(inst)
    check_tokenizer_matches(model, tokenizer)
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=1)
    check_choice(setting, ("two_stage", "e2e"), "setting")
    sents = _sentences(inst, setting)
    src_text, src_words = _joint_text(inst, sents)
    fact = decontextualize(inst.subject, highlight_text(inst, k))
    prompt = f"{INSTRUCTION}Sources: {src_text}\nFact: {fact}\nSpans:"
    enc = tokenizer(prompt, return_tensors="pt").to(device_of(model))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).split("\n")[0]
    pieces = [p for p in answer.split(";") if p.strip()]
    hits = [h for h in (map_spans(src_text, pieces) if pieces else []) if h is not None]
    words = {(d, s, j) for a, b in hits for c0, c1, d, s, j in src_words if c0 < b and a < c1}
    return [c for c in candidates(inst, setting) if any((c[0], c[1], j) in words for j in range(c[2], c[3]))]
