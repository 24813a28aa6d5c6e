"""``TokenHeatmap``: tokens coloured by their scores, one or more methods, two-way with Python."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import traitlets

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int
from xattr_nb.widgets._common import (
    NORMALIZE,
    StaticFallback,
    check_finite_list,
    css_rgb,
    diverging_rgb,
    esc,
    hex_rgb,
    ink,
    read_asset,
    scale_limit,
)

__all__ = ["TokenHeatmap", "merge_subwords", "rank_by_magnitude"]

_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?[A-Za-z_/]+\|?>)$")  # [CLS], [SEP], <s>, </s>, <|endoftext|>
_BPE_START = ("Ġ", "▁", "Ċ")  # GPT-2 byte-level BPE, SentencePiece, GPT-2 newline


def merge_subwords(tokens: Sequence[str]) -> list[tuple[int, int, str]]:
    """Group sub-word pieces into words: ``[(start, end, text), ...]`` over token positions.

    The scheme is read from the tokens: WordPiece (BERT) marks a continuation with ``##``
    (``["token", "##s"] -> "tokens"``); byte-level BPE (GPT-2) and SentencePiece mark the *start*
    of a word with ``Ġ`` / ``▁`` (``["Ġhigh", "light"] -> "highlight"``), so a piece without the
    mark continues the previous word when both are alphanumeric. Special tokens (``[CLS]``,
    ``<|endoftext|>``) and punctuation stay on their own. Written by hand: tokenizers map words to
    pieces (``word_ids()``) only for the text they encoded, not for a list of strings.
    """
    bpe = any(t.startswith(_BPE_START) for t in tokens)
    units: list[list[Any]] = []
    for i, tok in enumerate(tokens):
        prev = units[-1] if units else None
        special = bool(_SPECIAL.match(tok))
        if bpe:
            joins = (
                prev is not None
                and not special
                and not tok.startswith(_BPE_START)
                and tok.isalnum()
                and not _SPECIAL.match(tokens[i - 1])
                and tokens[i - 1].lstrip("".join(_BPE_START))[-1:].isalnum()
            )
            piece = tok
        else:
            joins = prev is not None and tok.startswith("##") and len(tok) > 2 and not _SPECIAL.match(tokens[i - 1])
            piece = tok[2:] if joins else tok
        if joins:
            prev[1] = i + 1
            prev[2] += piece
        else:
            units.append([i, i + 1, tok])
    if bpe:  # show words without the start marks
        for u in units:
            stripped = u[2].lstrip("".join(_BPE_START))
            u[2] = stripped or u[2]
    return [(int(a), int(b), str(t)) for a, b, t in units]


def rank_by_magnitude(values: Sequence[float]) -> list[int]:
    """1-based rank of each value by ``|value|``, largest first; ties keep position order."""
    order = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))
    ranks = [0] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def _from_attribution(a: Attribution, example: int, name: str) -> tuple[list[str], list[float]]:
    if a.kind != "tokens":
        raise InputError(f"`{name}` must be an Attribution of kind 'tokens'; this one scores {a.kind}")
    example = check_int(example, "example", low=0, high=len(a) - 1)
    toks, s = a.tokens(example)
    return toks, check_finite_list(s, f"{name}.scores")


def _inputs(tokens: Any, scores: Any, example: int) -> tuple[list[str], dict[str, list[float]]]:
    """Normalise every accepted input form to ``(tokens, {method: scores})``."""
    if isinstance(tokens, Attribution):
        if scores is not None:
            raise InputError("`scores` come from the Attribution; do not pass them too")
        toks, s = _from_attribution(tokens, example, "tokens")
        return toks, {tokens.method: s}
    if isinstance(tokens, Mapping):  # {method: Attribution}
        if scores is not None:
            raise InputError("`scores` come from the Attributions; do not pass them too")
        if len(tokens) == 0:
            raise InputError("`tokens` is an empty dict; give method -> Attribution")
        out: dict[str, list[float]] = {}
        first: list[str] | None = None
        for m, a in tokens.items():
            if not isinstance(a, Attribution):
                raise InputError(f"`tokens[{m!r}]` must be an Attribution; got {type(a).__name__}")
            toks, s = _from_attribution(a, example, f"tokens[{m!r}]")
            if first is not None and toks != first:
                raise InputError(f"`tokens[{m!r}]` explains different tokens than the first Attribution")
            first = toks
            out[str(m)] = s
        assert first is not None
        return first, out
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise InputError(
            f"`tokens` must be a list of str, an Attribution or a dict of them; got {type(tokens).__name__}"
        )
    if len(tokens) == 0:
        raise InputError("`tokens` is empty: give at least one token")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise InputError(f"`tokens[{i}]` must be a str; got {type(t).__name__}")
    if scores is None:
        raise InputError("`scores` is required with a list of tokens: one score per token (or a dict method -> scores)")
    if isinstance(scores, Attribution):
        raise InputError("`scores`: pass the Attribution as the first argument instead")
    if isinstance(scores, Mapping):
        if len(scores) == 0:
            raise InputError("`scores` is an empty dict; give method -> scores")
        return list(tokens), {str(m): check_finite_list(s, f"scores[{m!r}]", len(tokens)) for m, s in scores.items()}
    return list(tokens), {"scores": check_finite_list(scores, "scores", len(tokens))}


class TokenHeatmap(StaticFallback, anywidget.AnyWidget):
    """Tokens coloured by score on a diverging scale centred at zero (red for, blue against).

    ``TokenHeatmap(tokens, scores)`` with a list of strings and one score per token (a list,
    array or tensor), or a dict ``method -> scores``; or ``TokenHeatmap(attr)`` with an
    :class:`~xattr_nb.attribution.Attribution` of kind tokens (example ``example``), or a dict
    ``method -> Attribution``. In the view: buttons switch the method, a menu the normalisation
    (see :func:`~xattr_nb.widgets._common.scale_limit`), a box merges sub-word pieces into words
    (their scores summed: attributions add up), hovering shows the token, its exact score and its
    rank by ``|score|``, and a click selects a token: ``selected`` (a traitlet you can
    ``observe``) becomes its position, and :attr:`selection` describes it.

    The static fallback (``text/html``) shows the current method's first ``static_limit`` units,
    and says so, to keep saved notebooks small. The page is built once per data change and only recoloured on a method or normalisation
    switch, so 2,000 tokens stay responsive.
    """

    _esm = read_asset("token_heatmap.js")
    _css = read_asset("token_heatmap.css")

    methods = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    method = traitlets.Unicode("").tag(sync=True)
    normalize = traitlets.Unicode("maxabs").tag(sync=True)
    merge_subwords = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    _data = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        tokens: Sequence[str] | Attribution | Mapping[str, Attribution],
        scores: Any = None,
        *,
        example: int = 0,
        method: str | None = None,
        normalize: str = "maxabs",
        merge_subwords: bool = False,
        title: str = "",
        static_limit: int = 400,
        **kwargs: Any,
    ) -> None:
        toks, by_method = _inputs(tokens, scores, example)
        check_choice(normalize, NORMALIZE, "normalize")
        if not isinstance(merge_subwords, bool):
            raise InputError(f"`merge_subwords` must be a bool; got {type(merge_subwords).__name__}")
        if method is not None:
            check_choice(method, list(by_method), "method")
        self._tokens, self._scores = toks, by_method
        self.static_limit = check_int(static_limit, "static_limit", low=1)
        super().__init__(
            method=method or next(iter(by_method)),
            normalize=normalize,
            merge_subwords=merge_subwords,
            title=str(title),
            **kwargs,
        )
        self.set_trait("methods", list(by_method))
        self._rebuild()

    # ---------------------------------------------------------------- data

    @property
    def tokens(self) -> list[str]:
        """The tokens as given (sub-word pieces unmerged)."""
        return list(self._tokens)

    @property
    def scores(self) -> dict[str, list[float]]:
        """``method -> one score per token``, as given."""
        return {m: list(s) for m, s in self._scores.items()}

    def units(self) -> list[tuple[int, int, str]]:
        """What the view shows: ``(start, end, text)`` per token, or per word when ``merge_subwords``."""
        if self.merge_subwords:
            return merge_subwords(self._tokens)
        return [(i, i + 1, t) for i, t in enumerate(self._tokens)]

    def unit_scores(self, method: str | None = None) -> list[float]:
        """The shown scores of ``method`` (default: the current one): per token, or summed per word."""
        m = check_choice(method or self.method, list(self._scores), "method")
        s = self._scores[m]
        return [float(sum(s[a:b])) for a, b, _ in self.units()]

    def colour_limit(self, method: str | None = None) -> float:
        """The colour-scale limit of ``method`` under the current ``normalize``."""
        m = method or self.method
        others = [self.unit_scores(o) for o in self._scores if o != m]
        return scale_limit(self.unit_scores(m), self.normalize, others)

    def colours(self, method: str | None = None) -> list[str]:
        """The background colour of every shown unit, as the browser reports it (``"rgb(r, g, b)"``)."""
        v = self.colour_limit(method)
        return [css_rgb(diverging_rgb(s / v)) for s in self.unit_scores(method)]

    def _rebuild(self) -> None:
        units = self.units()
        scores = {m: self.unit_scores(m) for m in self._scores}
        self._data = {
            "units": [u[2] for u in units],
            "starts": [u[0] for u in units],
            "ends": [u[1] for u in units],
            "scores": scores,
            "ranks": {m: rank_by_magnitude(s) for m, s in scores.items()},
        }

    @traitlets.validate("method")
    def _check_method(self, proposal: Any) -> str:
        if self._scores and proposal["value"] not in self._scores:
            raise InputError(f"`method` must be one of {list(self._scores)}; got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("normalize")
    def _check_normalize(self, proposal: Any) -> str:
        return check_choice(proposal["value"], NORMALIZE, "normalize")

    @traitlets.validate("selected")
    def _check_selected(self, proposal: Any) -> int:
        v = proposal["value"]
        if not -1 <= v < len(self._tokens):
            raise InputError(f"`selected` must be -1 (none) or a token position in [0, {len(self._tokens)}); got {v}")
        return v

    @traitlets.observe("merge_subwords")
    def _on_merge(self, _change: Any) -> None:
        self._rebuild()

    # ---------------------------------------------------------------- selection

    @property
    def selection(self) -> dict[str, Any] | None:
        """The selected token or word: its text, token span, and score and rank under every method."""
        if self.selected < 0:
            return None
        for j, (a, b, text) in enumerate(self.units()):
            if a <= self.selected < b:
                return {
                    "index": j,
                    "text": text,
                    "tokens": (a, b),
                    "scores": {m: self._data["scores"][m][j] for m in self._scores},
                    "ranks": {m: self._data["ranks"][m][j] for m in self._scores},
                }
        return None  # pragma: no cover - selected is validated to a token position

    # ---------------------------------------------------------------- fallbacks

    def _plain(self) -> str:
        sel = "" if self.selected < 0 else f", selected={self.selected}"
        return (
            f"TokenHeatmap({len(self._tokens)} tokens, methods={list(self._scores)}, method={self.method!r}, "
            f"normalize={self.normalize!r}{sel})"
        )

    def _static_html(self) -> str:
        v = self.colour_limit()
        data = self._data
        m = self.method
        n = len(data["units"])
        shown = min(n, self.static_limit)
        spans = []
        for j in range(shown):
            text, s = data["units"][j], data["scores"][m][j]
            rgb = diverging_rgb(s / v)
            tip = f"{text} · {m}: {s!r} · rank {data['ranks'][m][j]} / {n}"
            fg = ";color:#fff" if ink(rgb) == "#fff" else ""
            spans.append(f'<span title="{esc(tip)}" style="background:{hex_rgb(rgb)}{fg}">{esc(text)}</span>')
        others = ", ".join(o for o in self._scores if o != m)
        head = f"<b>{esc(self.title)}</b> · " if self.title else ""
        note = f" (also: {esc(others)})" if others else ""
        cut = f"; the first {shown} of {n} shown" if shown < n else ""
        return (
            '<div class="xth-root xth-static" style="font-family:monospace;line-height:1.8;white-space:pre-wrap">'
            f'<div style="font-family:sans-serif;font-size:12px">{head}method: {esc(m)}{note}; '
            f"colour limit ±{v:.4g} ({esc(self.normalize)}){cut}; static view</div>" + " ".join(spans) + "</div>"
        )
