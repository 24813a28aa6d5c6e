"""Mechanistic circuits for extractive QA, and AttnAttrib: data attribution read off one attention head.

Basu, Morariu, Wang, Rossi, Zhao, Feizi and Manjunatha, "On Mechanistic Circuits for Extractive
Question-Answering" (COLM 2025, arXiv:2502.08059). No official code was found; everything here is
written from the spec (``shared/papers/11_qa_circuits.md``), and the details it marks [recon]
(corruption, read position, head selection, steering format) are flags of the functions below.

The method, in the order the notebook calls the steps:

1. **Probe data** (:func:`encode_items`, :func:`closed_book_pairs`): (context, question) pairs whose
   answer is copied from the context, each with a corrupted twin whose asked value is swapped
   (the world's ``corrupted_texts``), tokenized with any HF tokenizer; fact sentences are mapped to
   token indices through the tokenizer's character offsets. The clean/corrupted twins are a
   :class:`~xattr_nb.interventions.ContrastPairs` (``QABatch.pairs``), what CMA reads.
2. **Causal mediation analysis** (:func:`cma`): patch one component's clean output (an attention
   head, or an MLP) into the corrupted run at the final position; indirect effect
   ``IE = m(patched) - m(corr)`` with ``m = logit(answer_clean) - logit(answer_corr)``.
   :meth:`CMAResult.to_attribution` hands the effects on as ``Attribution(kind="components")``, and
   :func:`~xattr_nb.interventions.to_circuit` keeps the top-K components (by signed IE, edges
   embeddings -> component -> logits) as a :class:`~xattr_nb.interventions.Circuit`.
3. **Head selection** (:func:`head_scores`, :func:`select_head`): the head whose attention from the
   answer-predicting position puts the most mass on the gold fact sentence, over the probe set [recon].
4. **AttnAttrib** (:func:`attn_attrib`, :func:`predict_sentence`): one forward pass with attention
   output; the context sentence holding the head's top-attended token is the attribution.
5. **Steering** (:func:`repeat_sentence_texts`, :func:`context_faithfulness`): the attributed
   sentence repeated before the question, and the share of knowledge-conflict items answered
   from the context, with and without it [recon of the format].

Baselines (:func:`mean_attention`, :func:`gradient_baselines`, :func:`leave_one_sentence_out`,
:func:`random_sentences`) and :func:`evaluate` (accuracy with bootstrap CIs from
:func:`xattr_nb.metrics.bootstrap_ci`, passes and wall time per item) follow. :func:`find_head` and
:func:`explain` chain the steps for users; :func:`plot_components` draws a layer x head grid
through :func:`xattr_nb.plots.signed_matrix`.

Models come from :func:`xattr_nb.models.load_lm` (``small="kv_gpt2"``, or a paper LM by name at
``scale="full"``: eager attention and a pad token). Head and MLP patching runs on the shared
harness :mod:`xattr_nb.interventions.patching`; models are read through :mod:`xattr_nb.models.io`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.interventions.circuit import Circuit, node_name, to_circuit
from xattr_nb.interventions.hooks import block_names
from xattr_nb.interventions.pairs import ContrastPairs
from xattr_nb.interventions.patching import activation_patching, component_sites, logit_diff
from xattr_nb.kernels import count_passes
from xattr_nb.metrics import bootstrap_ci
from xattr_nb.models.io import device_of, logits_of
from xattr_nb.runtime import Cost, timer
from xattr_nb.worlds.text import kv_qa

__all__ = [
    "RULES",
    "CMAResult",
    "HeadChoice",
    "QABatch",
    "attention_maps",
    "attn_attrib",
    "attribute_count",
    "attribute_match_sentences",
    "baselines",
    "closed_book_pairs",
    "cma",
    "context_faithfulness",
    "encode_items",
    "eval_items",
    "evaluate",
    "explain",
    "find_head",
    "gradient_baselines",
    "head_scores",
    "leave_one_sentence_out",
    "mean_attention",
    "model_shape",
    "plot_components",
    "predict_sentence",
    "random_sentences",
    "repeat_sentence_texts",
    "select_head",
    "sentence_scores",
    "shortcut_copy_rate",
    "steering",
]

SENTENCE_RULES = ("argmax", "sum", "max")


# ----------------------------------------------------------------------------------------------
# 1. Probe data: KV-QA items as token ids, with token-level sentence spans.


@dataclass
class QABatch:
    """KV-QA items tokenized for one model (right-padded).

    - ``ids``/``mask`` ``[N, T]``: ``[BOS]``-prefixed prompts (the tokenizer's BOS, if it has one);
      ``last`` ``[N]`` the index of each prompt's last token, where the answer is predicted.
    - ``sent_index`` ``[N, T]`` long: which fact sentence each token belongs to (``-1``: BOS,
      question, padding); ``n_sent`` sentences per item; ``gold`` ``[N]`` the asked sentence
      (``-1`` when the asked fact is not in the context).
    - ``answer`` ``[N]``: first token of the context answer; ``memory`` ``[N]``: first token of the
      memorised answer (``-1`` for ordinary items); ``is_conflict`` ``[N]`` bool.
    - ``pairs``: the clean prompts and their corrupted twins as
      :class:`~xattr_nb.interventions.ContrastPairs` (``answer`` the clean answer, ``wrong`` the
      corrupted twin's answer, masks always set; both sides right-padded to one length): what
      :func:`cma` reads. ``None`` for prompts without twins (e.g. steered texts).
    - ``tokens``: the tokens of each prompt; ``texts``: the prompts (without BOS).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    last: torch.Tensor
    sent_index: torch.Tensor
    n_sent: int
    gold: torch.Tensor
    answer: torch.Tensor
    memory: torch.Tensor
    is_conflict: torch.Tensor
    pairs: ContrastPairs | None = None
    tokens: list[list[str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def context(self) -> torch.Tensor:
        """``[N, T]`` bool: the tokens inside a fact sentence (what AttnAttrib may point at)."""
        return self.sent_index >= 0

    def to(self, device: Any) -> QABatch:
        """A copy with every tensor on ``device``."""
        moved = {
            k: v.to(device) if isinstance(v, (torch.Tensor, ContrastPairs)) else v for k, v in self.__dict__.items()
        }
        return QABatch(**moved)


def _prefix(tokenizer: Any) -> str:
    bos = getattr(tokenizer, "bos_token", None)
    return f"{bos} " if bos else ""


def _answer_token(tokenizer: Any, prompt: str, answer: str) -> int:
    """The first token the model must emit after ``prompt`` to answer ``answer`` (space-joined, as written)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(f"{prompt} {answer}", add_special_tokens=False)["input_ids"]
    if full[: len(p)] != p or len(full) <= len(p):
        raise InputError(f"the tokenizer does not split {answer!r} off the prompt cleanly")
    return int(full[len(p)])


def _encode(tokenizer: Any, texts: Sequence[str], sent_chars: Any = None) -> dict[str, Any]:
    """Ids, mask, last index, tokens and (given character spans per text) the sentence index per token."""
    pre = _prefix(tokenizer)
    rows, offs = [], []
    for i, t in enumerate(texts):
        enc = tokenizer(pre + t, add_special_tokens=False, return_offsets_mapping=True)
        if not enc["input_ids"]:
            raise InputError(f"`texts[{i}]` tokenizes to no tokens")
        rows.append(list(enc["input_ids"]))
        offs.append([(int(a) - len(pre), int(b) - len(pre)) for a, b in enc["offset_mapping"]])
    t_max = max(len(r) for r in rows)
    ids = torch.full((len(rows), t_max), _pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros_like(ids)
    sent = torch.full_like(ids, -1)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.as_tensor(r)
        mask[b, : len(r)] = 1
        if sent_chars is not None:
            for j, (s0, s1) in enumerate(sent_chars[b].tolist()):
                for t, (a, e) in enumerate(offs[b]):
                    if e > a and a < s1 and e > s0 and a >= 0:
                        sent[b, t] = j
    tokens = [tokenizer.convert_ids_to_tokens(r) for r in rows]
    return {"ids": ids, "mask": mask, "last": mask.sum(1) - 1, "sent_index": sent, "tokens": tokens}


def _contrast(
    clean: dict[str, Any], corr: dict[str, Any], answer: list[int], wrong: list[int], texts: list[str], pad: int
) -> ContrastPairs:
    """The encoded clean prompts and their twins as ContrastPairs, right-padded to one length."""
    t = max(clean["ids"].shape[1], corr["ids"].shape[1])

    def widen(x: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=fill)

    return ContrastPairs(
        clean_ids=widen(clean["ids"], pad), corr_ids=widen(corr["ids"], pad),
        answer=torch.as_tensor(answer), wrong=torch.as_tensor(wrong),
        clean_mask=widen(clean["mask"], 0), corr_mask=widen(corr["mask"], 0), tokens=clean["tokens"], texts=texts,
    )  # fmt: skip


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def encode_items(data: Any, tokenizer: Any, *, texts: Sequence[str] | None = None) -> QABatch:
    """Tokenize KV-QA items (:class:`~xattr_nb.worlds.text.KVData`) and their corrupted twins for ``tokenizer``.

    ``texts`` replaces the prompts (e.g. :func:`repeat_sentence_texts`); sentence spans are then
    not known, ``sent_index`` is all ``-1`` and there are no twins (``pairs`` is ``None``: the
    world's corrupted prompts are twins of its own texts, not of these). Sentence spans come from
    the world's character spans through the tokenizer's ``offset_mapping``, so a word-level
    tokenizer and GPT-2's BPE both work.
    """
    from xattr_nb.worlds.text import KVData

    if not isinstance(data, KVData):
        raise InputError(f"`data` must be KVData from xattr_nb.worlds.text.kv_qa; got {type(data).__name__}")
    if not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputError(f"`tokenizer` must be a Hugging Face tokenizer; got {type(tokenizer).__name__}")
    if texts is not None and len(texts) != len(data):
        raise InputError(f"`texts` must hold one prompt per item ({len(data)}); got {len(texts)}")
    own = texts is None
    prompts = list(data.texts) if own else list(texts)
    enc = _encode(tokenizer, prompts, data.sent_chars if own else None)
    pre = _prefix(tokenizer)
    ans = [_answer_token(tokenizer, pre + p, a) for p, a in zip(prompts, data.answers, strict=True)]
    mem = [_answer_token(tokenizer, pre + p, m) if m else -1 for p, m in zip(prompts, data.memory_answers, strict=True)]
    pairs = None
    if own:
        corr = _encode(tokenizer, data.corrupted_texts)
        cans = [_answer_token(tokenizer, pre + p, a)
                for p, a in zip(data.corrupted_texts, data.corrupted_answers, strict=True)]  # fmt: skip
        pairs = _contrast(enc, corr, ans, cans, prompts, _pad_id(tokenizer))
    return QABatch(
        ids=enc["ids"], mask=enc["mask"], last=enc["last"], sent_index=enc["sent_index"],
        n_sent=int(data.sent_spans.shape[1]), gold=data.gold_sentence.clone() if own else torch.full((len(data),), -1),
        answer=torch.as_tensor(ans), memory=torch.as_tensor(mem), is_conflict=data.is_conflict.clone(),
        pairs=pairs, tokens=enc["tokens"], texts=prompts,
    )  # fmt: skip


def closed_book_pairs(data: Any, tokenizer: Any, *, seed: int = 0) -> QABatch:
    """Probe pairs for the *memory* circuit: the question asks about a famous key absent from the
    context (answer: the memorised value); its twin asks about another famous key with another value.

    Built from ordinary items of ``data`` by rewriting the question ("what is the A of K ?"): the
    context is untouched, so the clean and corrupted prompts differ only in the question's A and K.
    """
    from xattr_nb.worlds.text import FAMOUS_FACTS, KVData

    if not isinstance(data, KVData):
        raise InputError(f"`data` must be KVData from xattr_nb.worlds.text.kv_qa; got {type(data).__name__}")
    from xattr_nb.worlds.text import kv_template_offsets

    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    facts = list(FAMOUS_FACTS.items())
    clean, corr, a_clean, a_corr = [], [], [], []
    for w in data.words:
        off = kv_template_offsets("natural" if w[-2:] == ["answer", ":"] else "short")
        i, j = rng.choice(len(facts), size=2, replace=False)
        for (attr, key), _v in (facts[i], facts[j]):
            q = list(w)
            q[off["q_attr"]], q[off["q_key"]] = attr, key  # "question : what is the A of K ? answer :"
            (clean if len(clean) == len(corr) else corr).append(" ".join(q))
        a_clean.append(facts[i][1])
        a_corr.append(facts[j][1])
    enc = _encode(tokenizer, clean, data.sent_chars)
    cenc = _encode(tokenizer, corr)
    pre = _prefix(tokenizer)
    ans = [_answer_token(tokenizer, pre + p, a) for p, a in zip(clean, a_clean, strict=True)]
    cans = [_answer_token(tokenizer, pre + p, a) for p, a in zip(corr, a_corr, strict=True)]
    return QABatch(
        ids=enc["ids"], mask=enc["mask"], last=enc["last"], sent_index=enc["sent_index"],
        n_sent=int(data.sent_spans.shape[1]), gold=torch.full((len(clean),), -1),
        answer=torch.as_tensor(ans), memory=torch.as_tensor(ans), is_conflict=torch.zeros(len(clean), dtype=torch.bool),
        pairs=_contrast(enc, cenc, ans, cans, clean, _pad_id(tokenizer)), tokens=enc["tokens"], texts=clean,
    )  # fmt: skip


def eval_items(
    n: int, tokenizer: Any, *, p_conflict: float = 0.25, seed: int = 0, template: str = "natural"
) -> tuple[Any, QABatch]:
    """``n`` KV-QA items (``p_conflict`` of them knowledge-conflict items) in ``template``
    (:data:`~xattr_nb.worlds.text.KV_TEMPLATES`) and their :class:`QABatch`."""
    data = kv_qa(check_int(n, "n", low=1), p_conflict=check_float(p_conflict, "p_conflict", low=0.0, high=1.0),
                 seed=check_int(seed, "seed", low=0), template=template)  # fmt: skip
    return data, encode_items(data, tokenizer)


# ----------------------------------------------------------------------------------------------
# 2. Causal mediation analysis over heads and MLPs at the final position.


def _logits_at(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    logits = logits_of(model(input_ids=ids, attention_mask=mask), ndim=3)
    return logits[torch.arange(ids.shape[0], device=ids.device), last]


class _AnswerLogitDiff:
    """``m = logit(answer_clean) - logit(answer_corr)`` at the final position: the batch mean for the
    patching harness, ``per_example`` for the per-pair indirect effects."""

    def __init__(self, answer: torch.Tensor, wrong: torch.Tensor) -> None:
        self.answer, self.wrong = answer, wrong

    def per_example(self, logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, self.answer, self.wrong, -1)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_example(logits).mean()


@dataclass
class CMAResult:
    """Indirect effects of every component: ``ie`` ``[C, N]`` per probe pair (``names`` in forward
    order), ``m_clean``/``m_corr`` ``[N]`` the metric on the clean and corrupted runs, and the cost."""

    names: list[str]
    ie: torch.Tensor
    m_clean: torch.Tensor
    m_corr: torch.Tensor
    cost: Cost
    skipped: int = 0

    def mean(self, normalized: bool = False) -> dict[str, float]:
        """Mean IE per component; ``normalized`` divides by the mean clean-corrupted gap (1 = restores it all)."""
        gap = float((self.m_clean - self.m_corr).mean()) if normalized else 1.0
        if normalized and abs(gap) < 1e-12:
            raise InputError("the clean and corrupted runs have the same metric: nothing to normalise by")
        return {n: float(v) / gap for n, v in zip(self.names, self.ie.mean(1), strict=True)}

    def to_attribution(self, *, normalized: bool = False, per_example: bool = False) -> Attribution:
        """The indirect effects as ``Attribution(kind="components")``: one column per component
        (``labels`` = ``names``, circuit node names), one row holding the mean IE (:meth:`mean`, the
        same numbers), or with ``per_example=True`` one row per probe pair. ``normalized`` divides by
        the mean clean-corrupted gap, as :meth:`mean` does. ``target`` is 0 (the metric, a logit
        difference, is what is explained); ``meta`` keeps ``m_clean``, ``m_corr``, ``skipped`` and
        ``normalized``."""
        if not isinstance(normalized, bool) or not isinstance(per_example, bool):
            raise InputError("`normalized` and `per_example` must be bools")
        if per_example:
            gap = float((self.m_clean - self.m_corr).mean()) if normalized else 1.0
            if normalized and abs(gap) < 1e-12:
                raise InputError("the clean and corrupted runs have the same metric: nothing to normalise by")
            scores = self.ie.T.double() / gap
        else:
            scores = torch.tensor([list(self.mean(normalized).values())], dtype=torch.float64)
        meta = {"m_clean": self.m_clean, "m_corr": self.m_corr, "skipped": self.skipped, "normalized": normalized}
        return Attribution(
            scores=scores, kind="components", method="CMA", target=torch.zeros(scores.shape[0], dtype=torch.long),
            cost=self.cost, labels=list(self.names), meta=meta,
        )  # fmt: skip

    def grid(self, n_layers: int, n_heads: int, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(heads [L, H], mlps [L])`` of the mean IE, for heatmaps."""
        m = self.mean(normalized)
        heads = np.array([[m.get(node_name("head", l, h), 0.0) for h in range(n_heads)] for l in range(n_layers)])
        return heads, np.array([m.get(node_name("mlp", l), 0.0) for l in range(n_layers)])


def cma(model: nn.Module, batch: QABatch | ContrastPairs, *, show_progress: bool = False) -> CMAResult:
    """Causal mediation analysis at the final position, through the shared harness
    (:func:`xattr_nb.interventions.patching.activation_patching`, sites ``head`` and ``mlp_out``):
    each component's clean output is patched into the corrupted run and
    ``IE = m(patched) - m(corr)``, ``m = logit(answer) - logit(wrong)`` (the clean answer against
    the corrupted twin's), per pair.

    Reads ``batch.pairs`` of a :class:`QABatch` (or a :class:`~xattr_nb.interventions.ContrastPairs`
    given directly; without masks every position is real). Pairs are grouped by length (the harness
    patches one position index for a whole batch); a pair whose clean and corrupted prompts
    tokenize to different lengths is skipped (counted in ``skipped``; never at small scale, where
    every prompt has one length). Cost: 2 + number of components forwards per pair.
    """
    pairs = batch.pairs if isinstance(batch, QABatch) else batch
    if not isinstance(pairs, ContrastPairs):
        raise InputError(
            "`batch` must be a QABatch with corrupted twins (encode_items / closed_book_pairs) or ContrastPairs"
        )
    dev = device_of(model)
    st = component_sites(model)
    names = [node_name("head", l, h) for l in range(st.n_layers) for h in range(st.n_heads)]
    names += [node_name("mlp", l) for l in range(st.n_layers)]
    full = torch.full((len(pairs),), pairs.clean_ids.shape[1] - 1)
    last = full if pairs.clean_mask is None else pairs.clean_mask.sum(1) - 1
    corr_last = full if pairs.corr_mask is None else pairs.corr_mask.sum(1) - 1
    same = (last == corr_last).nonzero().flatten()
    if len(same) == 0:
        raise InputError("no pair has clean and corrupted prompts of one length: nothing to patch")
    ie = torch.zeros(len(names), len(pairs))
    m_clean, m_corr = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    cost = Cost()
    for n in last[same].unique().tolist():
        rows = same[last[same] == n]
        ids, corr = pairs.clean_ids[rows, : n + 1].to(dev), pairs.corr_ids[rows, : n + 1].to(dev)
        metric = _AnswerLogitDiff(pairs.answer[rows].to(dev), pairs.wrong[rows].to(dev))
        res = activation_patching(
            model, ids, corr, metric, sites=("head", "mlp_out"), positions=[-1], per_example=True,
            show_progress=show_progress,
        )  # fmt: skip
        heads = res.examples["head"][:, :, 0].reshape(len(rows), -1)  # [B, L*H], layer-major
        ie[:, rows] = torch.cat([heads, res.examples["mlp_out"][:, :, 0]], 1).T.float()
        with torch.no_grad():
            m_clean[rows] = metric.per_example(logits_of(model(input_ids=ids), ndim=3)).float().cpu()
            m_corr[rows] = metric.per_example(logits_of(model(input_ids=corr), ndim=3)).float().cpu()
        cost = cost + res.cost  # already a total over these rows
    keep = torch.zeros(len(pairs), dtype=torch.bool)
    keep[same] = True
    return CMAResult(names, ie[:, keep], m_clean[keep], m_corr[keep], cost, skipped=int((~keep).sum()))


# ----------------------------------------------------------------------------------------------
# 3-4. Head selection and AttnAttrib.


@torch.no_grad()
def attention_maps(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Attention from each row's ``last`` position, every layer and head: ``[N, L, H, T]`` (one forward)."""
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise InputError("the model returned no attention weights: load it with attn_implementation='eager'")
    rows = torch.arange(ids.shape[0], device=ids.device)
    return torch.stack([a[rows, :, last] for a in out.attentions], 1)


def head_scores(model: nn.Module, batch: QABatch, *, criterion: str = "mass") -> torch.Tensor:
    """How well each head points at the gold sentence from the answer position, ``[L, H]`` [recon].

    ``criterion="mass"``: mean attention mass on the gold sentence's tokens; ``"accuracy"``: share of
    items whose top-attended context token lies in the gold sentence.
    """
    check_choice(criterion, ("mass", "accuracy"), "criterion")
    if bool((batch.gold < 0).any()):
        raise InputError("`batch` has items without a gold sentence (closed-book); use items that copy from context")
    dev = device_of(model)
    b = batch.to(dev)
    att = attention_maps(model, b.ids, b.mask, b.last)  # [N, L, H, T]
    gold_tok = (b.sent_index == b.gold[:, None])[:, None, None, :]
    if criterion == "mass":
        return (att * gold_tok).sum(-1).mean(0).cpu()
    ctx = b.context[:, None, None, :]
    top = att.masked_fill(~ctx, -1.0).argmax(-1, keepdim=True)
    return torch.gather(gold_tok.expand_as(att), -1, top).squeeze(-1).float().mean(0).cpu()


def select_head(scores: torch.Tensor, *, among: Circuit | None = None) -> tuple[int, int]:
    """``h* = argmax`` of ``scores`` ``[L, H]`` (ties: the earlier head); ``among`` restricts the
    choice to the heads of a circuit (the spec's reading); ``None`` searches every head, so that
    "h* is in the circuit" stays a check rather than a construction."""
    s = check_tensor(scores, "scores", ndim=2, dtype="float", layout="[L, H]").clone()
    if among is not None:
        allowed = torch.zeros_like(s, dtype=torch.bool)
        for n in among.nodes:
            if n.kind == "head" and n.layer < s.shape[0] and n.head < s.shape[1]:
                allowed[n.layer, n.head] = True
        if not bool(allowed.any()):
            raise InputError("`among` holds no head of this model")
        s = s.masked_fill(~allowed, float("-inf"))
    i = int(s.flatten().argmax())
    return i // s.shape[1], i % s.shape[1]


def attn_attrib(model: nn.Module, batch: QABatch, head: tuple[int, int]) -> Attribution:
    """AttnAttrib: head ``(layer, h)``'s attention from the answer-predicting position over the context
    tokens (0 elsewhere), from one forward pass that also yields the answer (``target``). No backward."""
    dev = device_of(model)
    b = batch.to(dev)
    layer, h = check_int(head[0], "head[0]", low=0), check_int(head[1], "head[1]", low=0)
    with count_passes(model) as counter, timer() as tm, torch.no_grad():
        out = model(input_ids=b.ids, attention_mask=b.mask, output_attentions=True)
        if layer >= len(out.attentions) or h >= out.attentions[layer].shape[1]:
            raise InputError(f"`head` {head} does not exist in a model of {len(out.attentions)} layers")
        rows = torch.arange(len(b), device=dev)
        alpha = out.attentions[layer][rows, h, b.last] * b.context
        target = logits_of(out, ndim=3)[rows, b.last].argmax(-1)
    return Attribution(
        scores=alpha.float().cpu(), kind="tokens", method="attn_attrib", target=target.cpu(), mask=b.mask.bool().cpu(),
        cost=Cost(forward=counter.forward, wall_s=tm["s"]), labels=None, meta={"head": (layer, h)},
    )  # fmt: skip


def sentence_scores(
    scores: torch.Tensor, sent_index: torch.Tensor, n_sent: int, *, reduce: str = "sum"
) -> torch.Tensor:
    """Token scores ``[N, T]`` pooled per fact sentence (``sum`` or ``max``): ``[N, S]``."""
    s = check_tensor(scores, "scores", ndim=2, dtype="float", layout="[N, T]")
    idx = check_tensor(sent_index, "sent_index", shape=tuple(s.shape), dtype="int", layout="[N, T]")
    check_choice(reduce, ("sum", "max"), "reduce")
    out = torch.full((s.shape[0], n_sent), 0.0 if reduce == "sum" else float("-inf"), dtype=s.dtype)
    for j in range(check_int(n_sent, "n_sent", low=1)):
        sel = idx == j
        if reduce == "sum":
            out[:, j] = (s * sel).sum(1)
        else:
            out[:, j] = s.masked_fill(~sel, float("-inf")).amax(1)
    return out


def predict_sentence(scores: torch.Tensor, batch: QABatch, *, rule: str = "argmax") -> torch.Tensor:
    """The attributed sentence ``[N]``: ``"argmax"`` the sentence of the top-scored context token
    (the spec's top-1 token expanded to its sentence), ``"sum"``/``"max"`` the sentence with the
    largest summed/max token score (ties: the earlier sentence)."""
    check_choice(rule, SENTENCE_RULES, "rule")
    s = check_tensor(scores, "scores", shape=tuple(batch.ids.shape), dtype="float", layout="[N, T]").cpu()
    if rule == "argmax":
        top = s.masked_fill(~batch.context.cpu(), float("-inf")).argmax(1)
        return batch.sent_index.cpu()[torch.arange(len(batch)), top]
    return sentence_scores(s, batch.sent_index.cpu(), batch.n_sent, reduce=rule).argmax(1)


# ----------------------------------------------------------------------------------------------
# Baselines.


def mean_attention(model: nn.Module, batch: QABatch, *, layer: int = -1) -> Attribution:
    """Attention from the answer position averaged over all heads of ``layer`` (default the last), context only."""
    dev = device_of(model)
    b = batch.to(dev)
    with count_passes(model) as counter, timer() as tm, torch.no_grad():
        out = model(input_ids=b.ids, attention_mask=b.mask, output_attentions=True)
        rows = torch.arange(len(b), device=dev)
        alpha = out.attentions[layer][rows, :, b.last].mean(1) * b.context
        target = logits_of(out, ndim=3)[rows, b.last].argmax(-1)
    return Attribution(
        scores=alpha.float().cpu(), kind="tokens", method="mean_attention_last_layer", target=target.cpu(),
        mask=b.mask.bool().cpu(), cost=Cost(forward=counter.forward, wall_s=tm["s"]),
    )  # fmt: skip


def gradient_baselines(
    model: nn.Module, batch: QABatch, target: torch.Tensor, *, pad_id: int, ig_steps: int = 16
) -> dict[str, Attribution]:
    """captum ``Saliency`` and ``LayerIntegratedGradients`` (``ig_steps``, ``pad_id`` baseline on the
    context tokens) on the input embeddings for the ``target`` logit at the answer position, through
    :func:`xattr_nb.attribution.attribute` (``position=-1`` is each row's last real token)."""
    from xattr_nb.attribution import attribute

    dev = device_of(model)
    b = batch.to(dev)
    base = torch.where(b.context, torch.full_like(b.ids, check_int(pad_id, "pad_id", low=0)), b.ids)
    common = {"attention_mask": b.mask, "position": -1}
    tgt = target.to(dev)
    return {
        "saliency": attribute(model, b.ids, tgt, "saliency", **common),
        "integrated_gradients": attribute(
            model, b.ids, tgt, "layer_integrated_gradients", baseline=base,
            n_steps=check_int(ig_steps, "ig_steps", low=1), **common,
        ),
    }  # fmt: skip


def leave_one_sentence_out(
    model: nn.Module, batch: QABatch, target: torch.Tensor, *, pad_id: int, show_progress: bool = False
) -> Attribution:
    """Leave-one-sentence-out (a ContextCite-lite): captum ``FeatureAblation`` with one feature group per
    fact sentence (its tokens set to ``pad_id``); each token gets its sentence's drop in the ``target``
    logit. The BOS and question tokens form one more group whose baseline is the input itself (no
    change, but captum still spends a forward on it, counted in the cost)."""
    from captum.attr import FeatureAblation

    dev = device_of(model)
    b = batch.to(dev)
    fmask = torch.where(b.context, b.sent_index, torch.full_like(b.sent_index, b.n_sent))
    base = torch.where(b.context, torch.full_like(b.ids, check_int(pad_id, "pad_id", low=0)), b.ids)

    def fwd(ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return _logits_at(model, ids, mask, last)

    with count_passes(model) as counter, timer() as tm, torch.no_grad():
        raw = FeatureAblation(fwd).attribute(
            b.ids, baselines=base, target=target.to(dev), feature_mask=fmask,
            additional_forward_args=(b.mask, b.last), show_progress=show_progress,
        )  # fmt: skip
    return Attribution(
        scores=(raw.float() * b.context).cpu(), kind="tokens", method="leave_one_sentence_out", target=target.cpu(),
        mask=b.mask.bool().cpu(), cost=Cost(forward=counter.forward, wall_s=tm["s"]),
    )  # fmt: skip


#: How each method's token scores become one sentence (the spec: attention top-1 token expanded to its
#: sentence; gradient scores summed per sentence; leave-one-out scores are per sentence already).
RULES: dict[str, str] = {
    "attn_attrib": "argmax", "mean_attention": "argmax", "saliency": "sum", "integrated_gradients": "sum",
    "leave_one_sentence_out": "max",
}  # fmt: skip


def baselines(
    model: nn.Module, batch: QABatch, target: torch.Tensor, *, pad_id: int, ig_steps: int = 16
) -> dict[str, Attribution]:
    """The spec's baselines on ``batch`` for the ``target`` answer token: last-layer mean attention,
    saliency, layer IG and leave-one-sentence-out (see :data:`RULES` for their sentence read-out)."""
    out = {"mean_attention": mean_attention(model, batch)}
    out |= gradient_baselines(model, batch, target, pad_id=pad_id, ig_steps=ig_steps)
    out["leave_one_sentence_out"] = leave_one_sentence_out(model, batch, target, pad_id=pad_id)
    return out


def random_sentences(batch: QABatch, *, seed: int = 0) -> torch.Tensor:
    """A uniformly random sentence per item ``[N]``: the chance reference (1 / number of sentences)."""
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    return torch.randint(batch.n_sent, (len(batch),), generator=g)


def _asked_attribute_sentences(data: Any) -> list[list[int]]:
    """Per item, the fact sentences whose attribute (a word of :data:`~xattr_nb.worlds.text.KV_ATTRIBUTES`)
    is the one the question asks about (the gold sentence's attribute)."""
    from xattr_nb.worlds.text import KV_ATTRIBUTES, KVData

    if not isinstance(data, KVData):
        raise InputError(f"`data` must be KVData from xattr_nb.worlds.text.kv_qa; got {type(data).__name__}")
    out = []
    for w, sp, g in zip(data.words, data.sent_spans.tolist(), data.gold_sentence.tolist(), strict=True):
        attrs = [next(x for x in w[a:e] if x in KV_ATTRIBUTES) for a, e in sp]
        out.append([j for j, a in enumerate(attrs) if a == attrs[g]])
    return out


def attribute_count(data: Any) -> torch.Tensor:
    """``[N]`` long: how many fact sentences of each item carry the asked attribute (1: the attribute
    alone identifies the gold fact; 2 or more: only the key does)."""
    return torch.as_tensor([len(c) for c in _asked_attribute_sentences(data)], dtype=torch.long)


def attribute_match_sentences(data: Any, *, seed: int = 0) -> torch.Tensor:
    """A model-free control ``[N]``: a random fact sentence among those with the asked attribute.

    It reads only the question's attribute word, never the key or the model: what a reader who
    answers "a value of the asked attribute" would point at. Exactly right when the attribute occurs
    once in the context, at ``1 / count`` otherwise."""
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    return torch.as_tensor([c[rng.integers(len(c))] for c in _asked_attribute_sentences(data)], dtype=torch.long)


def shortcut_copy_rate(data: Any) -> float:
    """The copy accuracy of the attribute shortcut ("right attribute, random value"): the mean over
    items of ``1 / (facts of the asked attribute in the context)``. A model with the key lookup
    beats it; one that only matches the attribute reaches it at best."""
    return float(np.mean([1.0 / len(c) for c in _asked_attribute_sentences(data)]))


# ----------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(
    batch: QABatch, predictions: Mapping[str, torch.Tensor], costs: Mapping[str, Cost] | None = None, *, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per method: attribution ``accuracy`` (the attributed sentence is the gold one) with a 95 %
    bootstrap CI (``ci_lo``, ``ci_hi``), and per item ``forwards``, ``backwards`` and ``wall_ms``
    (from ``costs``, which count over the whole batch as :class:`~xattr_nb.runtime.Cost` does: divided
    by the number of items here)."""
    gold = batch.gold.cpu()
    if bool((gold < 0).any()):
        raise InputError("`batch` has items without a gold sentence")
    out = {}
    for name, pred in predictions.items():
        p = check_tensor(torch.as_tensor(pred), f"predictions[{name!r}]", shape=(len(batch),), dtype="int").cpu()
        hit = (p == gold).float()
        lo, hi = bootstrap_ci(hit.numpy(), seed=seed)
        c = (costs or {}).get(name, Cost())
        out[name] = {"accuracy": float(hit.mean()), "ci_lo": lo, "ci_hi": hi, "forwards": c.forward / len(batch),
                     "backwards": c.backward / len(batch), "wall_ms": 1000.0 * c.wall_s / len(batch)}  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# 5. Steering: the attributed sentence repeated before the question.


def repeat_sentence_texts(data: Any, sentence: torch.Tensor) -> list[str]:
    """The prompts of ``data`` with fact sentence ``sentence[i]`` repeated right before the question [recon]."""
    spans = data.sent_spans
    s = check_tensor(torch.as_tensor(sentence), "sentence", shape=(len(data),), dtype="int", layout="[N]")
    if bool((s < 0).any()) or bool((s >= spans.shape[1]).any()):
        raise InputError(f"`sentence` must lie in [0, {spans.shape[1]})")
    out = []
    for w, sp, j in zip(data.words, spans.tolist(), s.tolist(), strict=True):
        end = sp[-1][1]
        out.append(" ".join(w[:end] + w[sp[j][0] : sp[j][1]] + w[end:]))
    return out


@torch.no_grad()
def context_faithfulness(model: nn.Module, batch: QABatch) -> dict[str, torch.Tensor]:
    """Per item: the greedy answer is the context value (``context``) or the memorised one (``memory``)."""
    dev = device_of(model)
    b = batch.to(dev)
    pred = _logits_at(model, b.ids, b.mask, b.last).argmax(-1).cpu()
    return {"context": pred == batch.answer.cpu(), "memory": pred == batch.memory.cpu(), "prediction": pred}


def steering(
    model: nn.Module, tokenizer: Any, data: Any, choices: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Context faithfulness on the conflict items of ``data``: the share answered with the context
    value (``context``) or the memorised one (``memory``), for the prompts as they are (``"none"``)
    and with each ``choices[name]`` sentence (one per item of ``data``) repeated before the question."""
    idx = data.is_conflict.nonzero().flatten()
    if len(idx) == 0:
        raise InputError("`data` has no conflict item (draw it with p_conflict > 0)")
    sub = data.subset(idx)
    out = {}
    for name, sent in {"none": None, **dict(choices)}.items():
        texts = None if sent is None else repeat_sentence_texts(sub, torch.as_tensor(sent)[idx])
        f = context_faithfulness(model, encode_items(sub, tokenizer, texts=texts))
        out[name] = {"context": float(f["context"].float().mean()), "memory": float(f["memory"].float().mean()),
                     "n": len(idx)}  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# Entry points and models.


@dataclass
class HeadChoice:
    """What :func:`find_head` found: the CMA result, the circuit, the head scores and ``head`` = h*."""

    cma: CMAResult
    circuit: Circuit
    scores: torch.Tensor
    head: tuple[int, int]

    @property
    def in_circuit(self) -> bool:
        """Whether h* is one of the circuit's components (the spec's structural check)."""
        return node_name("head", *self.head) in {n.name for n in self.circuit.nodes}


def find_head(
    model: nn.Module, probe: QABatch, *, k: int = 8, criterion: str = "mass", among_circuit: bool = False
) -> HeadChoice:
    """Steps 2-3 on a probe set: CMA, the top-``k`` circuit, head scores and h*."""
    res = cma(model, probe)
    n_layers = len(block_names(model))
    k = check_int(k, "k", low=1, high=len(res.names))
    circuit = to_circuit(res.to_attribution(normalized=True), top=k, by="score", edges="io", n_layers=n_layers)
    scores = head_scores(model, probe, criterion=criterion)
    return HeadChoice(res, circuit, scores, select_head(scores, among=circuit if among_circuit else None))


def explain(
    model: nn.Module, batch: QABatch, head: tuple[int, int], *, rule: str = "argmax"
) -> tuple[Attribution, torch.Tensor]:
    """Step 4 for users: AttnAttrib's token scores and the attributed sentence per item."""
    attr = attn_attrib(model, batch, head)
    return attr, predict_sentence(attr.scores, batch, rule=rule)


def model_shape(model: nn.Module) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of a GPT-2- or Llama-style model (through the patching harness's sites)."""
    st = component_sites(model)
    return st.n_layers, st.n_heads


def plot_components(heads: Any, mlps: Any = None, *, title: str = "", label: str = "score") -> Any:
    """A layer x head heatmap (plus an MLP column when ``mlps`` is given) of per-component scores,
    through :func:`xattr_nb.plots.signed_matrix` (shown where it is called; the figure is returned)."""
    from xattr_nb import plots

    h = np.asarray(heads, dtype=float)
    if h.ndim != 2:
        raise InputError(f"`heads` must be a [layers, heads] grid; got shape {h.shape}")
    grid = h if mlps is None else np.concatenate([h, np.asarray(mlps, dtype=float).reshape(-1)[:, None]], 1)
    cols = [f"H{j}" for j in range(h.shape[1])] + ([] if mlps is None else ["MLP"])
    return plots.signed_matrix(
        grid, row_labels=[f"L{i}" for i in range(h.shape[0])], col_labels=cols, title=title or None,
        xlabel="head", ylabel="layer", cbar_label=label, annotate=True,
    )  # fmt: skip
