"""Synthetic worlds with known ground truth, every generator seeded.

- :mod:`~xattr_nb.worlds.shapes`: ShapesWorld images (masks, parts, boxes, backgrounds, captions,
  class splits) and multi-object detection scenes;
- :mod:`~xattr_nb.worlds.grids`: DiFull/GridPG grids of distinct-class images;
- :mod:`~xattr_nb.worlds.digits`: sklearn digits with planted label noise;
- :mod:`~xattr_nb.worlds.noisy_labels`: symmetric/asymmetric label noise that reports what it flipped; noisy digits;
- :mod:`~xattr_nb.worlds.text`: templated text tasks (IOI, key-value QA, topics) with gold spans;
- :mod:`~xattr_nb.worlds.facts`: grounded facts, source documents and a fused output with the gold clause of every fact;
- :mod:`~xattr_nb.worlds.bias`: a corpus whose cues control how often a group gets a derogatory adjective;
- :mod:`~xattr_nb.worlds.spurious_text`: harmful/benign requests with a topic that agrees with the label in
  training and not in the shifted test;
- :mod:`~xattr_nb.worlds.shortcut_text`: topic texts with a per-class tag word that agrees with the label in
  training and points at the confusable sibling in the adversarial twin;
- :mod:`~xattr_nb.worlds.concepts`: a latent-concept generative model with exact posteriors;
- :mod:`~xattr_nb.worlds.multitask`: digit tasks under paraphrased instructions (frequent and rare).
- :mod:`~xattr_nb.worlds.generated_images`: real smooth images paired with fakes (a weak artifact in every patch,
  a strong one in one patch), an unseen generator and a masked split (AI-generated image detection).

Every generator returns a dataclass of tensors (a :class:`~xattr_nb.worlds.base.WorldData`) that
supports ``len``, :func:`subset`, :func:`split` and ``.to(device)``.
"""

from xattr_nb.worlds.base import WorldData, split, subset

__all__ = ["WorldData", "split", "subset"]
