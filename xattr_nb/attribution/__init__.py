"""Attribution: one ``attribute()`` over captum's methods and ours, returning :class:`Attribution`.

``attribute(model, inputs, target, method=...)`` scores pixels, features or token ids;
``attribute_text(model, tokenizer, texts, target)`` scores the tokens of texts under a Hugging
Face classifier or causal LM; ``list_methods()`` lists what is registered and
``register_method(...)`` adds a method.
"""

from xattr_nb.attribution.methods import attribute, list_methods, register_method
from xattr_nb.attribution.result import KINDS, Attribution
from xattr_nb.attribution.text import attribute_text

__all__ = ["KINDS", "Attribution", "attribute", "attribute_text", "list_methods", "register_method"]
