"""Synthetic worlds with known ground truth, every generator seeded.

- :mod:`~xattr_nb.worlds.shapes`: ShapesWorld images (masks, parts, boxes, backgrounds, captions,
  class splits) and multi-object detection scenes;
- :mod:`~xattr_nb.worlds.grids`: DiFull/GridPG grids of distinct-class images;
- :mod:`~xattr_nb.worlds.digits`: sklearn digits with planted label noise;
- :mod:`~xattr_nb.worlds.text`: templated text tasks (IOI, key-value QA, topics) with gold spans;
- :mod:`~xattr_nb.worlds.facts`: grounded facts, source documents and a fused output with the gold clause of every fact.

Every generator returns a dataclass of tensors (a :class:`~xattr_nb.worlds.base.WorldData`) that
supports ``len``, :func:`subset`, :func:`split` and ``.to(device)``.
"""

from xattr_nb.worlds.base import WorldData, split, subset

__all__ = ["WorldData", "split", "subset"]
