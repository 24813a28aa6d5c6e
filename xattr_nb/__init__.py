"""xattr-nb: tutorial notebooks and a thin library for attribution and interpretability.

Import the layers you need (``xattr_nb.worlds``, ``xattr_nb.models``, ``xattr_nb.attribution``,
...); this top-level module stays light so that ``xattr-nb list`` starts instantly.
"""

import os as _os

from xattr_nb.checks import InputError

if _os.environ.get("XATTR_NB_BLOCK_NETWORK", "") not in ("", "0"):  # the tests' offline guard
    import xattr_nb.offline  # noqa: F401

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
