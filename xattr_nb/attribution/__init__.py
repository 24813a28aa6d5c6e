"""Attribution: one ``attribute()`` over captum's methods and ours, returning :class:`Attribution`."""

from xattr_nb.attribution.result import KINDS, Attribution

__all__ = ["KINDS", "Attribution"]
