"""Attribution: one ``attribute()`` over captum's methods and ours, returning :class:`Attribution`.

``attribute(model, inputs, target, method=...)`` scores pixels, features or token ids;
``attribute_text(model, tokenizer, texts, target)`` scores the tokens of texts under a Hugging
Face classifier or causal LM; ``list_methods()`` lists what is registered and
``register_method(...)`` adds a method. :mod:`~xattr_nb.attribution.subsets` holds the
submodular subset searches (greedy, LiMA's bidirectional greedy) that region methods share, and
:mod:`~xattr_nb.attribution.rise` registers RISE.
"""

from xattr_nb.attribution.methods import attribute, list_methods, register_method
from xattr_nb.attribution.result import KINDS, Attribution
from xattr_nb.attribution.rise import drise, rise
from xattr_nb.attribution.subsets import (
    Ranking,
    SetScorer,
    bidirectional_greedy_search,
    greedy_search,
    ranking_to_attribution,
    ranking_to_map,
)
from xattr_nb.attribution.text import attribute_text

__all__ = [
    "KINDS",
    "Attribution",
    "Ranking",
    "SetScorer",
    "attribute",
    "attribute_text",
    "bidirectional_greedy_search",
    "drise",
    "greedy_search",
    "list_methods",
    "ranking_to_attribution",
    "ranking_to_map",
    "register_method",
    "rise",
]
