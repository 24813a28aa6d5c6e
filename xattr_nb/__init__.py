"""xattr-nb: tutorial notebooks and a thin library for attribution and interpretability.

Import the layers you need (``xattr_nb.worlds``, ``xattr_nb.models``, ``xattr_nb.attribution``,
...); this top-level module stays light so that ``xattr-nb list`` starts instantly.
"""

from xattr_nb.checks import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
