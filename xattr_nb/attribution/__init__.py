"""Attribution: one ``attribute()`` over captum's methods and ours, returning :class:`Attribution`.

``attribute(model, inputs, target, method=...)`` scores pixels, features or token ids;
``attribute_text(model, tokenizer, texts, target)`` scores the tokens of texts under a Hugging
Face classifier or causal LM; ``list_methods()`` lists every registered method, the paper
methods included whether or not their modules were imported (:mod:`~xattr_nb.attribution.registry`),
and ``register_method(...)`` adds one. :mod:`~xattr_nb.attribution.subsets` holds the
submodular subset searches (greedy, LiMA's bidirectional greedy) that region methods share,
:mod:`~xattr_nb.attribution.rise` registers RISE and :mod:`~xattr_nb.attribution.layers` the
layer methods (``layer_grad``, ``layer_grad_x_act``, ``layer_cam``, ``guided_backprop``).
"""

from xattr_nb.attribution.layers import guided_backprop, layer_cam, layer_grad, layer_grad_x_act
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
    "guided_backprop",
    "layer_cam",
    "layer_grad",
    "layer_grad_x_act",
    "list_methods",
    "ranking_to_attribution",
    "ranking_to_map",
    "register_method",
    "rise",
]
